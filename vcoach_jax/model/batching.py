"""Fixed-shape model inputs for jitted code: host batches in, rows repeated, completions appended.

The data pipeline pads every example to fixed shapes (`data.pipeline.HostBatch.arrays`: ids
`[B, P]`, pixels `[B, max_patches, D]`, grids `[B, max_images, 3]`); `batch_inputs` turns those
into `ModelInputs` whose array shapes depend only on the buckets, so the sampler and the train
step compile a handful of programs, not one per batch:

  * pixels stay in place (`[B * max_patches, D]`, row b's patches first in its block); padding
    patches are grouped into dummy attention segments, and their merged tokens have an
    out-of-range vision slot, so the model's scatter drops them;
  * the attention segment tables are padded to powers of two (segments and slots).

`split_inputs` cuts a host batch into micro-batches of consecutive rows (gradient
accumulation). `repeat_rows` (G rollouts of one prompt: the vision tower still runs once per prompt, its
features are scattered into G rows) and `append_tokens` (prompt + completion, for the
teacher-forced forward of the loss) are traceable `ModelInputs -> ModelInputs` maps.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from vcoach_jax.model.config import ModelConfig
from vcoach_jax.model.qwen2_5_vl import ModelInputs
from vcoach_jax.model.rope import mrope_positions
from vcoach_jax.model.vision import Segments, segments_from_ids, vision_aux
from vcoach_jax.shapes import pow2


def pad_segments(seg: Segments, num_segments: int, length: int) -> Segments:
  """Pads a segment table to `[num_segments, length]` (more empty segments / slots)."""
  s, l = seg.gather.shape
  if s > num_segments or l > length:
    raise ValueError(f"segment table {seg.gather.shape} exceeds ({num_segments}, {length})")
  gather = np.zeros((num_segments, length), np.int32)
  valid = np.zeros((num_segments, length), bool)
  gather[:s, :l], valid[:s, :l] = seg.gather, seg.valid
  inverse = (seg.inverse // l) * length + seg.inverse % l
  return Segments(gather, valid, inverse.astype(np.int32))


def _segment_ids(seg: Segments) -> np.ndarray:
  return seg.inverse // seg.gather.shape[1]


def _full_segments(real: Segments, real_at: np.ndarray, n: int) -> Segments:
  """Segments over all `n` patch slots: real patches (at `real_at`) keep their segment; padding
  patches form dummy segments no longer than the longest real one; both sizes padded to 2^k."""
  ids = np.empty((n,), np.int64)
  real_ids = _segment_ids(real)
  chunk = real.gather.shape[1]
  ids[real_at] = real_ids
  pad_at = np.setdiff1d(np.arange(n), real_at, assume_unique=True)
  ids[pad_at] = real_ids.max() + 1 + np.arange(len(pad_at)) // chunk
  seg = segments_from_ids(ids)
  return pad_segments(seg, pow2(seg.gather.shape[0]), pow2(seg.gather.shape[1]))


def batch_inputs(cfg: ModelConfig, arrays: Mapping[str, Any]) -> ModelInputs:
  """`ModelInputs` (numpy, fixed shapes) of a padded host batch.

  Args:
    cfg: the model config (token ids, vision geometry).
    arrays: `input_ids`, `attention_mask` `[B, P]` (left padded); for vision inputs also
      `pixel_values [B, max_patches, D]`, `image_grid_thw [B, max_images, 3]`, `num_images [B]`,
      `num_patches [B]` (the layout of `data.pipeline.collate`). Every image of row b is one run
      of image tokens in that row, in order.
  """
  ids = np.asarray(arrays["input_ids"]).astype(np.int32)
  mask = np.asarray(arrays["attention_mask"]).astype(np.int32)
  b, t = ids.shape
  num_patches = np.asarray(arrays.get("num_patches", np.zeros((b,), np.int32)))
  if not num_patches.any():
    rope = mrope_positions(cfg, ids, mask)
    return ModelInputs(ids, mask.astype(bool), rope.positions, rope.deltas)
  num_images = np.asarray(arrays["num_images"])
  pixels = np.asarray(arrays["pixel_values"], np.float32)
  grids_in = np.asarray(arrays["image_grid_thw"])
  max_patches, unit = pixels.shape[1], cfg.vision.merge_unit
  if max_patches % unit:
    raise ValueError(f"max_patches {max_patches} is not a multiple of the merge unit {unit}")
  grids, real_at, slots = [], [], np.full((b * max_patches // unit,), b * t, np.int32)
  for i in range(b):
    g = grids_in[i, :num_images[i]]
    n = int(np.prod(g, axis=-1).sum()) if len(g) else 0
    if n != num_patches[i]:
      raise ValueError(f"row {i}: image grids {g.tolist()} hold {n} patches, num_patches says "
                       f"{int(num_patches[i])}")
    where = np.nonzero((ids[i] == cfg.image_token_id) & (mask[i] == 1))[0]
    if len(where) * unit != n:
      raise ValueError(f"row {i}: {len(where)} image tokens for {n} patches (merge unit {unit})")
    grids.append(g)
    real_at.append(i * max_patches + np.arange(n))
    start = i * max_patches // unit
    slots[start:start + len(where)] = i * t + where
  grids = np.concatenate(grids).astype(np.int64)
  real_at = np.concatenate(real_at)
  total = b * max_patches
  aux = vision_aux(cfg.vision, grids)
  rotary = np.zeros((total, 2), np.int32)
  rotary[real_at] = aux.rotary_ids
  rope = mrope_positions(cfg, ids, mask, image_grid_thw=grids)
  return ModelInputs(
      input_ids=ids, attention_mask=mask.astype(bool), positions=rope.positions,
      rope_deltas=rope.deltas, pixels=pixels.reshape(total, -1), rotary_ids=rotary,
      windows=_full_segments(aux.windows, real_at, total),
      frames=_full_segments(aux.frames, real_at, total), vision_slots=slots)


def _move_slots(slots, old_len: int, new_len: int, rows: int, new_rows: int, copy: int = 0,
                copies: int = 1):
  """Vision slot `r * old_len + c` -> `(r * copies + copy) * new_len + c`; out-of-range slots
  (padding) stay out of range."""
  r, c = slots // old_len, slots % old_len
  moved = (r * copies + copy) * new_len + c
  return jnp.where(slots < rows * old_len, moved, new_rows * new_len)


def repeat_rows(inputs: ModelInputs, g: int) -> ModelInputs:
  """Row b -> rows b*g .. b*g+g-1 (each prompt's G rollouts). Vision features are computed once
  and scattered into every copy (`vision_slots` gains a leading axis of size g)."""
  if g == 1:
    return inputs
  b, t = inputs.input_ids.shape
  rep = lambda x: jnp.repeat(x, g, axis=0)  # noqa: E731
  out = inputs._replace(input_ids=rep(inputs.input_ids),
                        attention_mask=rep(inputs.attention_mask),
                        positions=jnp.repeat(inputs.positions, g, axis=1),
                        rope_deltas=rep(inputs.rope_deltas))
  if inputs.vision_slots is None:
    return out
  slots = jnp.stack([_move_slots(inputs.vision_slots, t, t, b, b * g, j, g) for j in range(g)])
  return out._replace(vision_slots=slots)


def append_tokens(inputs: ModelInputs, tokens, mask) -> ModelInputs:
  """Prompt rows + completion tokens `[B, N]` (mask `[B, N]`, 0 after the end) as one sequence;
  the completion's position ids continue the prompt's (`slot + rope_deltas`, as in decoding)."""
  b, t = inputs.input_ids.shape
  n = tokens.shape[1]
  pos = (t + jnp.arange(n, dtype=jnp.int32))[None, :] + inputs.rope_deltas[:, None]
  positions = jnp.concatenate(
      [inputs.positions, jnp.broadcast_to(pos[None], (3, b, n)).astype(inputs.positions.dtype)],
      axis=2)
  out = inputs._replace(
      input_ids=jnp.concatenate([inputs.input_ids, tokens.astype(inputs.input_ids.dtype)], 1),
      attention_mask=jnp.concatenate([inputs.attention_mask, mask.astype(bool)], 1),
      positions=positions)
  if inputs.vision_slots is None:
    return out
  return out._replace(vision_slots=_move_slots(inputs.vision_slots, t, t + n, b, b))


def _block_segments(seg: Segments, lo: int, hi: int) -> Segments:
  """The segments of patches `lo .. hi-1` alone (renumbered; sizes padded to 2^k)."""
  _, ids = np.unique(_segment_ids(Segments(*map(np.asarray, seg)))[lo:hi], return_inverse=True)
  sub = segments_from_ids(ids.reshape(-1))
  return pad_segments(sub, pow2(sub.gather.shape[0]), pow2(sub.gather.shape[1]))


def split_inputs(inputs: ModelInputs, k: int) -> list[ModelInputs]:
  """Host: a batch of B rows -> k batches of B/k consecutive rows (gradient accumulation).

  Token arrays split by rows. Vision patches split into k equal blocks, which must hold the
  patches of their own rows only: the `batch_inputs` layout (each row's patches in its own block
  of `max_patches`), or any batch whose rows have equal patch counts in row order. Each block's
  segment tables are rebuilt for its patches alone and its vision slots moved to its rows.
  """
  ids = np.asarray(inputs.input_ids)
  b, t = ids.shape
  if k < 1 or b % k:
    raise ValueError(f"{b} rows do not split into {k} micro-batches")
  r = b // k
  split = lambda x, axis=0: np.split(np.asarray(x), k, axis=axis)  # noqa: E731
  out = [ModelInputs(*f) for f in zip(split(ids), split(inputs.attention_mask),
                                      split(inputs.positions, 1), split(inputs.rope_deltas))]
  if inputs.pixels is None:
    return out
  pixels, rotary = np.asarray(inputs.pixels), np.asarray(inputs.rotary_ids)
  slots = np.asarray(inputs.vision_slots)
  n, m = pixels.shape[0], slots.shape[0]
  if slots.ndim != 1 or n % m or m % k:
    raise ValueError(f"vision slots {slots.shape} for {n} patches do not split into {k} "
                     "equal blocks")
  unit, per = n // m, m // k  # patches per merged token, merged tokens per block
  row = np.where(slots < b * t, slots // t, -1)
  wrong = (row >= 0) & (row // r != np.arange(m) // per)
  if wrong.any():
    raise ValueError(f"the patches of row {int(row[wrong][0])} lie outside its micro-batch's "
                     f"block: with {k} micro-batches the vision patches must be laid out in "
                     "per-row blocks (batching.batch_inputs)")
  for j in range(k):
    lo, hi = j * per * unit, (j + 1) * per * unit
    s = slots[j * per:(j + 1) * per]
    out[j] = out[j]._replace(
        pixels=pixels[lo:hi], rotary_ids=rotary[lo:hi],
        windows=_block_segments(inputs.windows, lo, hi),
        frames=_block_segments(inputs.frames, lo, hi),
        vision_slots=np.where(s < b * t, s - j * r * t, r * t).astype(np.int32))
  return out


def merge_microbatches(stacked: ModelInputs) -> ModelInputs:
  """Traceable inverse of `split_inputs` + `update.stack_microbatches`: `ModelInputs` with a
  leading micro-batch axis k (`[k, r, T]` ids, `[k, n, D]` patches, `[k, S, L]` segment tables)
  -> one batch of k*r rows whose patches are the k blocks in order. Segment ids, gather indices
  and vision slots move by each block's offset; out-of-range slots (padding) stay out of
  range. Lets a step run the prompts of all its micro-batches in one forward."""
  k, r, t = stacked.input_ids.shape
  flat = lambda x: x.reshape((k * x.shape[1],) + x.shape[2:])  # noqa: E731
  out = ModelInputs(input_ids=flat(stacked.input_ids),
                    attention_mask=flat(stacked.attention_mask),
                    positions=jnp.moveaxis(stacked.positions, 0, 1).reshape(3, k * r, t),
                    rope_deltas=flat(stacked.rope_deltas))
  if stacked.pixels is None:
    return out
  n = stacked.pixels.shape[1]
  block = jnp.arange(k, dtype=jnp.int32)

  def segments(seg: Segments) -> Segments:
    s, l = seg.gather.shape[1:]
    return Segments(gather=flat(seg.gather + (block * n)[:, None, None]), valid=flat(seg.valid),
                    inverse=flat(seg.inverse + (block * s * l)[:, None]))
  slots = stacked.vision_slots
  slots = jnp.where(slots < r * t, slots + (block * r * t)[:, None], k * r * t)
  return out._replace(pixels=flat(stacked.pixels), rotary_ids=flat(stacked.rotary_ids),
                      windows=segments(stacked.windows), frames=segments(stacked.frames),
                      vision_slots=flat(slots).astype(jnp.int32))
