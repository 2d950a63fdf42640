"""The STGR record schema (docs/data.md) and its validation.

A record is a JSON object:

  id                 str or int, unique in its file
  task               one of TASKS
  source             str, selects the media root (optional: "" = the root itself)
  video_path | image_path   relative to the media root
  question           str, used verbatim
  answer             str: free text; an option letter; "[s, e]" (temporal QA); letter + "\\n" +
                     "[s, e]" (temporal MCQ); "<obj>name</obj><box>[x1,y1,x2,y2]</box>" in
                     pixels of the original image (visual QA)
  key_frames         [{idx, time, path}] (temporal-spatial task; optional elsewhere); `path` is
                     relative to the key-frame root; the list order is kept as given
  key_items          {str(idx): {object_name: [[x1,y1,x2,y2] in 0..1, ...]}}; null entries dropped.
                     Visual QA may use the released form {object_name: [[x1,y1,x2,y2], ...]}
                     (no frame level): it is stored as {"0": {object_name: [...]}}, the image
                     being frame 0. A coordinate at most BOX_TOLERANCE outside 0..1 (annotation
                     rounding, e.g. 1.0004) is clipped into it and counted as `clipped_box`.
  image_size         [W, H] (original size for images; replaced by the frame size for videos)
  reasoning_process  str, the SFT target (optional)
  sft_answer         str, the answer as the SFT target writes it when it differs from `answer`
                     (e.g. "From <t>1.0</t>s to <t>3.0</t>s." for "[1.0, 3.0]"; optional)

`validate_record` returns a normalised copy or raises `RecordError`, whose `reason` is a short
code for counting (`missing_field`, `wrong_type`, `unknown_task`, `bad_answer`, `bad_box`,
`bad_key_frame`, ...) and whose message names the file, the record id, the field, the value and
what was expected.
"""

from __future__ import annotations

import ast
import collections
import json
import math
from typing import Any, Mapping

from vcoach_jax.rewards import scan  # the one box pattern of the project, in linear time
# The six task strings are defined once, with the rewards that score them.
from vcoach_jax.rewards.targets import (  # pylint: disable=g-importing-member
    TASK_FREE, TASK_MCQ, TASK_ST, TASK_TG, TASK_TG_MCQ, TASK_VQA, TASKS)

# How far outside 0..1 a normalised box coordinate may be and still be kept (clipped into 0..1).
BOX_TOLERANCE = 0.01


class RecordError(ValueError):
  """A record that cannot be used; `reason` is a short code for counting."""

  def __init__(self, reason: str, message: str, record_id: Any = None):
    super().__init__(message)
    self.reason = reason
    self.record_id = record_id


def _fail(reason: str, where: str, rid: Any, field: str, value: Any, expected: str):
  shown = json.dumps(value, default=str)
  if len(shown) > 120:
    shown = shown[:117] + "..."
  raise RecordError(reason, f"{where}record id {rid!r}: field {field!r} = {shown}: expected "
                    f"{expected}", rid)


def _is_num(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parse_segment(text: str) -> tuple[float, float] | None:
  """'[s, e]' -> (s, e) with 0 <= s <= e, or None."""
  try:
    value = ast.literal_eval(text.strip())
  except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    return None
  if (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_num(v) for v in value)
      and 0 <= value[0] <= value[1]):
    return float(value[0]), float(value[1])
  return None


def answer_box(answer: str) -> list[float] | None:
  """The first `<box>[x1,y1,x2,y2]</box>` of a visual-QA answer, or None."""
  box_text = next(scan.box_groups(answer), None)  # `parsing.BOX_RE`'s first group, linear time
  if box_text is None:
    return None
  try:
    box = json.loads(box_text)
  except json.JSONDecodeError:
    return None
  return box if isinstance(box, list) and len(box) == 4 and all(map(_is_num, box)) else None


def _check_answer(r: Mapping[str, Any], task: str, fail) -> None:
  answer = r["answer"]
  if task == TASK_TG and parse_segment(answer) is None:
    fail("bad_answer", "answer", answer, 'a segment "[start, end]" with 0 <= start <= end')
  if task == TASK_TG_MCQ:
    lines = answer.split("\n")
    if len(lines) < 2 or not lines[0].strip() or parse_segment(lines[1]) is None:
      fail("bad_answer", "answer", answer,
           'an option letter, a newline, then a segment "[start, end]" with 0 <= start <= end')
  if task == TASK_MCQ and not answer.strip():
    fail("bad_answer", "answer", answer, "an option letter")
  if task == TASK_VQA:
    box = answer_box(answer)
    if box is None:
      fail("bad_answer", "answer", answer, "<obj>name</obj><box>[x1,y1,x2,y2]</box>")
    w, h = r["image_size"]
    if not (0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h):
      fail("bad_box", "answer", answer, f"a box inside the {w}x{h} image with x1<=x2, y1<=y2")


def _clip_box(box: list[float]) -> list[float] | None:
  """`box` with coordinates at most BOX_TOLERANCE outside 0..1 clipped into it; None when one
  lies further out."""
  if not all(-BOX_TOLERANCE <= v <= 1 + BOX_TOLERANCE for v in box):
    return None
  return [min(max(float(v), 0.0), 1.0) for v in box]


def _check_boxes(boxes: Any, where: str, fail, counts) -> list[list[float]]:
  if not isinstance(boxes, list) or not boxes:
    fail("bad_box", where, boxes, "a non-empty list of boxes")
  out = []
  for b, box in enumerate(boxes):
    at = f"{where}[{b}]"
    if not isinstance(box, list) or len(box) != 4 or not all(map(_is_num, box)):
      fail("bad_box", at, box, "a box of 4 numbers [x1, y1, x2, y2]")
    clipped = _clip_box(box)
    if clipped is None or box[0] > box[2] or box[1] > box[3]:
      fail("bad_box", at, box, "coordinates normalised to 0..1 with x1<=x2, y1<=y2")
    if clipped != [float(v) for v in box]:
      counts["clipped_box"] += 1
    out.append(clipped)
  return out


def _is_flat_items(items: Mapping[str, Any]) -> bool:
  """True for the released visual-QA form {object name: [boxes]} (no frame level)."""
  values = [v for v in items.values() if v is not None]
  return bool(values) and all(isinstance(v, list) for v in values)


def _check_key_items(items: Any, task: str, fail, counts
                     ) -> dict[str, dict[str, list[list[float]]]]:
  if not isinstance(items, dict):
    fail("wrong_type", "key_items", items, "an object {frame idx: {object name: [boxes]}}")
  if task == TASK_VQA and _is_flat_items(items):
    kept = {str(name): _check_boxes(boxes, f"key_items[{name!r}]", fail, counts)
            for name, boxes in items.items() if boxes is not None}
    return {"0": kept}
  out = {}
  for idx, objects in items.items():
    if objects is None:
      continue
    if not isinstance(objects, dict):
      fail("wrong_type", f"key_items[{idx!r}]", objects, "an object {object name: [boxes]}"
           + (" (or, for visual QA, {object name: [boxes]} without the frame level)"
              if task == TASK_VQA else ""))
    out[str(idx)] = {str(name): _check_boxes(boxes, f"key_items[{idx!r}][{name!r}]", fail,
                                             counts)
                     for name, boxes in objects.items() if boxes is not None}
  return out


def _check_key_frames(frames: Any, items: Mapping[str, Any], fail) -> list[dict[str, Any]]:
  if not isinstance(frames, list):
    fail("wrong_type", "key_frames", frames, "a list of {idx, time, path}")
  out = []
  for i, kf in enumerate(frames):
    if not isinstance(kf, dict):
      fail("bad_key_frame", f"key_frames[{i}]", kf, "an object {idx, time, path}")
    for name in ("idx", "time"):
      if not _is_num(kf.get(name)) or kf[name] < 0:
        fail("bad_key_frame", f"key_frames[{i}].{name}", kf.get(name), "a number >= 0")
    if not isinstance(kf.get("path", ""), str):
      fail("bad_key_frame", f"key_frames[{i}].path", kf.get("path"), "a string path")
    idx = int(kf["idx"])
    if str(idx) not in items:
      fail("bad_key_frame", f"key_frames[{i}].idx", kf["idx"],
           f"a frame with boxes in key_items (it has {sorted(items)})")
    out.append({"idx": idx, "time": float(kf["time"]), "path": kf.get("path", "")})
  return out


def validate_record(raw: Any, *, where: str = "", index: int | None = None,
                    counts: collections.Counter | None = None) -> dict[str, Any]:
  """Checks one STGR record and returns a normalised copy (null key items dropped, id a str,
  visual-QA key items given the frame level, boxes a hair outside 0..1 clipped).

  Args:
    raw: the record as loaded from JSON.
    where: prefix for messages, e.g. "file data.json, " .
    index: position in the file, used as the id when the record has none.
    counts: if given, `counts["clipped_box"]` grows by the number of boxes clipped.

  Raises:
    RecordError: naming the record id, field, value and what was expected.
  """
  rid = raw.get("id", f"#{index}") if isinstance(raw, dict) else f"#{index}"

  def fail(reason, field, value, expected):
    _fail(reason, where, rid, field, value, expected)

  if not isinstance(raw, dict):
    fail("wrong_type", "(record)", raw, "a JSON object")
  for name in ("id", "task", "question", "answer"):
    if name not in raw:
      fail("missing_field", name, None, "the field to be present")
  if not isinstance(raw["id"], (str, int)) or isinstance(raw["id"], bool):
    fail("wrong_type", "id", raw["id"], "a string or an integer")
  task = raw["task"]
  if task not in TASKS:
    fail("unknown_task", "task", task, f"one of {list(TASKS)}")
  for name in ("question", "answer"):
    if not isinstance(raw[name], str):
      fail("wrong_type", name, raw[name], "a string")
  media = "image_path" if task == TASK_VQA else "video_path"
  if not isinstance(raw.get(media), str) or not raw[media]:
    fail("missing_field", media, raw.get(media), f"a path relative to the media root ({task})")
  size = raw.get("image_size")
  if task == TASK_VQA and (not isinstance(size, list) or len(size) != 2
                           or not all(_is_num(v) and v > 0 for v in size)):
    fail("wrong_type", "image_size", size, "[W, H] of the original image, positive numbers")
  _check_answer(raw, task, fail)
  counts = collections.Counter() if counts is None else counts
  items = _check_key_items(raw.get("key_items") or {}, task, fail, counts)
  frames = _check_key_frames(raw.get("key_frames") or [], items, fail)
  if task == TASK_ST and not frames:
    fail("bad_key_frame", "key_frames", raw.get("key_frames"),
         "at least one key frame for the temporal-spatial task")
  for name in ("source", "reasoning_process", "sft_answer"):
    if raw.get(name) is not None and not isinstance(raw[name], str):
      fail("wrong_type", name, raw[name], "a string")
  return {
      "id": str(raw["id"]), "task": task, "source": raw.get("source") or "",
      "video_path": raw.get("video_path") or "", "image_path": raw.get("image_path") or "",
      "question": raw["question"], "answer": raw["answer"], "key_frames": frames,
      "key_items": items, "image_size": list(size) if size else None,
      "reasoning_process": raw.get("reasoning_process") or "",
      "sft_answer": raw.get("sft_answer") or "",
  }


def check_against_video(record: Mapping[str, Any], duration: float, *, where: str = "") -> None:
  """Key frames must lie within the video (later ones than the last sampled frame but within
  the video are kept here and dropped at prompt time)."""
  rid = record["id"]
  for i, kf in enumerate(record["key_frames"]):
    if kf["time"] > duration:
      _fail("key_frame_past_end", where, rid, f"key_frames[{i}].time", kf["time"],
            f"a time within the video's {duration:.2f} s")


def reward_sample(record: Mapping[str, Any], frame_size: tuple[int, int],
                  refine_size: tuple[int, int] | None = None, step_percent: float = 1.0
                  ) -> dict[str, Any]:
  """The sample dict `vcoach_jax.rewards.compute` reads, from a record and its input size.

  For videos `image_size` becomes the resized frame's (W, H); for images it stays the original
  size and `image_size_refine` is the resized one.
  """
  is_image = record["task"] == TASK_VQA
  return {
      "task": record["task"], "answer": record["answer"],
      "key_frames": [dict(kf) for kf in record["key_frames"]],
      "key_items": record["key_items"],
      "image_size": list(record["image_size"]) if is_image else list(frame_size),
      "image_size_refine": list(refine_size or frame_size),
      "step_percent": float(step_percent),
  }
