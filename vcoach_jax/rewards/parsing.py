"""Completion text -> parsed claims, times, boxes (host side).

This is the only place where reward-relevant text is parsed. Every pattern and every conversion
mirrors the released reward code (docs/rewards.md §0-§7), including its quirks: the time tag
needs a trailing `s`, a claim is dropped when one of its boxes is bad JSON, Python `float()`
accepts `nan`/`inf`/`1_0`, and a box is converted to float the way numpy does it. The patterns
below state the syntax; blocks, boxes and claims are found by `scan`, linear-time scanners that
find exactly what the patterns would, without their backtracking.

The results are plain Python objects; `vcoach_jax.rewards.packing` turns them into fixed-shape
arrays for the jitted kernels.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from typing import Any

import numpy as np

from vcoach_jax.rewards import scan

# --- Patterns (docs/rewards.md §0). Compiled once; shared by every reward. ---
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
ANSWER_BLOCK_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
ANSWER_ANY_RE = re.compile(r"<answer>.*?</answer>", re.DOTALL)
ANSWER_TEXT_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
THINK_TIME_RE = re.compile(r"<t>([\d.]+)</t>s")
ANSWER_SEGMENT_RE = re.compile(r"<t>(\d+\.?\d*)</t>s to <t>(\d+\.?\d*)</t>s")
BOX_RE = re.compile(r"<box>(\[.*?\])</box>")
NAMED_BOX_RE = re.compile(r"<obj>(\w+)</obj><box>(\[.*?\])</box>")
CLAIM_RE = re.compile(r"<obj>(.*?)</obj>((?:<box>\[.*?\]</box>)+)at<t>(.*?)</t>s", re.DOTALL)
CLAIM_BOX_RE = re.compile(r"\[.*?\]")


class BoxKind(enum.IntEnum):
  """How the reference's `calculate_iou` treats a predicted box (the `boxB` argument).

  PAD: no box (padding). OK: four floats. ARITY: not a list of exactly four items, IoU 0 before
  anything is converted. CONV_FAIL: numpy cannot convert it (None, 'abc', a dict): IoU 0.
  RAISES: the conversion or the arithmetic raises an error the reference does not catch (an
  integer too large for a float, four nested lists of length != 1).
  """
  PAD = 0
  OK = 1
  ARITY = 2
  CONV_FAIL = 3
  RAISES = 4


class GtKind(enum.IntEnum):
  """How a ground-truth box (`boxA` of `calculate_iou`) behaves.

  PAD: none. OK: four floats. CONV_FAIL: numpy cannot convert it (IoU 0). CONV_RAISES: its
  conversion raises an uncaught error (only reached when the prediction passes the arity check).
  PREP_RAISES: the coordinate conversion before `calculate_iou` raises (wrong arity, no image
  size): raises as soon as the box is visited.
  """
  PAD = 0
  OK = 1
  CONV_FAIL = 2
  CONV_RAISES = 3
  PREP_RAISES = 4


def _to_float_array(value: Any) -> tuple[str, np.ndarray | None]:
  """numpy's float conversion, classified: ('ok', arr) | ('fail', None) | ('raise', None)."""
  try:
    return "ok", np.array(value, dtype=float)
  except (ValueError, TypeError, IndexError):
    return "fail", None
  except Exception:  # pylint: disable=broad-except  (OverflowError, RecursionError, ...)
    return "raise", None


def _flat4(arr: np.ndarray) -> tuple[bool, np.ndarray | None]:
  """(usable, values) for a converted array as the reference's scalar max/min would see it.

  A 1-D array of length >= 4 uses its first four values. A 2-D+ array of four rows works only
  when every row holds exactly one value (numpy allows the truth value of a size-1 array).
  """
  if arr.ndim == 1 and arr.shape[0] >= 4:
    return True, arr[:4].astype(np.float64)
  if arr.ndim >= 2 and arr.shape[0] >= 4 and arr[0].size == 1 and all(
      arr[i].size == 1 for i in range(4)):
    return True, np.array([arr[i].reshape(()) for i in range(4)], dtype=np.float64)
  return False, None


def classify_pred_box(box: Any) -> tuple[BoxKind, np.ndarray]:
  """Classifies a parsed (JSON) predicted box; returns its kind and 4 float64 values."""
  zeros = np.zeros(4, np.float64)
  if not (isinstance(box, list) and len(box) == 4):
    return BoxKind.ARITY, zeros
  status, arr = _to_float_array(box)
  if status == "fail":
    return BoxKind.CONV_FAIL, zeros
  if status == "raise":
    return BoxKind.RAISES, zeros
  usable, values = _flat4(arr)
  if not usable:
    return BoxKind.RAISES, zeros
  return BoxKind.OK, values


def classify_gt_box(box: Any) -> tuple[GtKind, np.ndarray]:
  """Classifies a ground-truth box already converted to pixels (a Python list)."""
  zeros = np.zeros(4, np.float64)
  status, arr = _to_float_array(box)
  if status == "fail":
    return GtKind.CONV_FAIL, zeros
  if status == "raise":
    return GtKind.CONV_RAISES, zeros
  usable, values = _flat4(arr)
  if not usable:
    # Indexing a short 1-D box raises inside calculate_iou, outside its try block.
    return GtKind.CONV_RAISES, zeros
  return GtKind.OK, values


def load_json(text: str) -> tuple[bool, Any]:
  """json.loads that never raises: (ok, value)."""
  try:
    return True, json.loads(text)
  except Exception:  # pylint: disable=broad-except  (JSONDecodeError, RecursionError, ...)
    return False, None


@dataclasses.dataclass(frozen=True)
class Claim:
  """One `<obj>NAME</obj><box>[..]</box>..at<t>TIME</t>s` claim of a think block."""
  name: str  # stripped, case kept
  time: float  # Python float(): may be nan / inf
  boxes: tuple[Any, ...]  # JSON values of the boxes (lists), in order


@dataclasses.dataclass(frozen=True)
class ParsedCompletion:
  """Everything the seven rewards read from one completion."""
  think: str | None  # first think block, None if absent
  has_answer_block: bool  # `<answer>(.*?)</answer>` present (thk_spatial precondition)
  answer: str  # extracted answer text ('' if absent)
  think_times: tuple[float, ...]  # time tags of the think block; () if any failed float()
  claims: tuple[Claim, ...]  # parsed claims of the think block (dropped ones excluded)
  think_boxes: tuple[Any, ...]  # JSON values of every `<box>[..]</box>` in the think block
  answer_segment: tuple[float, float] | None  # `<t>a</t>s to <t>b</t>s` in the answer
  answer_box: tuple[bool, Any] | None  # (json ok, value) of the answer's first box; None: none


def extract_answer(text: str) -> str:
  """The first `<answer>` block's text, stripped; '' when there is none (`ANSWER_TEXT_RE`: its
  `\\s*` on both sides and the final strip() remove the same whitespace)."""
  content = scan.block(text, "<answer>", "</answer>")
  return content.strip() if content is not None else ""


def parse_times(think: str) -> tuple[float, ...]:
  """Time tags of a think block; all-or-nothing: one failing float() empties the list."""
  try:
    return tuple(float(m) for m in THINK_TIME_RE.findall(think))
  except ValueError:
    return ()


def parse_claims(think: str) -> tuple[Claim, ...]:
  """Grounded claims, left to right; a claim with a bad time or a bad box is dropped."""
  claims = []
  for name, run, time_text in scan.claim_matches(think):
    try:
      time = float(time_text.strip())
    except ValueError:
      continue
    boxes = []
    for box_text in scan.bracketed(run):
      ok, value = load_json(box_text)
      if not ok:
        break
      boxes.append(value)
    else:
      claims.append(Claim(name=name.strip(), time=time, boxes=tuple(boxes)))
  return tuple(claims)


def parse_think_boxes(think: str) -> tuple[Any, ...]:
  """JSON values of all boxes in a think block (the VQA path); bad JSON is skipped."""
  boxes = []
  for box_text in scan.box_groups(think):
    ok, value = load_json(box_text)
    if ok:
      boxes.append(value)
  return tuple(boxes)


def parse_answer_segment(answer: str) -> tuple[float, float] | None:
  """`<t>a</t>s to <t>b</t>s` in the answer; None when absent or inverted (end < start)."""
  match = ANSWER_SEGMENT_RE.search(answer)
  if not match:
    return None
  start, end = float(match.group(1)), float(match.group(2))
  if end < start:
    return None
  return start, end


def parse_answer_box(answer: str) -> tuple[bool, Any] | None:
  """The first `<box>[..]</box>` of the answer as (json ok, value); None when absent."""
  box_text = next(scan.box_groups(answer), None)
  return None if box_text is None else load_json(box_text)


def parse_completion(text: str) -> ParsedCompletion:
  """Parses one completion; never raises on any string."""
  if not isinstance(text, str):
    text = "" if text is None else str(text)
  think = scan.block(text, "<think>", "</think>")
  answer = extract_answer(text)
  return ParsedCompletion(
      think=think,
      has_answer_block=scan.block(text, "<answer>", "</answer>") is not None,
      answer=answer,
      think_times=parse_times(think) if think is not None else (),
      claims=parse_claims(think) if think is not None else (),
      think_boxes=parse_think_boxes(think) if think is not None else (),
      answer_segment=parse_answer_segment(answer),
      answer_box=parse_answer_box(answer),
  )


def name_match(pred: str, gt: str, mode: str) -> bool:
  """Identity filter between a claim's object name and a GT object name.

  `none`: every object; `strict`: equal after lower()+strip(); `soft`: equal, a substring either
  way, or a shared whitespace-separated word (an empty claim name is a substring of anything).
  """
  if mode == "none":
    return True
  pred, gt = pred.lower().strip(), gt.lower().strip()
  if mode == "strict":
    return pred == gt
  if pred == gt or pred in gt or gt in pred:
    return True
  return bool(set(pred.split()) & set(gt.split()))
