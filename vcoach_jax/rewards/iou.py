"""Temporal and box IoU kernels (pure jnp, any leading batch shape).

The arithmetic follows the reference exactly, including Python's `max(a, b)` / `min(a, b)`
semantics (`b` replaces `a` only when strictly greater / smaller, which decides what happens with
NaN), boxes as corners with no clipping or reordering, and IoU 0 when the union is not positive.
Call under `jax.enable_x64(True)` with float64 inputs for bit-level parity with the reference;
float32 inputs work too (to float32 precision).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def py_max(a: jax.Array, b: jax.Array) -> jax.Array:
  """Python's `max(a, b)`: `b` if `b > a` else `a` (NaN-order-preserving)."""
  return jnp.where(b > a, b, a)


def py_min(a: jax.Array, b: jax.Array) -> jax.Array:
  """Python's `min(a, b)`: `b` if `b < a` else `a`."""
  return jnp.where(b < a, b, a)


def fold_max(values: jax.Array, mask: jax.Array, initial: jax.Array | float | None = None
             ) -> tuple[jax.Array, jax.Array]:
  """Python's `max(...)` over the masked entries of the last axis, left to right.

  Args:
    values: [..., K] values.
    mask: [..., K] which entries exist.
    initial: if given, the fold starts from it (as in `best = max(best, x)` loops); otherwise from
      the first masked entry (as in `max(list)`).

  Returns:
    (result [...], any [...]): the fold, and whether anything was folded (always True with an
    initial value). The result is 0 where nothing was folded.
  """
  shape = values.shape[:-1]
  if initial is None:
    best = jnp.zeros(shape, values.dtype)
    have = jnp.zeros(shape, bool)
  else:
    best = jnp.broadcast_to(jnp.asarray(initial, values.dtype), shape)
    have = jnp.ones(shape, bool)
  for k in range(values.shape[-1]):  # K is small and static: unrolled.
    v, m = values[..., k], mask[..., k]
    take = m & (~have | (v > best))
    best = jnp.where(take, v, best)
    have = have | m
  return jnp.where(have, best, 0), have


def box_iou(gt: jax.Array, pred: jax.Array) -> jax.Array:
  """IoU of corner boxes `[x1, y1, x2, y2]`, reference argument order (gt, pred).

  Args:
    gt: [..., 4] ground-truth boxes.
    pred: [..., 4] predicted boxes (broadcast against gt).

  Returns:
    [...] IoU; 0 where the union is not positive. An inverted or zero-area prediction gives 0.
    Never NaN, whatever the inputs (NaN or infinite coordinates included): a NaN anywhere in the
    union makes it fail `union > 0`, and a positive union has a finite intersection. So a
    maximum of IoUs needs no NaN-ordered fold.
  """
  x1 = py_max(gt[..., 0], pred[..., 0])
  y1 = py_max(gt[..., 1], pred[..., 1])
  x2 = py_min(gt[..., 2], pred[..., 2])
  y2 = py_min(gt[..., 3], pred[..., 3])
  zero = jnp.zeros((), x1.dtype)
  inter = py_max(zero, x2 - x1) * py_max(zero, y2 - y1)
  area_gt = (gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1])
  area_pred = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
  union = area_gt + area_pred - inter
  positive = union > 0
  return jnp.where(positive, inter / jnp.where(positive, union, 1), 0)


def segment_iou(pred: jax.Array, gt: jax.Array) -> jax.Array:
  """Temporal IoU of `[start, end]` segments, reference argument order (pred, gt).

  Args:
    pred: [..., 2] predicted segments.
    gt: [..., 2] ground-truth segments.

  Returns:
    [...] intersection / (max end - min start); 0 where that union is 0.
  """
  start = py_max(pred[..., 0], gt[..., 0])
  end = py_min(pred[..., 1], gt[..., 1])
  inter = py_max(jnp.zeros((), start.dtype), end - start)
  union = py_max(pred[..., 1], gt[..., 1]) - py_min(pred[..., 0], gt[..., 0])
  nonzero = union != 0
  return jnp.where(nonzero, inter / jnp.where(nonzero, union, 1), 0)
