"""Fixed-shape batches (`model.batching`) give the same logits as the processor's ragged dict."""

from __future__ import annotations

import functools
import os

os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

import qwen_testutil as qt  # noqa: E402
from vcoach_jax import model as vm  # noqa: E402
from vcoach_jax.model import batching  # noqa: E402

MAX_PATCHES, MAX_IMAGES = 96, 3


@pytest.fixture(scope="module")
def model():
  return vm.Qwen2_5_VL(vm.ModelConfig.tiny(), rngs=nnx.Rngs(7))


def _rows(seed=0):
  """Three prompts: two images, none, one image (grids in patches)."""
  rng = np.random.default_rng(seed)
  grids = [[(1, 4, 4), (1, 2, 6)], [], [(1, 6, 4)]]
  rows = []
  for g in grids:
    r = qt.text_row(rng, 3)
    for grid in g:
      r += qt.vision_run(qt.IMAGE, grid) + qt.text_row(rng, 2)
    rows.append(r)
  return rows, grids


def _padded(rows, grids, seed=0):
  """The ragged processor dict and the fixed-shape host arrays (`data.pipeline.collate` layout)."""
  flat = [g for gs in grids for g in gs]
  ragged = qt.make_inputs(rows, images=flat, seed=seed)
  b, t = ragged["input_ids"].shape
  arrays = {k: ragged[k] for k in ("input_ids", "attention_mask")}
  arrays["pixel_values"] = np.zeros((b, MAX_PATCHES, qt.PATCH_DIM), np.float32)
  arrays["image_grid_thw"] = np.zeros((b, MAX_IMAGES, 3), np.int32)
  arrays["num_images"] = np.array([len(g) for g in grids], np.int32)
  arrays["num_patches"] = np.array([int(np.prod(g, -1).sum()) if g else 0 for g in grids])
  at = 0
  for i, g in enumerate(grids):
    n = arrays["num_patches"][i]
    arrays["pixel_values"][i, :n] = ragged["pixel_values"][at:at + n]
    if g:
      arrays["image_grid_thw"][i, :len(g)] = g
    at += n
  return ragged, arrays


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, inputs):
  return nnx.merge(graphdef, state)(inputs)[0]


def _forward(model, inputs):
  """The logits of `inputs` (ModelInputs), jitted as the trainers run the model (one compilation
  per batch shape, not one per operation)."""
  graphdef, state = nnx.split(model)
  return np.asarray(_logits(graphdef, state, jax.tree.map(jnp.asarray, inputs)))


def test_batch_inputs_match_processor_dict(model):
  rows, grids = _rows()
  ragged, arrays = _padded(rows, grids)
  want = np.asarray(vm.logits(model, ragged))
  inputs = batching.batch_inputs(model.config, arrays)
  assert inputs.pixels.shape == (3 * MAX_PATCHES, qt.PATCH_DIM)
  for seg in (inputs.windows, inputs.frames):
    k, s, l = seg.gather.shape
    assert k == 3  # one block per row
    assert s & (s - 1) == 0 and l & (l - 1) == 0  # padded to powers of two
    # every segment's patches lie in its own row's block
    assert seg.gather.max() < MAX_PATCHES and seg.inverse.shape == (3, MAX_PATCHES)
  got = _forward(model, inputs)
  valid = ragged["attention_mask"].astype(bool)
  assert np.abs(got - want)[valid].max() <= 1e-5


def test_repeat_and_append_match_explicit_sequences(model):
  rows, grids = _rows(2)
  g, n = 2, 4
  rng = np.random.default_rng(5)
  completions = rng.integers(1, 400, size=(len(rows) * g, n))
  cmask = np.ones_like(completions)
  cmask[1, 2:] = 0  # a completion that ended early
  _, arrays = _padded(rows, grids, seed=4)
  inputs = batching.batch_inputs(model.config, arrays)
  full = batching.append_tokens(batching.repeat_rows(inputs, g), jnp.asarray(completions),
                                jnp.asarray(cmask))
  got = _forward(model, full)
  # The same sequences written out explicitly: each prompt repeated, completion appended.
  rep_rows = [rows[i // g] + completions[i][cmask[i] == 1].tolist() for i in range(len(rows) * g)]
  rep_grids = [grids[i // g] for i in range(len(rows) * g)]
  ragged = qt.make_inputs(rep_rows, images=[x for gs in rep_grids for x in gs], seed=0)
  # Pixels: each copy sees its prompt's pixels.
  ragged["pixel_values"] = np.concatenate(
      [arrays["pixel_values"][i // g, :arrays["num_patches"][i // g]]
       for i in range(len(rows) * g)])
  want = np.asarray(vm.logits(model, ragged))
  t_full, t_prompt = got.shape[1], arrays["input_ids"].shape[1]
  for i in range(len(rows) * g):
    p_len = int(arrays["attention_mask"][i // g].sum())
    n_real = int(cmask[i].sum())
    got_i = got[i, t_prompt - p_len:t_prompt + n_real]
    want_i = want[i, want.shape[1] - p_len - n_real:]
    assert np.abs(got_i - want_i).max() <= 1e-5, i
  assert t_full == t_prompt + n


def test_split_inputs_gives_each_block_the_logits_of_its_rows(model):
  """Four rows (images in rows 0, 2, 3) cut into 2 micro-batches: each part's logits are the
  whole batch's rows, and so are those of the parts merged back into one batch; a layout whose patches are not in per-row blocks is refused."""
  rows, grids = _rows()
  rows, grids = rows + [rows[0]], grids + [grids[0]]
  _, arrays = _padded(rows, grids)
  inputs = batching.batch_inputs(model.config, arrays)
  whole = _forward(model, inputs)
  parts = batching.split_inputs(inputs, 2)
  assert [p.input_ids.shape[0] for p in parts] == [2, 2]
  for j, part in enumerate(parts):
    assert part.pixels.shape == (2 * MAX_PATCHES, qt.PATCH_DIM)
    valid = part.attention_mask
    got = _forward(model, part)
    assert np.abs(got - whole[2 * j:2 * j + 2])[valid].max() <= 1e-5
  # Stacked (segment tables padded to the larger part's) and merged back in the jit: one
  # forward of all rows gives the whole batch's logits (`rl.prompt_once`).
  from vcoach_jax.rl.update import stack_microbatches  # pylint: disable=g-import-not-at-top
  merged = jax.jit(batching.merge_microbatches)(stack_microbatches(parts))
  assert merged.input_ids.shape == inputs.input_ids.shape
  valid = np.asarray(inputs.attention_mask)
  assert np.abs(_forward(model, merged) - whole)[valid].max() <= 1e-5
  with pytest.raises(ValueError, match="do not split into 3"):
    batching.split_inputs(inputs, 3)
  moved = inputs._replace(vision_slots=np.roll(inputs.vision_slots, len(inputs.vision_slots) // 2))
  with pytest.raises(ValueError, match="per-row blocks"):
    batching.split_inputs(moved, 2)
