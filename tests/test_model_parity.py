"""fp32 logits parity of vcoach_jax's Qwen2.5-VL with transformers on tiny random models."""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import qwen_testutil as qt  # noqa: E402
from vcoach_jax import model as vm  # noqa: E402
from vcoach_jax.model.rope import mrope_positions  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  """(transformers model, vcoach_jax model loaded from its save_pretrained folder).

  Vision: 3 blocks with full attention in blocks 0 and 2, window 56 px = 2x2 merged units."""
  hf = qt.hf_model(seed=0)
  path = tmp_path_factory.mktemp("tiny")
  hf.save_pretrained(path)
  return hf, vm.load_hf(path)


def _check(pair, inputs):
  hf, jm = pair
  ref = qt.torch_logits(hf, inputs)
  out = np.asarray(vm.logits(jm, inputs))
  assert out.shape == ref.shape
  valid = inputs["attention_mask"].astype(bool)
  diff = np.abs(out - ref)[valid].max()
  assert diff <= TOL, diff
  assert np.abs(ref[valid]).max() > 0.5  # the comparison is not between near-zero logits


def test_text_only_left_padded(pair):
  rng = np.random.default_rng(1)
  _check(pair, qt.make_inputs([qt.text_row(rng, 11), qt.text_row(rng, 5)]))


def test_one_image(pair):
  rng = np.random.default_rng(2)
  grid = (1, 6, 8)  # 3x4 merged units: the 2x2 windows do not divide the grid
  row = qt.text_row(rng, 4) + qt.vision_run(qt.IMAGE, grid) + qt.text_row(rng, 6)
  _check(pair, qt.make_inputs([row], images=[grid]))


def test_one_video(pair):
  rng = np.random.default_rng(3)
  grid = (3, 4, 4)
  row = qt.text_row(rng, 3) + qt.vision_run(qt.VIDEO, grid) + qt.text_row(rng, 5)
  _check(pair, qt.make_inputs([row], videos=[grid], seconds=[1.0]))


def _mixed_batch():
  rng = np.random.default_rng(4)
  g_img, g_v1, g_v2 = (1, 4, 6), (2, 4, 4), (3, 6, 6)
  rows = [
      qt.text_row(rng, 3) + qt.vision_run(qt.IMAGE, g_img) + qt.text_row(rng, 4)
      + qt.vision_run(qt.VIDEO, g_v1) + qt.text_row(rng, 2),
      qt.text_row(rng, 2) + qt.vision_run(qt.VIDEO, g_v2) + qt.text_row(rng, 3),
  ]
  return qt.make_inputs(rows, images=[g_img], videos=[g_v1, g_v2], seconds=[0.5, 1.7])


def test_mixed_left_padded_batch(pair):
  """Row 0: image then video; row 1 (shorter, left-padded): another video of another grid;
  second_per_grid_ts != 1 so video time ids are scaled."""
  inputs = _mixed_batch()
  assert inputs["attention_mask"].min() == 0  # really padded
  _check(pair, inputs)


def test_chunked_attention_model_matches_transformers(pair, tmp_path):
  """attention_impl="chunked" with blocks of 8 queries: text rows (53 tokens) and the vision
  segments (frames of 24 and 36 patches) both split into several blocks, the last one padded."""
  hf, _ = pair
  hf.save_pretrained(tmp_path)
  chunked = vm.load_hf(tmp_path, attention_impl="chunked", attention_chunk=8)
  _check((hf, chunked), _mixed_batch())


def test_rope_index_matches_transformers(pair):
  hf, jm = pair
  rng = np.random.default_rng(5)
  g_img, g_v1, g_v2 = (1, 4, 4), (2, 6, 4), (4, 4, 6)
  rows = [
      qt.text_row(rng, 2) + qt.vision_run(qt.VIDEO, g_v1) + qt.text_row(rng, 1)
      + qt.vision_run(qt.IMAGE, g_img) + qt.text_row(rng, 3),
      qt.text_row(rng, 1) + qt.vision_run(qt.VIDEO, g_v2),
      qt.text_row(rng, 4),
  ]
  inputs = qt.make_inputs(rows, images=[g_img], videos=[g_v1, g_v2], seconds=[0.25, 3.3])
  ref_pos, ref_delta = hf.get_rope_index(
      torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["image_grid_thw"]),
      torch.from_numpy(inputs["video_grid_thw"]), torch.from_numpy(inputs["second_per_grid_ts"]),
      torch.from_numpy(inputs["attention_mask"]))
  got = mrope_positions(jm.config, inputs["input_ids"], inputs["attention_mask"],
                        inputs["image_grid_thw"], inputs["video_grid_thw"],
                        inputs["second_per_grid_ts"])
  np.testing.assert_array_equal(got.positions, ref_pos.numpy())
  np.testing.assert_array_equal(got.deltas, ref_delta.numpy()[:, 0])


def test_token_feature_mismatch_is_an_error(pair):
  _, jm = pair
  rng = np.random.default_rng(6)
  grid = (1, 4, 4)
  row = qt.text_row(rng, 2) + qt.vision_run(qt.IMAGE, grid)[:-2]  # one image token short
  with pytest.raises(ValueError, match="image features and image tokens do not match"):
    vm.logits(jm, qt.make_inputs([row], images=[grid]))
