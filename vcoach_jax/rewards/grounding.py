"""Grounding rewards of the think block: thk_temporal_point, thk_temporal_segment, thk_spatial.

Per-example pure functions of fixed-shape arrays (vmap them for a batch; see
`vcoach_jax.rewards.kernels`). Masks mark which slots exist; padding never changes a result.
The spatial reward also returns `raised`: where the reference would raise an uncaught error
(docs/rewards.md, RAISES rows), the reward is 0 and the event is counted by the caller.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vcoach_jax.rewards import iou
from vcoach_jax.rewards.parsing import BoxKind, GtKind

GATE_SECONDS = 1.0  # a claim's time must be within this of a key frame (docs/rewards.md §7c)
SIGMA_START, SIGMA_END, CURRICULUM_END = 4.0, 1.0, 0.75  # σ curriculum (docs/rewards.md §6)


class Claims(NamedTuple):
  """Parsed claims of one completion: C claim slots, F key frames, O objects, and the claims'
  boxes in one flat list of P slots (box p belongs to claim `box_claim[p]`, in claim order), so
  the size is the number of boxes present, not claims x the longest claim's boxes."""
  valid: jax.Array  # [C] bool: a parsed claim in this slot
  time: jax.Array  # [C] float: the claim's time in seconds
  name_ok: jax.Array  # [C, F, O] bool: identity filter passes for (claim, frame, object)
  box_claim: jax.Array  # [P] int: the claim slot of each box (non-decreasing; 0 for padding)
  box_kind: jax.Array  # [P] int: BoxKind of each box (PAD for padding)
  boxes: jax.Array  # [P, 4] float: box corners in pixels (where OK)


class KeyFrames(NamedTuple):
  """Key frames of one sample with their GT objects; G boxes per object."""
  valid: jax.Array  # [F] bool
  time: jax.Array  # [F] float: seconds
  items_ok: jax.Array  # [F] bool: key_items has this frame (else the reference raises)
  obj_valid: jax.Array  # [F, O] bool
  gt_kind: jax.Array  # [F, O, G] int: GtKind of each GT box
  gt_boxes: jax.Array  # [F, O, G, 4] float: GT boxes in pixels of the sampled frame


def sigma(step_percent: jax.Array) -> jax.Array:
  """σ of the temporal curriculum: 4·(1−p) below p = 0.75, then 1."""
  return jnp.where(step_percent < CURRICULUM_END, SIGMA_START * (1 - step_percent), SIGMA_END)


def temporal_point_reward(times: jax.Array, time_mask: jax.Array, key_times: jax.Array,
                          key_mask: jax.Array, step_percent: jax.Array) -> jax.Array:
  """Mean over cited times of exp(−d²/2σ²), d = distance to the nearest key frame.

  Args:
    times: [T] times cited in the think block; time_mask: [T].
    key_times: [F] key-frame times; key_mask: [F].
    step_percent: [] training progress p.

  Returns:
    [] reward; 0 when nothing is cited.
  """
  dist = jnp.abs(times[:, None] - key_times[None, :])  # [T, F]
  nearest = jnp.min(jnp.where(key_mask[None, :], dist, jnp.inf), axis=1)  # [T]
  s = sigma(step_percent)
  score = jnp.exp(-(nearest ** 2) / (2 * s ** 2))
  count = jnp.sum(time_mask)
  total = jnp.sum(jnp.where(time_mask, score, 0))
  return jnp.where(count > 0, total / jnp.maximum(count, 1), 0)


def temporal_segment_reward(times: jax.Array, time_mask: jax.Array,
                            segment: jax.Array) -> jax.Array:
  """Fraction of cited times inside the GT segment (bounds inclusive).

  Args:
    times: [T]; time_mask: [T]; segment: [2] GT start and end.
  """
  inside = (segment[0] <= times) & (times <= segment[1]) & time_mask
  count = jnp.sum(time_mask)
  return jnp.where(count > 0, jnp.sum(inside) / jnp.maximum(count, 1), 0)


def _pair_raises(gt_kind: jax.Array, box_kind: jax.Array) -> jax.Array:
  """Whether `calculate_iou(gt, pred)` raises for these kinds (broadcasting)."""
  reaches_conversion = (box_kind != BoxKind.PAD) & (box_kind != BoxKind.ARITY)
  return reaches_conversion & (
      (gt_kind == GtKind.CONV_RAISES) | ((gt_kind == GtKind.OK) & (box_kind == BoxKind.RAISES)))


def _pair_iou(gt_kind, gt_boxes, box_kind, boxes):
  """IoU where both boxes are usable, else 0."""
  usable = (gt_kind == GtKind.OK) & (box_kind == BoxKind.OK)
  return jnp.where(usable, iou.box_iou(gt_boxes, boxes), 0)


def select_key_frame(claim_time: jax.Array, frames: KeyFrames, correct_tempgate: bool
                     ) -> tuple[jax.Array, jax.Array]:
  """The key frame each claim is compared with: the nearest one that passes the time gate.

  Args:
    claim_time: [C]; frames: the sample's key frames; correct_tempgate: |g−t| ≤ 1 (True) or the
      one-sided g − t < 1 (False).

  Returns:
    (index [C], found [C]). Ties go to the first frame in list order.
  """
  t, g = claim_time[:, None], frames.time[None, :]
  dist = jnp.abs(g - t)  # [C, F]
  gate = dist <= GATE_SECONDS if correct_tempgate else (g - t) < GATE_SECONDS
  candidate = frames.valid[None, :] & gate & (dist < jnp.inf)
  index = jnp.argmin(jnp.where(candidate, dist, jnp.inf), axis=1)
  # The reference marks "no frame" with a time of -1, so a key frame at -1 s never matches.
  found = jnp.any(candidate, axis=1) & (frames.time[index] != -1)
  return index, found


def spatial_claims_reward(claims: Claims, frames: KeyFrames, *, correct_tempgate: bool,
                          iou_avg: bool, norm_matched: bool) -> tuple[jax.Array, jax.Array]:
  """thk_spatial for the temporal-spatial task (docs/rewards.md §7c).

  Each claim is gated to one key frame; each GT object of that frame that passes the identity
  filter scores the mean over its GT boxes of the best IoU among the claim's boxes; a claim with
  at least one such object is matched and scores the mean (avg) or max of its objects. The
  reward is the sum over matched claims divided by the number of claims (all) or of matched ones.

  The best IoU per GT box is a segment maximum over the flat box list: equal to the reference's
  left-to-right `max` because an IoU is never NaN (`iou.box_iou`). Memory is O(P·O·G + C·F·O).

  Returns:
    (reward [], raised []): raised marks where the reference raises (reward is then 0).
  """
  n_slots = claims.valid.shape[0]
  index, found = select_key_frame(claims.time, frames, correct_tempgate)
  live = claims.valid & found  # [C]
  items_ok = frames.items_ok[index]  # [C]
  obj_valid = frames.obj_valid[index]  # [C, O]
  gt_kind = frames.gt_kind[index]  # [C, O, G]
  name_ok = jnp.take_along_axis(claims.name_ok, index[:, None, None], axis=1)[:, 0]  # [C, O]
  real_box = claims.box_kind != BoxKind.PAD  # [P]
  box_count = jax.ops.segment_sum(real_box.astype(jnp.int32), claims.box_claim, n_slots,
                                  indices_are_sorted=True)  # [C]
  has_box = box_count > 0
  eligible = (live & items_ok & has_box)[:, None] & obj_valid & name_ok  # [C, O]
  gt_exists = gt_kind != GtKind.PAD  # [C, O, G]
  visited = eligible[..., None] & gt_exists  # [C, O, G]

  # Per box: the GT boxes of its claim's frame.
  box_frame = index[claims.box_claim]  # [P]
  p_gt_kind = frames.gt_kind[box_frame]  # [P, O, G]
  p_gt_boxes = frames.gt_boxes[box_frame]  # [P, O, G, 4]
  p_kind = claims.box_kind[:, None, None]  # [P, 1, 1]
  values = _pair_iou(p_gt_kind, p_gt_boxes, p_kind, claims.boxes[:, None, None])  # [P, O, G]
  pair_raise = (visited[claims.box_claim] & real_box[:, None, None]
                & _pair_raises(p_gt_kind, p_kind))  # [P, O, G]
  prep_raise = visited & (gt_kind == GtKind.PREP_RAISES)
  raised = (jnp.any(live & ~items_ok) | jnp.any(pair_raise) | jnp.any(prep_raise))

  masked = jnp.where(real_box[:, None, None], values, -jnp.inf)
  best_per_gt = jax.ops.segment_max(masked, claims.box_claim, n_slots,
                                    indices_are_sorted=True)  # [C, O, G]
  best_per_gt = jnp.where(has_box[:, None, None], best_per_gt, 0)
  n_gt = jnp.sum(gt_exists, axis=-1)  # [C, O]
  object_iou = jnp.sum(jnp.where(gt_exists, best_per_gt, 0), axis=-1) / jnp.maximum(n_gt, 1)
  matched_obj = eligible & (n_gt > 0)  # [C, O]
  n_obj = jnp.sum(matched_obj, axis=-1)  # [C]
  if iou_avg:
    claim_score = jnp.sum(jnp.where(matched_obj, object_iou, 0), axis=-1) / jnp.maximum(n_obj, 1)
  else:
    claim_score, _ = iou.fold_max(object_iou, matched_obj)
  matched = n_obj > 0  # [C]
  total = jnp.sum(jnp.where(matched, claim_score, 0))
  n_claims = jnp.sum(claims.valid)
  denominator = jnp.maximum(1, jnp.sum(matched)) if norm_matched else jnp.maximum(n_claims, 1)
  reward = jnp.where(n_claims > 0, total / denominator, 0)
  return jnp.where(raised, 0, reward), raised


def spatial_box_reward(gt_kind: jax.Array, gt_box: jax.Array, box_kind: jax.Array,
                       boxes: jax.Array) -> tuple[jax.Array, jax.Array]:
  """thk_spatial for visual QA (docs/rewards.md §7a): best IoU of any think box with the GT box.

  Args:
    gt_kind: [] GtKind; gt_box: [4] rescaled GT box; box_kind: [B]; boxes: [B, 4].

  Returns:
    (reward [], raised []).
  """
  values = _pair_iou(gt_kind, gt_box[None, :], box_kind, boxes)  # [B]
  # `best = max(best, iou)` from 0: a plain maximum, as an IoU is never NaN (no unrolled fold,
  # so B may be large).
  best = jnp.max(jnp.where(box_kind != BoxKind.PAD, values, 0), initial=0.0)
  exists = jnp.any(box_kind != BoxKind.PAD)
  raised = exists & ((gt_kind == GtKind.PREP_RAISES) | jnp.any(_pair_raises(gt_kind, box_kind)))
  return jnp.where(raised, 0, best), raised
