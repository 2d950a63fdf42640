"""Parsed completions + sample targets -> fixed-shape `RewardBatch`es for the kernels.

Slot counts start from `Shapes` (config `rewards.max_*`) and grow to the next power of two where
rows need more, so padding never changes a result and few programs are compiled; each growth is
counted in the stats. The batch dimension is padded to a power of two with inactive rows.

Memory stays linear in what the completions contain (docs/rewards.md, "Memory"):
* a row asks only for the slots its task reads (claims for the temporal-spatial task, think
  boxes for visual QA, times for the tasks that score them);
* the boxes of a row's claims are one flat list (claims x boxes of its longest claim would be
  quadratic);
* `plan` splits a batch into groups: rows within `SHARED_FACTOR` x the defaults in every
  completion-sized dimension share one batch (the common case: one group, one dispatch), and a
  larger row is packed only with rows of its own size class (the same power-of-two bucket in
  each of those dimensions), so no row is padded to another row's size.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import numpy as np

from vcoach_jax.rewards import grounding
from vcoach_jax.rewards import parsing
from vcoach_jax.rewards import targets as targets_lib
from vcoach_jax.shapes import pow2


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

  @property
  def max_claim_boxes(self) -> int:
    """Boxes of all claims of a think block together (one flat list): claims x boxes."""
    return self.max_claims * self.max_boxes


# Slot dimensions a completion decides (a policy can make them as large as its text), then those
# the sample decides (its key frames and GT objects).
COMPLETION_DIMS = ("max_times", "max_claims", "max_claim_boxes", "max_boxes")
SAMPLE_DIMS = ("max_key_frames", "max_objects", "max_gt_boxes")
DIMS = COMPLETION_DIMS + SAMPLE_DIMS
# A row needing at most this many times the default slots in every completion dimension is
# packed in the shared group; a larger one only with rows of its own size class.
SHARED_FACTOR = 4


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
  return default if needed <= default else pow2(needed)


def _frames_ok(tgt: targets_lib.SampleTargets) -> bool:
  kf = tgt.key_frames
  return tgt.task == targets_lib.TASK_ST and kf is not None and kf.ok


def _uses_claims(p: parsing.ParsedCompletion, tgt: targets_lib.SampleTargets) -> bool:
  """The temporal-spatial path of thk_spatial scores this row's claims."""
  return (p.think is not None and p.has_answer_block and tgt.task == targets_lib.TASK_ST
          and bool(p.claims) and _frames_ok(tgt))


def _uses_think_boxes(p: parsing.ParsedCompletion, tgt: targets_lib.SampleTargets) -> bool:
  """The visual-QA path of thk_spatial scores this row's think boxes."""
  return (tgt.task == targets_lib.TASK_VQA and tgt.vqa_gt_found and p.think is not None
          and p.has_answer_block and bool(p.think_boxes))


_TIMED_TASKS = (targets_lib.TASK_ST, targets_lib.TASK_TG, targets_lib.TASK_TG_MCQ)


def _uses_times(p: parsing.ParsedCompletion, tgt: targets_lib.SampleTargets) -> bool:
  """thk_temporal_point or thk_temporal_segment reads this row's think times."""
  return p.think is not None and tgt.task in _TIMED_TASKS


def row_needs(p: parsing.ParsedCompletion, tgt: targets_lib.SampleTargets) -> tuple[int, ...]:
  """The slots one row needs in each dimension of `DIMS`, in that order (only what its task
  reads)."""
  times = len(p.think_times) if _uses_times(p, tgt) else 0
  think_boxes = len(p.think_boxes) if _uses_think_boxes(p, tgt) else 0
  if not _frames_ok(tgt):
    return (times, 0, 0, think_boxes, 0, 0, 0)
  kf = tgt.key_frames
  claims = p.claims if _uses_claims(p, tgt) else ()
  return (times, len(claims), sum(len(c.boxes) for c in claims), think_boxes, len(kf.times),
          max((len(n) for n in kf.names), default=0),
          max((len(b) for obj in kf.gt_kinds for b in obj), default=0))


def _covering(needs: Sequence[tuple[int, ...]], shapes: Shapes) -> dict[str, int]:
  """Slot counts covering every row of `needs`: the defaults, or the next power of two above."""
  return {dim: _bucket(max((n[d] for n in needs), default=0), getattr(shapes, dim))
          for d, dim in enumerate(DIMS)}


def plan(parsed: Sequence[parsing.ParsedCompletion], targets: Sequence[targets_lib.SampleTargets],
         shapes: Shapes) -> list[tuple[list[int], dict[str, int]]]:
  """Splits a batch into groups packed separately: [(row indices, slot sizes)], shared first.

  Every row is in exactly one group; a group's sizes cover each of its rows. A row beyond
  `SHARED_FACTOR` x the defaults in a completion dimension is grouped with the rows of its size
  class, so a group's padded size is at most twice each row's own need in those dimensions.
  """
  k = len(COMPLETION_DIMS)
  defaults = [getattr(shapes, dim) for dim in COMPLETION_DIMS]
  limits = [SHARED_FACTOR * d for d in defaults]
  needs = [row_needs(p, t) for p, t in zip(parsed, targets)]
  groups: dict[tuple[int, ...], list[int]] = {}
  for i, need in enumerate(needs):
    if all(need[d] <= limits[d] for d in range(k)):
      key = ()  # the shared group
    else:
      key = tuple(_bucket(need[d], defaults[d]) for d in range(k))
    groups.setdefault(key, []).append(i)
  return [(groups[key], _covering([needs[i] for i in groups[key]], shapes))
          for key in sorted(groups)]


def _classified(boxes: Sequence[Any], kinds: np.ndarray, values: np.ndarray) -> None:
  """Fills kinds[b], values[b] with the BoxKind and floats of each predicted box."""
  for b, box in enumerate(boxes):
    kinds[b], values[b] = parsing.classify_pred_box(box)


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


def _name_row(name: str, kf: targets_lib.KeyFrameTargets, f: int, o: int, mode: str
              ) -> np.ndarray:
  """[f, o] identity filter of one claim name against every GT object of the sample."""
  row = np.zeros((f, o), bool)
  for fi, names in enumerate(kf.names):
    for oi, obj_name in enumerate(names):
      row[fi, oi] = parsing.name_match(name, obj_name, mode)
  return row


class _Claims:
  """Host buffers of `grounding.Claims` for `rows` rows; filled one row at a time."""

  def __init__(self, rows: int, c: int, p: int, f: int, o: int):
    self.valid, self.time = np.zeros((rows, c), bool), np.zeros((rows, c))
    self.name_ok = np.zeros((rows, c, f, o), bool)
    self.box_claim = np.zeros((rows, p), np.int32)
    self.box_kind, self.boxes = np.zeros((rows, p), np.int8), np.zeros((rows, p, 4))

  def fill(self, i: int, claims: Sequence[parsing.Claim], kf: targets_lib.KeyFrameTargets,
           mode: str) -> None:
    n = len(claims)
    self.valid[i, :n] = True
    self.time[i, :n] = [c.time for c in claims]
    by_name: dict[str, np.ndarray] = {}  # one identity-filter row per distinct claim name
    for c, claim in enumerate(claims):
      row = by_name.get(claim.name)
      if row is None:
        row = by_name[claim.name] = _name_row(claim.name, kf, *self.name_ok.shape[2:], mode)
      self.name_ok[i, c] = row
    flat = [box for claim in claims for box in claim.boxes]
    owner = [c for c, claim in enumerate(claims) for _ in claim.boxes]
    self.box_claim[i, :len(flat)] = owner
    # Padding slots keep box_claim non-decreasing (the segment reductions expect sorted ids).
    self.box_claim[i, len(flat):] = owner[-1] if owner else 0
    _classified(flat, self.box_kind[i], self.boxes[i])

  def arrays(self) -> grounding.Claims:
    return grounding.Claims(self.valid, self.time, self.name_ok, self.box_claim, self.box_kind,
                            self.boxes)


def pack(parsed: Sequence[parsing.ParsedCompletion], targets: Sequence[targets_lib.SampleTargets],
         options: dict[str, Any], shapes: Shapes, sizes: dict[str, int] | None = None
         ) -> tuple[RewardBatch, HostFlags, dict[str, int]]:
  """Packs rows into one batch. Returns (batch padded to a power-of-two N, host raise flags [n],
  the dimensions grown beyond `shapes`).

  Args:
    sizes: slot counts (from `plan`); default: what these rows need.
  """
  n = len(parsed)
  if sizes is None:
    sizes = _covering([row_needs(p, t) for p, t in zip(parsed, targets)], shapes)
  grown = {k: 1 for k, v in sizes.items() if v > getattr(shapes, k)}
  t_, b_ = sizes["max_times"], sizes["max_boxes"]
  f_, o_, g_ = sizes["max_key_frames"], sizes["max_objects"], sizes["max_gt_boxes"]
  rows = _bucket(max(n, 1), 1)

  def zeros(*shape, dtype=np.float64):
    return np.zeros((rows,) + shape, dtype)

  times, time_mask = zeros(t_), zeros(t_, dtype=bool)
  step, point_active, segment_active, segment = zeros(), zeros(dtype=bool), zeros(
      dtype=bool), zeros(2)
  spatial_active = zeros(dtype=bool)
  claims = _Claims(rows, sizes["max_claims"], sizes["max_claim_boxes"], f_, o_)
  vqa_active, vqa_kind, vqa_box = zeros(dtype=bool), zeros(dtype=np.int8), zeros(4)
  think_kind, think_boxes = zeros(b_, dtype=np.int8), zeros(b_, 4)
  tiou_active, pred_segment, tiou_gt = zeros(dtype=bool), zeros(2), zeros(2)
  viou_active, viou_kind, viou_box = zeros(dtype=bool), zeros(dtype=np.int8), zeros(4)
  flags = HostFlags(np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool))

  frame_cache: dict[int, dict[str, np.ndarray]] = {}
  frame_rows = {k: zeros(*v.shape, dtype=v.dtype)
                for k, v in _frames_arrays(None, f_, o_, g_).items()}
  mode = options["identity_match_mode"]

  for i, (p, tgt) in enumerate(zip(parsed, targets)):
    task = tgt.task
    step[i] = tgt.step_percent
    if p.think is not None and task in _TIMED_TASKS:
      k = len(p.think_times)
      times[i, :k], time_mask[i, :k] = p.think_times, True
    kf = tgt.key_frames
    frames_ok = task == targets_lib.TASK_ST and kf is not None and kf.ok
    if frames_ok:
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
      if not frames_ok:
        flags.spatial_raised[i] = True
      else:
        spatial_active[i] = True
        claims.fill(i, p.claims, kf, mode)
    if task == targets_lib.TASK_VQA and tgt.vqa_gt_found:
      vqa_kind[i], vqa_box[i] = tgt.vqa_gt_kind, tgt.vqa_gt_box
      if _uses_think_boxes(p, tgt):
        vqa_active[i] = True
        _classified(p.think_boxes, think_kind[i], think_boxes[i])
      if p.answer_box is not None and p.answer_box[0]:
        viou_active[i] = True
        viou_kind[i], viou_box[i] = parsing.classify_pred_box(p.answer_box[1])
    if (task in (targets_lib.TASK_TG, targets_lib.TASK_TG_MCQ) and p.answer_segment is not None
        and tgt.tiou_segment is not None):
      tiou_active[i], pred_segment[i], tiou_gt[i] = True, p.answer_segment, tgt.tiou_segment

  batch = RewardBatch(
      times=times, time_mask=time_mask, step_percent=step, point_active=point_active,
      segment_active=segment_active, segment=segment, spatial_active=spatial_active,
      claims=claims.arrays(), frames=grounding.KeyFrames(**frame_rows),
      vqa_active=vqa_active, vqa_gt_kind=vqa_kind, vqa_gt_box=vqa_box,
      think_box_kind=think_kind, think_boxes=think_boxes,
      tiou_active=tiou_active, pred_segment=pred_segment, tiou_gt=tiou_gt,
      viou_active=viou_active, viou_box_kind=viou_kind, viou_box=viou_box)
  return batch, flags, grown
