"""The jitted reward kernels: known values, Python max/min semantics, and jit/vmap parity with
`compute` on the same inputs (they are usable from any JAX code on arrays)."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vcoach_jax import rewards
from vcoach_jax.rewards import accuracy, grounding, iou, packing, parsing
from vcoach_jax.rewards import targets as targets_lib

_VECTORS = pathlib.Path(__file__).parent / "data" / "rewards_public.jsonl"
CASES = [json.loads(line) for line in _VECTORS.read_text().splitlines() if line.strip()]


def test_box_iou_known_values():
  gt = jnp.array([[0., 0., 10., 10.]] * 5)
  pred = jnp.array([[0., 0., 10., 10.], [5., 0., 15., 10.], [20., 20., 30., 30.],
                    [10., 10., 0., 0.], [0., 0., 0., 10.]])
  np.testing.assert_allclose(iou.box_iou(gt, pred), [1.0, 50 / 150, 0.0, 0.0, 0.0])


def test_segment_iou_known_values():
  pred = jnp.array([[1., 3.], [2., 4.], [5., 5.], [0., 10.]])
  gt = jnp.array([[1., 3.], [1., 3.], [5., 5.], [2., 3.]])
  np.testing.assert_allclose(iou.segment_iou(pred, gt), [1.0, 1 / 3, 0.0, 0.1])


def test_fold_max_has_python_max_semantics():
  nan = float("nan")
  values = jnp.array([[nan, 2.0, 3.0], [1.0, nan, 0.5], [0.2, 0.1, 0.3]])
  mask = jnp.array([[True, True, True], [True, True, True], [False, True, False]])
  got, have = iou.fold_max(values, mask)
  assert np.isnan(got[0])  # max([nan, 2, 3]) is nan in Python
  assert got[1] == 1.0  # max([1, nan, 0.5]) is 1
  assert got[2] == pytest.approx(0.1) and bool(have.all())
  got, _ = iou.fold_max(values, mask, initial=0.0)
  assert got[0] == 3.0  # max(max(max(0, nan), 2), 3)


def test_sigma_curriculum():
  with jax.enable_x64(True):
    p = jnp.array([0.0, 0.5, 0.7499, 0.75, 1.0, 2.0])
    np.testing.assert_allclose(grounding.sigma(p), [4.0, 2.0, 1.0004, 1.0, 1.0, 1.0], atol=1e-12)


def _batch_for(cases, options):
  parsed = [parsing.parse_completion(c["completion"]) for c in cases]
  tgts = [targets_lib.prepare(c, i) for i, c in enumerate(cases)]
  batch, flags, _ = packing.pack(parsed, tgts, options, packing.Shapes())
  return batch, flags


@pytest.mark.parametrize("options_key", [0, 1, 2, 3])
def test_jit_vmap_kernels_equal_compute(options_key):
  by_options = {}
  for c in CASES:
    by_options.setdefault(json.dumps(c["options"], sort_keys=True), []).append(c)
  cases = sorted(by_options.items())[options_key][1]
  options = cases[0]["options"]
  expected = rewards.compute([c["completion"] for c in cases], cases, options)
  batch, flags = _batch_for(cases, options)
  n = len(cases)
  with jax.enable_x64(True):
    b = jax.tree.map(jnp.asarray, batch)
    claims_fn = jax.jit(jax.vmap(lambda c, f: grounding.spatial_claims_reward(
        c, f, correct_tempgate=options["correct_tempgate"],
        iou_avg=options["spatial_iou_mode"] == "avg",
        norm_matched=options["spatial_norm_mode"] == "matched")))
    st_reward, _ = claims_fn(b.claims, b.frames)
    vqa_reward, _ = jax.jit(jax.vmap(grounding.spatial_box_reward))(
        b.vqa_gt_kind, b.vqa_gt_box, b.think_box_kind, b.think_boxes)
    spatial = np.where(batch.spatial_active, st_reward, np.where(batch.vqa_active, vqa_reward, 0))
    point = jax.jit(jax.vmap(grounding.temporal_point_reward))(
        b.times, b.time_mask, b.frames.time, b.frames.valid, b.step_percent)
    segment = jax.jit(jax.vmap(grounding.temporal_segment_reward))(b.times, b.time_mask,
                                                                   b.segment)
    tiou = jax.jit(jax.vmap(accuracy.answer_tiou))(b.tiou_active, b.pred_segment, b.tiou_gt)
    viou = jax.jit(jax.vmap(accuracy.answer_viou))(
        b.viou_active, b.vqa_gt_kind, b.vqa_gt_box, b.viou_box_kind, b.viou_box)
  np.testing.assert_allclose(np.asarray(spatial)[:n], expected["thk_spatial"], atol=1e-9)
  np.testing.assert_allclose(np.where(batch.point_active, point, 0)[:n],
                             expected["thk_temporal_point"], atol=1e-9)
  np.testing.assert_allclose(np.where(batch.segment_active, segment, 0)[:n],
                             expected["thk_temporal_segment"], atol=1e-9)
  np.testing.assert_allclose(np.asarray(tiou)[:n], expected["ans_tiou"], atol=1e-9)
  np.testing.assert_allclose(np.asarray(viou)[:n], expected["ans_viou"], atol=1e-9)
  assert not flags.point_raised.any()


def test_kernels_run_in_float32_too():
  """Without x64 the kernels still run (float32) and agree to float32 precision."""
  cases = [c for c in CASES if c["task"] == "temporal-spatial free-form QA"][:40]
  options = cases[0]["options"]
  cases = [c for c in cases if c["options"] == options]
  batch, _ = _batch_for(cases, options)
  b = jax.tree.map(lambda x: jnp.asarray(x.astype(np.float32) if x.dtype == np.float64 else x),
                   batch)
  got, _ = jax.vmap(lambda c, f: grounding.spatial_claims_reward(
      c, f, correct_tempgate=options["correct_tempgate"],
      iou_avg=options["spatial_iou_mode"] == "avg",
      norm_matched=options["spatial_norm_mode"] == "matched"))(b.claims, b.frames)
  assert got.dtype == jnp.float32
  expected = rewards.compute([c["completion"] for c in cases], cases, options)["thk_spatial"]
  np.testing.assert_allclose(np.asarray(got)[:len(cases)], expected, atol=1e-4)


def test_overflow_of_default_shapes_does_not_change_results():
  case = next(c for c in CASES if c["task"] == "temporal-spatial free-form QA"
              and "<obj>" in c["completion"])
  claim_text = case["completion"].split("<think>")[1].split("</think>")[0]
  big = "<think>" + " ".join([claim_text] * 12) + "</think><answer>x</answer>"
  small = "<think>" + claim_text + "</think><answer>x</answer>"
  tiny = packing.Shapes(max_times=1, max_claims=1, max_boxes=1, max_key_frames=1,
                        max_objects=1, max_gt_boxes=1)
  for text in (big, small):
    ref, _ = rewards.compute_with_stats([text], [case], case["options"])
    got, stats = rewards.compute_with_stats([text], [case], case["options"], shapes=tiny)
    for name in rewards.REWARD_NAMES:
      assert got[name][0] == pytest.approx(ref[name][0], abs=1e-12)
  assert stats.grown  # the tiny shapes had to grow


def test_config_shapes_equal_packing_defaults():
  from vcoach_jax import config
  assert packing.Shapes.from_config(config.default_config().rewards) == packing.Shapes()
