"""Host-side padding of `ModelInputs` to bucket shapes, so the sampler compiles once per bucket.

A batch of B left-padded prompts of length T with N vision patches becomes

  rows     B -> the smallest batch bucket >= B      (dummy rows: all padding, never sampled)
  length   T -> the smallest prompt bucket >= T (the run's `data.prompt_buckets`), else the
              next power of two (at least 16) (more left padding)
  patches  N -> the next power of two               (one block of patches, a single example's:
                                                     zero patches in their own attention
                                                     segments; their merged tokens have an
                                                     out-of-range vision slot, so they are
                                                     dropped; per-row blocks stay as they are)
  segment tables -> powers of two (`batching.pad_segments`)

Everything here is numpy: it runs before the jitted program, on shapes that only depend on the
buckets. Position ids stay correct under extra left padding because decoding uses
`slot + rope_deltas`: `rope_deltas` shrinks by the number of added slots.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vcoach_jax.model.batching import pad_segments
from vcoach_jax.model.qwen2_5_vl import ModelInputs
from vcoach_jax.model.vision import Segments
from vcoach_jax.shapes import pow2

MIN_PROMPT_BUCKET = 16


def batch_bucket(rows: int, buckets: Sequence[int]) -> int:
  """Smallest bucket >= rows; above the largest bucket, the next multiple of it."""
  buckets = sorted(buckets)
  for b in buckets:
    if b >= rows:
      return b
  return -(-rows // buckets[-1]) * buckets[-1]


def prompt_bucket(length: int, buckets: Sequence[int] = ()) -> int:
  """The smallest of `buckets` >= length (a run's `data.prompt_buckets`: a batch the input
  pipeline already padded to one keeps its length); without one, the next power of two (at
  least 16)."""
  fits = [b for b in buckets if b >= length]
  return min(fits) if fits else max(MIN_PROMPT_BUCKET, pow2(length))


def _pad_segment_table(seg: Segments, n_old: int, n_new: int) -> Segments:
  """One block's tables (the leading block axis of size 1): appends patches n_old..n_new-1 as
  new segments as wide as the table, then pads the table to powers of two."""
  gather, valid, inverse = (np.asarray(x)[0] for x in seg)
  s, width = gather.shape
  extra = n_new - n_old
  if extra:
    k = -(-extra // width)
    new = n_old + np.arange(k * width).reshape(k, width)
    gather = np.concatenate([gather, np.minimum(new, n_new - 1).astype(np.int32)])
    valid = np.concatenate([valid, new < n_new])
    inverse = np.concatenate([inverse, (s * width + np.arange(extra)).astype(np.int32)])
  seg = pad_segments(Segments(gather, valid, inverse), pow2(gather.shape[0]), pow2(width))
  return Segments(*(x[None] for x in seg))


def pad_inputs(inputs: ModelInputs, rows: int, length: int, pad_id: int) -> ModelInputs:
  """`inputs` (numpy, B rows, length T, left padded) padded to `rows` x `length` and to a
  power-of-two number of vision patches (see the module docstring)."""
  ids = np.asarray(inputs.input_ids)
  b, t = ids.shape
  if rows < b or length < t:
    raise ValueError(f"cannot pad a batch of {b} x {t} to {rows} x {length}")
  shift = length - t
  out_ids = np.full((rows, length), pad_id, np.int32)
  out_ids[:b, shift:] = ids
  mask = np.zeros((rows, length), bool)
  mask[:b, shift:] = np.asarray(inputs.attention_mask, bool)
  positions = np.zeros((3, rows, length), np.int32)
  positions[:, :b, shift:] = np.asarray(inputs.positions)
  deltas = np.zeros((rows,), np.int32)
  deltas[:b] = np.asarray(inputs.rope_deltas) - shift
  out = ModelInputs(out_ids, mask, positions, deltas)
  if inputs.pixels is None:
    return out
  pixels = np.asarray(inputs.pixels)
  n = pixels.shape[0]
  # One block (a single example's patches): padded to 2^k. Per-row blocks (`batch_inputs`):
  # their count is the config's, kept (padding them would put patches outside the blocks).
  one_block = np.asarray(inputs.windows.gather).shape[0] == 1
  n_new = pow2(n) if one_block else n
  unit = (n // np.asarray(inputs.vision_slots).shape[-1]) if n else 1
  slots = np.asarray(inputs.vision_slots).astype(np.int64)
  # Flat slot r * T + c -> r * length + c + shift; out-of-range (padding) -> past the end.
  moved = (slots // t) * length + slots % t + shift
  slots = np.where(slots < b * t, moved, rows * length)
  pad_slots = np.full(slots.shape[:-1] + ((n_new - n) // unit,), rows * length)
  return out._replace(
      pixels=np.concatenate([pixels, np.zeros((n_new - n, pixels.shape[1]), pixels.dtype)]),
      rotary_ids=np.concatenate([np.asarray(inputs.rotary_ids),
                                 np.zeros((n_new - n, 2), np.int32)]),
      windows=_pad_segment_table(inputs.windows, n, n_new) if one_block else inputs.windows,
      frames=_pad_segment_table(inputs.frames, n, n_new) if one_block else inputs.frames,
      vision_slots=np.concatenate([slots, pad_slots], -1).astype(np.int32))
