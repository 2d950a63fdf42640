"""Fixed-shape model inputs for jitted code: host batches in, rows repeated, completions appended.

The data pipeline pads every example to fixed shapes (`data.pipeline.HostBatch.arrays`: ids
`[B, P]`, pixels `[B, max_patches, D]`, grids `[B, max_images, 3]`); `batch_inputs` turns those
into `ModelInputs` whose array shapes depend only on the buckets, so the sampler and the train
step compile a handful of programs, not one per batch:

  * pixels stay in place (`[B * max_patches, D]`, row b's patches first in its block); each
    row's block is one block of the vision tower (its segment tables `[B, S, L]` index the
    row's own patches, so attention never leaves a row: rows split over devices run their
    vision without moving activations); padding patches are grouped into dummy attention
    segments, and their merged tokens have an out-of-range vision slot, so the model's scatter
    drops them;
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
  """Pads segment tables `[..., S, L]` to `[..., num_segments, length]` (more empty segments /
  slots)."""
  seg = Segments(*map(np.asarray, seg))
  *lead, s, l = seg.gather.shape
  if s > num_segments or l > length:
    raise ValueError(f"segment table {seg.gather.shape} exceeds ({num_segments}, {length})")
  gather = np.zeros((*lead, num_segments, length), np.int32)
  valid = np.zeros((*lead, num_segments, length), bool)
  gather[..., :s, :l], valid[..., :s, :l] = seg.gather, seg.valid
  inverse = (seg.inverse // l) * length + seg.inverse % l
  return Segments(gather, valid, inverse.astype(np.int32))


def _segment_ids(seg: Segments) -> np.ndarray:
  return seg.inverse // seg.gather.shape[-1]


def _block_segments(real: Segments | None, n: int, chunk: int) -> Segments:
  """One block's segments over its `n` patch slots: its first patches are the real ones (`real`,
  one block's tables, or None: no image) and keep their segments; the padding patches after
  them form dummy segments of `chunk` patches."""
  real_ids = np.zeros((0,), np.int64) if real is None else _segment_ids(real)
  pad = n - len(real_ids)
  first = int(real_ids.max()) + 1 if len(real_ids) else 0
  return segments_from_ids(np.concatenate([real_ids, first + np.arange(pad) // chunk]))


def stack_blocks(blocks: list[Segments]) -> Segments:
  """Per-block tables (`[S_i, L_i]`, `[P]`) -> `[K, S, L]`, `[K, P]` (sizes padded to 2^k)."""
  s = pow2(max(b.gather.shape[0] for b in blocks))
  l = pow2(max(b.gather.shape[1] for b in blocks))
  return Segments(*(np.stack(x) for x in zip(*(pad_segments(b, s, l) for b in blocks))))


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
  rotary = np.zeros((b, max_patches, 2), np.int32)
  windows, frames = [], []
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
    start = i * max_patches // unit
    slots[start:start + len(where)] = i * t + where
    aux = vision_aux(cfg.vision, g) if n else None
    if n:
      rotary[i, :n] = aux.rotary_ids
    windows.append(None if aux is None else Segments(*(x[0] for x in aux.windows)))
    frames.append(None if aux is None else Segments(*(x[0] for x in aux.frames)))
  grids = np.concatenate(grids).astype(np.int64)
  rope = mrope_positions(cfg, ids, mask, image_grid_thw=grids)

  def blocks(real: list[Segments | None]) -> Segments:
    # padding patches in segments no longer than the longest real one
    chunk = max(x.gather.shape[1] for x in real if x is not None)
    return stack_blocks([_block_segments(x, max_patches, chunk) for x in real])
  return ModelInputs(
      input_ids=ids, attention_mask=mask.astype(bool), positions=rope.positions,
      rope_deltas=rope.deltas, pixels=pixels.reshape(b * max_patches, -1),
      rotary_ids=rotary.reshape(b * max_patches, 2), windows=blocks(windows),
      frames=blocks(frames), vision_slots=slots)


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


def _cut_block(seg: Segments, k: int) -> Segments:
  """One block's tables -> k blocks of its consecutive patches (rebuilt: renumbered, padded to
  2^k); refused if a segment crosses a cut."""
  ids = _segment_ids(Segments(*(np.asarray(x)[0] for x in seg)))
  parts = np.split(ids, k)
  if len(set().union(*[set(np.unique(p).tolist()) for p in parts])) != sum(
      len(np.unique(p)) for p in parts):
    raise ValueError(f"an attention segment crosses the cut into {k} micro-batches: the vision "
                     "patches must be laid out in per-row blocks (batching.batch_inputs)")
  return stack_blocks([segments_from_ids(np.unique(p, return_inverse=True)[1].reshape(-1))
                       for p in parts])


def split_inputs(inputs: ModelInputs, k: int) -> list[ModelInputs]:
  """Host: a batch of B rows -> k batches of B/k consecutive rows (gradient accumulation).

  Token arrays split by rows. Vision patches split by their blocks (the segment tables' leading
  axis) into k equal parts, which must hold the patches of their own rows only: the
  `batch_inputs` layout (each row's patches in its own block of `max_patches`), or one block
  whose rows have equal patch counts in row order (cut into k blocks, their tables rebuilt).
  Each part keeps its blocks' tables, and its vision slots move to its rows.
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
  slots = np.asarray(inputs.vision_slots)
  n, m = np.asarray(inputs.pixels).shape[0], slots.shape[0]
  if np.asarray(inputs.windows.gather).shape[0] == 1 and k > 1 and not n % k:
    inputs = inputs._replace(windows=_cut_block(inputs.windows, k),
                             frames=_cut_block(inputs.frames, k))
  blocks = np.asarray(inputs.windows.gather).shape[0]
  if slots.ndim != 1 or n % m or blocks % k or m % blocks:
    raise ValueError(f"vision slots {slots.shape} for {n} patches in {blocks} blocks do not "
                     f"split into {k} micro-batches: with {k} micro-batches the vision patches "
                     "must be laid out in per-row blocks (batching.batch_inputs)")
  per = m // k  # merged tokens per part
  row = np.where(slots < b * t, slots // t, -1)
  wrong = (row >= 0) & (row // r != np.arange(m) // per)
  if wrong.any():
    raise ValueError(f"the patches of row {int(row[wrong][0])} lie outside its micro-batch's "
                     "block: with {k} micro-batches the vision patches must be laid out in "
                     "per-row blocks (batching.batch_inputs)")
  pixels, rotary = split(inputs.pixels), split(inputs.rotary_ids)
  windows = [Segments(*p) for p in zip(*(split(x) for x in inputs.windows))]
  frames = [Segments(*p) for p in zip(*(split(x) for x in inputs.frames))]
  for j in range(k):
    s = slots[j * per:(j + 1) * per]
    out[j] = out[j]._replace(
        pixels=pixels[j], rotary_ids=rotary[j], windows=windows[j], frames=frames[j],
        vision_slots=np.where(s < b * t, s - j * r * t, r * t).astype(np.int32))
  return out


def merge_microbatches(stacked: ModelInputs) -> ModelInputs:
  """Traceable inverse of `split_inputs` + `update.stack_microbatches`: `ModelInputs` with a
  leading micro-batch axis k (`[k, r, T]` ids, `[k, n, D]` patches, `[k, K, S, L]` segment
  tables) -> one batch of k*r rows whose patches are the k parts' blocks in order. The tables
  index within their blocks and stay as they are; vision slots move by each part's offset;
  out-of-range slots (padding) stay out of range. Lets a step run the prompts of all its
  micro-batches in one forward."""
  k, r, t = stacked.input_ids.shape
  flat = lambda x: x.reshape((k * x.shape[1],) + x.shape[2:])  # noqa: E731
  out = ModelInputs(input_ids=flat(stacked.input_ids),
                    attention_mask=flat(stacked.attention_mask),
                    positions=jnp.moveaxis(stacked.positions, 0, 1).reshape(3, k * r, t),
                    rope_deltas=flat(stacked.rope_deltas))
  if stacked.pixels is None:
    return out
  block = jnp.arange(k, dtype=jnp.int32)
  segments = lambda seg: Segments(*map(flat, seg))  # noqa: E731
  slots = stacked.vision_slots
  slots = jnp.where(slots < r * t, slots + (block * r * t)[:, None], k * r * t)
  return out._replace(pixels=flat(stacked.pixels), rotary_ids=flat(stacked.rotary_ids),
                      windows=segments(stacked.windows), frames=segments(stacked.frames),
                      vision_slots=flat(slots).astype(jnp.int32))
