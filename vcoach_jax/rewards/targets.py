"""Sample (record) -> ground-truth targets of the rewards (host side).

The ground truth is prepared once per sample, in Python, with the reference's own operations
(`ast.literal_eval`, coordinate scaling), so that every error the reference would hit is known
here as a flag: the kernels then either score or report "the reference raises" for a completion
that reaches it. Task strings and options are validated here (docs/rewards.md, difference 2).
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Mapping

import numpy as np

from vcoach_jax.rewards import parsing
from vcoach_jax.rewards import scan

# The six task strings (docs/rewards.md §0), exact and case-sensitive.
TASK_ST = "temporal-spatial free-form QA"
TASK_TG = "temporal QA"
TASK_TG_MCQ = "temporal QA (MCQ)"
TASK_MCQ = "General video QA MCQ"
TASK_FREE = "General video QA Free-form"
TASK_VQA = "visual QA"
TASKS = (TASK_ST, TASK_TG_MCQ, TASK_TG, TASK_VQA, TASK_MCQ, TASK_FREE)

OPTION_CHOICES: dict[str, tuple[Any, ...]] = {
    "spatial_iou_mode": ("max", "avg"),
    "identity_match_mode": ("none", "soft", "strict"),
    "spatial_norm_mode": ("all", "matched"),
    "correct_tempgate": (True, False),
}


def validate_options(options: Mapping[str, Any]) -> dict[str, Any]:
  """Returns the four reward options, or raises ValueError naming a bad one."""
  if not isinstance(options, Mapping):
    raise ValueError(f"reward options must be a dict with keys {sorted(OPTION_CHOICES)}")
  unknown = sorted(set(options) - set(OPTION_CHOICES))
  if unknown:
    raise ValueError(f"unknown reward option(s) {unknown}; allowed: {sorted(OPTION_CHOICES)}")
  out = {}
  for name, allowed in OPTION_CHOICES.items():
    if name not in options:
      raise ValueError(f"reward option {name!r} is missing; allowed values: {allowed}")
    value = options[name]
    if name == "correct_tempgate":
      ok = isinstance(value, (bool, np.bool_))
      value = bool(value) if ok else value
    else:
      ok = isinstance(value, str) and value in allowed
    if not ok:
      raise ValueError(f"reward option {name!r} must be one of {allowed}, got {value!r}")
    out[name] = value
  return out


def validate_task(task: Any, index: int) -> str:
  if task not in TASKS:
    raise ValueError(
        f"sample {index}: unknown task {task!r}; expected one of {list(TASKS)}")
  return task


@dataclasses.dataclass(frozen=True)
class KeyFrameTargets:
  """Key frames of a sample for thk_temporal_point and the ST path of thk_spatial."""
  ok: bool  # the key-frame list could be read; False: the reference raises when it is used
  times: tuple[float, ...]
  items_ok: tuple[bool, ...]  # per frame: key_items[str(idx)] is a dict (else: raises)
  names: tuple[tuple[str, ...], ...]  # per frame: GT object names, dict order
  gt_kinds: tuple[tuple[tuple[int, ...], ...], ...]  # per frame, object, box: GtKind
  gt_boxes: tuple[tuple[tuple[np.ndarray, ...], ...], ...]  # pixels, same nesting


@dataclasses.dataclass(frozen=True)
class SampleTargets:
  """Ground truth of one sample, in the form the packer needs."""
  task: str
  step_percent: float
  answer_text: str  # extract_answer('<answer>{answer}</answer>')
  mcq_letter: str | None  # TG-MCQ: first line of the answer, stripped; None on error
  segment_ok: bool  # literal_eval of the GT segment succeeded (else thk_temporal_segment raises)
  segment: tuple[float, float] | None  # gt[0], gt[1] when both are numbers (thinking times)
  tiou_segment: tuple[float, float] | None  # `s, e = gt` when both are numbers (ans_tiou)
  key_frames: KeyFrameTargets | None
  vqa_gt_found: bool  # the answer has a box that parses as JSON
  vqa_gt_kind: int  # GtKind of the rescaled VQA GT box
  vqa_gt_box: np.ndarray  # [4] rescaled to image_size_refine pixels


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, complex)


def _segment_targets(task: str, answer: Any):
  """(literal_eval ok, (gt[0], gt[1]) or None, unpacked (s, e) or None) of the GT segment."""
  if task not in (TASK_TG, TASK_TG_MCQ):
    return False, None, None
  try:
    text = answer.split("\n")[1] if task == TASK_TG_MCQ else answer
    gt = ast.literal_eval(text)
  except Exception:  # pylint: disable=broad-except
    return False, None, None
  indexed = unpacked = None
  try:
    g0, g1 = gt[0], gt[1]
    if _is_number(g0) and _is_number(g1):
      indexed = (float(g0), float(g1))
  except Exception:  # pylint: disable=broad-except
    pass
  try:
    s, e = gt
    if _is_number(s) and _is_number(e):
      unpacked = (float(s), float(e))
  except Exception:  # pylint: disable=broad-except
    pass
  return True, indexed, unpacked


def _scale_gt_box(box: Any, size: Any) -> tuple[int, np.ndarray]:
  """Normalised key-item box -> pixels of the sampled frame (`convert_coord_format`)."""
  try:
    nx0, ny0, nx1, ny1 = box
    width, height = size
    pixels = [nx0 * width, ny0 * height, nx1 * width, ny1 * height]
  except Exception:  # pylint: disable=broad-except
    return int(parsing.GtKind.PREP_RAISES), np.zeros(4)
  kind, values = parsing.classify_gt_box(pixels)
  return int(kind), values


def _key_frame_targets(sample: Mapping[str, Any]) -> KeyFrameTargets:
  empty = KeyFrameTargets(False, (), (), (), (), ())
  try:
    frames = list(sample.get("key_frames"))
    times = tuple(frame["time"] for frame in frames)
    if not all(_is_number(t) for t in times):
      return empty
    times = tuple(float(t) for t in times)
  except Exception:  # pylint: disable=broad-except
    return empty
  key_items, size = sample.get("key_items"), sample.get("image_size")
  items_ok, names, kinds, boxes = [], [], [], []
  for frame in frames:
    try:
      objects = key_items[str(frame["idx"])]
      obj_names = tuple(objects.keys())
      obj_boxes = [list(objects[name]) for name in obj_names]
    except Exception:  # pylint: disable=broad-except
      items_ok.append(False)
      names.append(())
      kinds.append(())
      boxes.append(())
      continue
    scaled = [[_scale_gt_box(b, size) for b in obj] for obj in obj_boxes]
    items_ok.append(all(isinstance(n, str) for n in obj_names))
    names.append(tuple(n if isinstance(n, str) else str(n) for n in obj_names))
    kinds.append(tuple(tuple(k for k, _ in obj) for obj in scaled))
    boxes.append(tuple(tuple(v for _, v in obj) for obj in scaled))
  return KeyFrameTargets(True, times, tuple(items_ok), tuple(names), tuple(kinds), tuple(boxes))


def _vqa_targets(sample: Mapping[str, Any]) -> tuple[bool, int, np.ndarray]:
  """The GT box of the answer, rescaled from image_size to image_size_refine pixels."""
  answer = sample.get("answer")
  box_text = next(scan.box_groups(answer), None) if isinstance(answer, str) else None
  if box_text is None:
    return False, int(parsing.GtKind.PAD), np.zeros(4)
  ok, box = parsing.load_json(box_text)
  if not ok:
    return False, int(parsing.GtKind.PAD), np.zeros(4)
  try:
    size, refine = sample.get("image_size"), sample.get("image_size_refine")
    box = list(box) if isinstance(box, list) else box
    box[0] = box[0] * refine[0] / size[0]
    box[1] = box[1] * refine[1] / size[1]
    box[2] = box[2] * refine[0] / size[0]
    box[3] = box[3] * refine[1] / size[1]
  except Exception:  # pylint: disable=broad-except
    return True, int(parsing.GtKind.PREP_RAISES), np.zeros(4)
  kind, values = parsing.classify_gt_box(box)
  return True, int(kind), values


def prepare(sample: Mapping[str, Any], index: int) -> SampleTargets:
  """Ground truth of one sample; raises ValueError only for an unknown task string."""
  if not isinstance(sample, Mapping):
    raise ValueError(f"sample {index}: expected a dict of record fields, got {type(sample).__name__}")
  task = validate_task(sample.get("task"), index)
  answer = sample.get("answer")
  try:
    step_percent = float(sample.get("step_percent", 1.0))
  except (TypeError, ValueError):
    raise ValueError(  # pylint: disable=raise-missing-from
        f"sample {index}: step_percent must be a number, got {sample.get('step_percent')!r}")
  mcq_letter = None
  if task == TASK_TG_MCQ:
    try:
      mcq_letter = answer.split("\n")[0].strip()
    except Exception:  # pylint: disable=broad-except
      mcq_letter = None
  segment_ok, segment, tiou_segment = _segment_targets(task, answer)
  needs_frames = task == TASK_ST
  vqa_found, vqa_kind, vqa_box = _vqa_targets(sample) if task == TASK_VQA else (
      False, int(parsing.GtKind.PAD), np.zeros(4))
  return SampleTargets(
      task=task,
      step_percent=step_percent,
      answer_text=parsing.extract_answer(f"<answer>{answer}</answer>"),
      mcq_letter=mcq_letter,
      segment_ok=segment_ok,
      segment=segment,
      tiou_segment=tiou_segment,
      key_frames=_key_frame_targets(sample) if needs_frames else None,
      vqa_gt_found=vqa_found,
      vqa_gt_kind=vqa_kind,
      vqa_gt_box=vqa_box,
  )
