"""Input records of `vcoach rewards`: the checks of each JSONL line (docs/rewards.md, "Input
records"), the batched scorer and the per-task summary table.

  for item in records.read_records(path, strict=False, skipped=counter):   # good lines only
    ...
  score = records.scorer(options, rewards.Shapes.from_config(config.rewards), stats)
  print(records.summary_table(rows))

A bad line raises `RecordError` naming the line, the record id and the field (its `reason`, the
field, "json" or "encoding", is what the summary counts).
"""

from __future__ import annotations

import collections
import json
import math
import sys
from typing import Any, Callable, Iterator, NamedTuple

from vcoach_jax import storage

REQUIRED_FIELDS = ("task", "answer", "completion")  # strings


class RecordError(ValueError):
  """A malformed input line; the message names the line, the record id and the field."""

  def __init__(self, message: str, reason: str):
    super().__init__(message)
    self.reason = reason  # what is counted in the summary: the field name, "json" or "encoding"


# --- Per-field checks: each returns None when the value is good, else (path inside the field,
# what was expected, the offending value).
Bad = tuple[str, str, Any]


def _finite(x: Any) -> bool:
  if not isinstance(x, (int, float)) or isinstance(x, bool):
    return False
  try:
    return math.isfinite(x)
  except OverflowError:  # an integer too large for a float
    return False


def _check_size(value: Any) -> Bad | None:
  if value is None or (isinstance(value, list) and len(value) == 2
                       and all(_finite(v) and v > 0 for v in value)):
    return None
  return "", "null or [width, height], two finite numbers > 0", value


def _check_key_frames(value: Any) -> Bad | None:
  if value is None:
    return None
  if not isinstance(value, list):
    return "", "null or a list of {idx, time} objects", value
  for i, frame in enumerate(value):
    if not isinstance(frame, dict):
      return f"[{i}]", "an object with `idx` and `time`", frame
    if not _finite(frame.get("time")):
      return f"[{i}].time", "a finite number (seconds)", frame.get("time")
    idx = frame.get("idx")
    if not isinstance(idx, (int, str)) or isinstance(idx, bool):
      return f"[{i}].idx", "an integer or a string (a key of key_items)", idx
  return None


def _check_key_items(value: Any) -> Bad | None:
  if value is None:
    return None
  if not isinstance(value, dict):
    return "", "null or an object {frame idx: {object name: [boxes]}}", value
  for idx, objects in value.items():
    if not isinstance(objects, dict):
      return f"[{idx!r}]", "an object {object name: [boxes]}", objects
    for name, boxes in objects.items():
      where = f"[{idx!r}][{name!r}]"
      if not isinstance(boxes, list):
        return where, "a list of boxes", boxes
      for b, box in enumerate(boxes):
        if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)):
          return f"{where}[{b}]", "a box [x1, y1, x2, y2] of four finite numbers", box
  return None


def _check_step_percent(value: Any) -> Bad | None:
  if _finite(value) and value >= 0:
    return None
  return "", "a finite number >= 0 (training progress)", value


def _check_options(value: Any) -> Bad | None:
  return None if isinstance(value, dict) else ("", "an object of reward options", value)


CHECKS = (("image_size", _check_size), ("image_size_refine", _check_size),
          ("key_frames", _check_key_frames), ("key_items", _check_key_items),
          ("step_percent", _check_step_percent), ("options", _check_options))


def _first_bad(record: dict[str, Any]) -> tuple[str, Bad] | None:
  """(field, (path, expected, value)) of the first bad field of a record, or None."""
  for field in REQUIRED_FIELDS:
    if field not in record:
      return field, ("", "a string; the field is missing", None)
    if not isinstance(record[field], str):
      return field, ("", "a string", record[field])
  from vcoach_jax.rewards import TASKS  # pylint: disable=g-import-not-at-top
  if record["task"] not in TASKS:
    return "task", ("", f"expected one of {list(TASKS)}", record["task"])
  for field, check in CHECKS:
    bad = check(record[field]) if field in record else None
    if bad:
      return field, bad
  return None


def _shown(value: Any) -> str:
  """A value as it reads in the JSON line, shortened."""
  try:
    text = json.dumps(value)
  except (TypeError, ValueError):
    text = repr(value)
  return text if len(text) <= 80 else text[:77] + "..."


class Item(NamedTuple):
  """A good input line: its number, the record, and its validated options (--record-options)."""
  line_no: int
  record: dict[str, Any]
  options: dict[str, Any] | None


def line_label(record: dict[str, Any], line_no: int) -> str:
  """`line N` and the record's id when it has one, as messages name a line."""
  return f"line {line_no}" + (f" (id {record['id']!r})" if "id" in record else "")


def validate_record(record: Any, line_no: int, record_options: bool = False) -> Item:
  """Checks one parsed line; raises RecordError naming the line, id and field."""
  if not isinstance(record, dict):
    raise RecordError(f"line {line_no}: expected a JSON object, got {type(record).__name__}",
                      "json")
  where = line_label(record, line_no)
  bad = _first_bad(record)
  if bad:
    field, (inner, expected, value) = bad
    if field not in record:
      raise RecordError(f"{where}: field {field!r} is missing", field)
    if field == "task":
      raise RecordError(f"{where}: field 'task' has unknown value {value!r}; {expected}",
                        field)
    raise RecordError(f"{where}: field {field + inner!r} must be {expected}, got {_shown(value)}",
                      field)
  options = None
  if record_options and "options" in record:
    from vcoach_jax.rewards import validate_options  # pylint: disable=g-import-not-at-top
    try:
      options = validate_options(record["options"])
    except ValueError as e:
      raise RecordError(f"{where}: field 'options': {e}", "options") from e
  return Item(line_no, record, options)


def _decoded(raw: bytes, line_no: int) -> str:
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise RecordError(f"line {line_no}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                      f"{e.start + 1})", "encoding") from e


def reject(e: RecordError, path: storage.Path, strict: bool, skipped: collections.Counter
           ) -> None:
  """A bad line: raises (naming the file) when strict, else reports it on stderr and counts it."""
  if strict:
    raise RecordError(f"{path}: {e}", e.reason) from e
  print(f"{path}: skipped {e}", file=sys.stderr)
  skipped[e.reason] += 1


def read_records(path: storage.Path, strict: bool, skipped: collections.Counter,
                 record_options: bool = False) -> Iterator[Item]:
  """Yields each good line. A bad one is reported on stderr and counted in `skipped`, or raises
  RecordError (naming the file) when `strict`."""
  with path.open("rb") as f:
    for line_no, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      try:
        line = _decoded(raw, line_no)
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise RecordError(f"line {line_no}: not valid JSON ({e.msg} at column {e.colno})",
                            "json") from e
        except RecursionError as e:
          raise RecordError(f"line {line_no}: not valid JSON (nested too deeply)", "json") from e
        yield validate_record(record, line_no, record_options)
      except RecordError as e:
        reject(e, path, strict, skipped)


def summary_table(rows: list[tuple[str, dict[str, float], float]]) -> str:
  """Mean of each reward and of the total per task and over all, from (task, rewards, total)."""
  from vcoach_jax.rewards import REWARD_NAMES  # pylint: disable=g-import-not-at-top
  by_task: dict[str, list] = collections.defaultdict(list)
  for task, values, total in rows:
    by_task[task].append((values, total))
    by_task["(all)"].append((values, total))
  short = {"ans_acc": "acc", "ans_tiou": "tiou", "ans_viou": "viou", "thk_temporal_point": "t_pt",
           "thk_temporal_segment": "t_seg", "thk_spatial": "spat", "format": "fmt"}
  header = (f"{'task':<32}{'n':>6}" + "".join(f"{short[n]:>7}" for n in REWARD_NAMES)
            + f"{'total':>8}")
  lines = [header, "-" * len(header)]
  for task in sorted(by_task, key=lambda t: (t == "(all)", t)):
    items = by_task[task]
    means = [math.fsum(v[name] for v, _ in items) / len(items) for name in REWARD_NAMES]
    total = math.fsum(t for _, t in items) / len(items)
    lines.append(f"{task:<32}{len(items):>6}" + "".join(f"{m:>7.3f}" for m in means)
                 + f"{total:>8.3f}")
  return "\n".join(lines)


def scorer(default_options: dict[str, Any], shapes: Any, stats: Any
           ) -> Callable[[list[Item]], list[tuple[dict[str, float], float]]]:
  """A function scoring a batch of items, grouped by their options; results in input order."""
  from vcoach_jax import rewards  # pylint: disable=g-import-not-at-top

  def score(batch):
    groups = collections.defaultdict(list)
    for position, item in enumerate(batch):
      groups[json.dumps(item.options or default_options, sort_keys=True)].append(position)
    results: list[tuple[dict[str, float], float]] = [({}, 0.0)] * len(batch)
    for key, positions in groups.items():
      group = [batch[p].record for p in positions]
      scores, batch_stats = rewards.compute_with_stats(
          [r["completion"] for r in group], group, json.loads(key), shapes)
      stats.merge(batch_stats)
      totals = rewards.total(scores, [r["task"] for r in group])
      for i, position in enumerate(positions):
        values = {name: float(scores[name][i]) for name in rewards.REWARD_NAMES}
        results[position] = (values, float(totals[i]))
    return results

  return score
