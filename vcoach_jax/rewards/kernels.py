"""The device side of the rewards: one jitted, batch-vectorised function over a `RewardBatch`.

`score_batch` vmaps the per-example kernels of `accuracy` and `grounding` over the leading axis
and fuses them into one program (one dispatch per reward batch). The options that change the
arithmetic (`correct_tempgate`, `spatial_iou_mode`, `spatial_norm_mode`) are static: each
combination is its own compiled program. Run it under `jax.enable_x64(True)` for float64 parity
with the reference (`vcoach_jax.rewards.compute` does).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vcoach_jax.rewards import accuracy
from vcoach_jax.rewards import grounding
from vcoach_jax.rewards.packing import RewardBatch


@functools.partial(jax.jit, static_argnames=("correct_tempgate", "iou_avg", "norm_matched"))
def score_batch(batch: RewardBatch, *, correct_tempgate: bool, iou_avg: bool,
                norm_matched: bool) -> dict[str, jax.Array]:
  """Device rewards of a packed batch.

  Returns:
    dict of [N] arrays: ans_tiou, ans_viou, thk_temporal_point, thk_temporal_segment,
    thk_spatial, and spatial_raised (bool: the reference would raise in thk_spatial).
  """
  point = jax.vmap(grounding.temporal_point_reward)(
      batch.times, batch.time_mask, batch.frames.time, batch.frames.valid, batch.step_percent)
  segment = jax.vmap(grounding.temporal_segment_reward)(
      batch.times, batch.time_mask, batch.segment)
  claims_fn = functools.partial(
      grounding.spatial_claims_reward, correct_tempgate=correct_tempgate, iou_avg=iou_avg,
      norm_matched=norm_matched)
  st_reward, st_raised = jax.vmap(claims_fn)(batch.claims, batch.frames)
  vqa_reward, vqa_raised = jax.vmap(grounding.spatial_box_reward)(
      batch.vqa_gt_kind, batch.vqa_gt_box, batch.think_box_kind, batch.think_boxes)
  tiou = jax.vmap(accuracy.answer_tiou)(batch.tiou_active, batch.pred_segment, batch.tiou_gt)
  viou = jax.vmap(accuracy.answer_viou)(
      batch.viou_active, batch.vqa_gt_kind, batch.vqa_gt_box, batch.viou_box_kind,
      batch.viou_box)
  zero = jnp.zeros_like(point)
  spatial = jnp.where(batch.spatial_active, st_reward, jnp.where(batch.vqa_active, vqa_reward, zero))
  raised = (batch.spatial_active & st_raised) | (batch.vqa_active & vqa_raised)
  return {
      "ans_tiou": tiou,
      "ans_viou": viou,
      "thk_temporal_point": jnp.where(batch.point_active, point, zero),
      "thk_temporal_segment": jnp.where(batch.segment_active, segment, zero),
      "thk_spatial": spatial,
      "spatial_raised": raised,
  }


def compiled_programs() -> int:
  """How many programs `score_batch` has compiled in this process (shape buckets x options)."""
  return score_batch._cache_size()  # pylint: disable=protected-access
