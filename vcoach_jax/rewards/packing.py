"""Parsed completions + sample targets -> one fixed-shape `RewardBatch` for the kernels.

Shapes come from `Shapes` (config `rewards.max_*`). A batch that needs more slots than a default
grows that dimension to the next power of two, so overflow never changes a result and the number
of distinct compiled programs stays small; each growth is counted in the stats. The batch
dimension itself is padded to a power of two with inactive rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import numpy as np

from vcoach_jax.rewards import grounding
from vcoach_jax.rewards import parsing
from vcoach_jax.rewards import targets as targets_lib
from vcoach_jax.rewards.parsing import BoxKind, GtKind


@dataclasses.dataclass(frozen=True)
class Shapes:
  """Default slot counts of the reward kernels (config `rewards.max_*`)."""
  max_times: int = 16
  max_claims: int = 8
  max_boxes: int = 8
  max_key_frames: int = 8
  max_objects: int = 4
  max_gt_boxes: int = 2

  @classmethod
  def from_config(cls, rewards_config: Any) -> "Shapes":
    return cls(**{f.name: int(rewards_config[f.name]) for f in dataclasses.fields(cls)})


class RewardBatch(NamedTuple):
  """Everything the device kernels read, for N completions (leading axis)."""
  times: np.ndarray  # [N, T] float64: think-block times
  time_mask: np.ndarray  # [N, T] bool
  step_percent: np.ndarray  # [N] float64
  point_active: np.ndarray  # [N] bool: thk_temporal_point applies
  segment_active: np.ndarray  # [N] bool: thk_temporal_segment applies
  segment: np.ndarray  # [N, 2] float64: GT segment (thinking times)
  spatial_active: np.ndarray  # [N] bool: the temporal-spatial path of thk_spatial applies
  claims: grounding.Claims  # leading N
  frames: grounding.KeyFrames  # leading N
  vqa_active: np.ndarray  # [N] bool: the visual-QA path of thk_spatial applies
  vqa_gt_kind: np.ndarray  # [N] int8
  vqa_gt_box: np.ndarray  # [N, 4] float64
  think_box_kind: np.ndarray  # [N, B] int8
  think_boxes: np.ndarray  # [N, B, 4] float64
  tiou_active: np.ndarray  # [N] bool
  pred_segment: np.ndarray  # [N, 2] float64
  tiou_gt: np.ndarray  # [N, 2] float64
  viou_active: np.ndarray  # [N] bool
  viou_box_kind: np.ndarray  # [N] int8
  viou_box: np.ndarray  # [N, 4] float64


@dataclasses.dataclass
class HostFlags:
  """Where the reference raises for reasons known on the host (per completion)."""
  point_raised: np.ndarray  # [N] bool
  segment_raised: np.ndarray  # [N] bool
  spatial_raised: np.ndarray  # [N] bool


def _bucket(needed: int, default: int) -> int:
  if needed <= default:
    return default
  return 1 << (needed - 1).bit_length()


def _classified(boxes: Sequence[Any], width: int) -> tuple[np.ndarray, np.ndarray]:
  kinds = np.zeros(width, np.int8)
  values = np.zeros((width, 4), np.float64)
  for b, box in enumerate(boxes):
    kind, vals = parsing.classify_pred_box(box)
    kinds[b], values[b] = kind, vals
  return kinds, values


def _frames_arrays(kf: targets_lib.KeyFrameTargets | None, f: int, o: int, g: int
                   ) -> dict[str, np.ndarray]:
  out = dict(valid=np.zeros(f, bool), time=np.zeros(f), items_ok=np.zeros(f, bool),
             obj_valid=np.zeros((f, o), bool), gt_kind=np.zeros((f, o, g), np.int8),
             gt_boxes=np.zeros((f, o, g, 4)))
  if kf is None or not kf.ok:
    return out
  for i, time in enumerate(kf.times):
    out["valid"][i], out["time"][i], out["items_ok"][i] = True, time, kf.items_ok[i]
    for j, (kinds, boxes) in enumerate(zip(kf.gt_kinds[i], kf.gt_boxes[i])):
      out["obj_valid"][i, j] = True
      for k, (kind, box) in enumerate(zip(kinds, boxes)):
        out["gt_kind"][i, j, k], out["gt_boxes"][i, j, k] = kind, box
  return out


def needed_shapes(parsed: Sequence[parsing.ParsedCompletion],
                  targets: Sequence[targets_lib.SampleTargets]) -> dict[str, int]:
  """The slot counts this batch actually needs."""
  kfs = [t.key_frames for t in targets if t.key_frames is not None and t.key_frames.ok]
  return dict(
      max_times=max((len(p.think_times) for p in parsed), default=0),
      max_claims=max((len(p.claims) for p in parsed), default=0),
      max_boxes=max([len(c.boxes) for p in parsed for c in p.claims]
                    + [len(p.think_boxes) for p in parsed], default=0),
      max_key_frames=max((len(k.times) for k in kfs), default=0),
      max_objects=max((len(n) for k in kfs for n in k.names), default=0),
      max_gt_boxes=max((len(b) for k in kfs for obj in k.gt_kinds for b in obj), default=0),
  )


def pack(parsed: Sequence[parsing.ParsedCompletion], targets: Sequence[targets_lib.SampleTargets],
         options: dict[str, Any], shapes: Shapes) -> tuple[RewardBatch, HostFlags, dict[str, int]]:
  """Packs a batch. Returns (batch padded to a power-of-two N, host raise flags [n], growths)."""
  n = len(parsed)
  needed = needed_shapes(parsed, targets)
  sizes = {k: _bucket(v, getattr(shapes, k)) for k, v in needed.items()}
  grown = {k: 1 for k, v in sizes.items() if v > getattr(shapes, k)}
  t_, c_, b_ = sizes["max_times"], sizes["max_claims"], sizes["max_boxes"]
  f_, o_, g_ = sizes["max_key_frames"], sizes["max_objects"], sizes["max_gt_boxes"]
  rows = _bucket(max(n, 1), 1)

  def zeros(*shape, dtype=np.float64):
    return np.zeros((rows,) + shape, dtype)

  times, time_mask = zeros(t_), zeros(t_, dtype=bool)
  step, point_active, segment_active, segment = zeros(), zeros(dtype=bool), zeros(
      dtype=bool), zeros(2)
  spatial_active = zeros(dtype=bool)
  claim_valid, claim_time = zeros(c_, dtype=bool), zeros(c_)
  claim_kind, claim_boxes = zeros(c_, b_, dtype=np.int8), zeros(c_, b_, 4)
  name_ok = zeros(c_, f_, o_, dtype=bool)
  vqa_active, vqa_kind, vqa_box = zeros(dtype=bool), zeros(dtype=np.int8), zeros(4)
  think_kind, think_boxes = zeros(b_, dtype=np.int8), zeros(b_, 4)
  tiou_active, pred_segment, tiou_gt = zeros(dtype=bool), zeros(2), zeros(2)
  viou_active, viou_kind, viou_box = zeros(dtype=bool), zeros(dtype=np.int8), zeros(4)
  flags = HostFlags(np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool))

  frame_cache: dict[int, dict[str, np.ndarray]] = {}
  frame_rows = {k: zeros(*v.shape, dtype=v.dtype) for k, v in _frames_arrays(None, f_, o_, g_).items()}
  mode = options["identity_match_mode"]

  for i, (p, tgt) in enumerate(zip(parsed, targets)):
    task = tgt.task
    step[i] = tgt.step_percent
    if p.think is not None:
      k = len(p.think_times)
      times[i, :k], time_mask[i, :k] = p.think_times, True
    kf = tgt.key_frames
    if task == targets_lib.TASK_ST and kf is not None and kf.ok:
      key = id(tgt)
      if key not in frame_cache:
        frame_cache[key] = _frames_arrays(kf, f_, o_, g_)
      for name, value in frame_cache[key].items():
        frame_rows[name][i] = value
    # thk_temporal_point: temporal-spatial task only (unknown tasks are refused upstream).
    if p.think is not None and task == targets_lib.TASK_ST:
      if p.think_times and (kf is None or not kf.ok or not kf.times):
        flags.point_raised[i] = True
      else:
        point_active[i] = True
    # thk_temporal_segment: the two temporal tasks.
    if p.think is not None and task in (targets_lib.TASK_TG, targets_lib.TASK_TG_MCQ):
      if not tgt.segment_ok or (p.think_times and tgt.segment is None):
        flags.segment_raised[i] = True
      elif tgt.segment is not None:
        segment_active[i], segment[i] = True, tgt.segment
    # thk_spatial needs both a think block and an answer block.
    if p.think is not None and p.has_answer_block and task == targets_lib.TASK_ST and p.claims:
      if kf is None or not kf.ok:
        flags.spatial_raised[i] = True
      else:
        spatial_active[i] = True
        for c, claim in enumerate(p.claims):
          claim_valid[i, c], claim_time[i, c] = True, claim.time
          claim_kind[i, c], claim_boxes[i, c] = _classified(claim.boxes, b_)
          for fi, names in enumerate(kf.names):
            for oi, obj_name in enumerate(names):
              name_ok[i, c, fi, oi] = parsing.name_match(claim.name, obj_name, mode)
    if task == targets_lib.TASK_VQA and tgt.vqa_gt_found:
      vqa_kind[i], vqa_box[i] = tgt.vqa_gt_kind, tgt.vqa_gt_box
      if p.think is not None and p.has_answer_block and p.think_boxes:
        vqa_active[i] = True
        think_kind[i], think_boxes[i] = _classified(p.think_boxes, b_)
      if p.answer_box is not None and p.answer_box[0]:
        viou_active[i] = True
        viou_kind[i], viou_box[i] = parsing.classify_pred_box(p.answer_box[1])
    if (task in (targets_lib.TASK_TG, targets_lib.TASK_TG_MCQ) and p.answer_segment is not None
        and tgt.tiou_segment is not None):
      tiou_active[i], pred_segment[i], tiou_gt[i] = True, p.answer_segment, tgt.tiou_segment

  batch = RewardBatch(
      times=times, time_mask=time_mask, step_percent=step, point_active=point_active,
      segment_active=segment_active, segment=segment, spatial_active=spatial_active,
      claims=grounding.Claims(claim_valid, claim_time, claim_kind, claim_boxes, name_ok),
      frames=grounding.KeyFrames(**frame_rows),
      vqa_active=vqa_active, vqa_gt_kind=vqa_kind, vqa_gt_box=vqa_box,
      think_box_kind=think_kind, think_boxes=think_boxes,
      tiou_active=tiou_active, pred_segment=pred_segment, tiou_gt=tiou_gt,
      viou_active=viou_active, viou_box_kind=viou_kind, viou_box=viou_box)
  return batch, flags, grown
