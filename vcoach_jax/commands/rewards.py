"""`vcoach rewards`: score a JSONL file of completions with the seven rewards."""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import sys
from typing import Any, Callable, Iterator, NamedTuple

from vcoach_jax import config as config_lib
from vcoach_jax import storage

HELP = "score a JSONL of completions with the seven rewards"
DESCRIPTION = """\
Score completions with the seven VisionCoach rewards (docs/rewards.md).

Each input line is a JSON record with the sample fields
  task, answer, key_frames, key_items, image_size, image_size_refine, step_percent
plus `completion` (the model's text) and optionally `id`. Each output line is the input record
with `rewards` (the seven rewards) and `total` (their sum) added. The reward options come from
the config (`rewards.*`); --record-options uses a record's own `options` field when it has one.

Every line is checked before it is scored (docs/rewards.md, "Input records"): valid UTF-8 and
JSON, the required strings, the types inside image_size / key_frames / key_items, finite
numbers (a key-frame time, step_percent >= 0), a known task, and under --record-options a valid
`options` object. A bad line is reported with its line number and field, skipped and counted;
--strict stops at the first one, after writing the good records before it, and exits 2.

--out is written under a temporary name and renamed into place when complete, so an interrupted
run never leaves a partial file; an --out that is the input file is refused before reading.

examples:
  vcoach rewards vcoach_jax/assets/example_completions.jsonl --out scored.jsonl
  vcoach rewards in.jsonl --set rewards.spatial_iou_mode=max --set rewards.identity_match_mode=none
"""

REQUIRED_FIELDS = ("task", "answer", "completion")  # strings
BATCH = 256


class RecordError(ValueError):
  """A malformed input line; the message names the line, the record id and the field."""

  def __init__(self, message: str, reason: str):
    super().__init__(message)
    self.reason = reason  # what is counted in the summary: the field name, "json" or "encoding"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("input", metavar="INPUT.jsonl", help="records with a `completion` field")
  parser.add_argument("--out", metavar="OUT.jsonl", default=None,
                      help="write the scored records here, atomically (default: only print the "
                           "summary); must not be the input file")
  parser.add_argument("--strict", action="store_true",
                      help="stop at the first malformed line (the records before it are written)")
  parser.add_argument("--record-options", action="store_true",
                      help="use a record's own `options` field when present (validated per line)")
  config_lib.add_config_flags(parser)


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


def _where(record: dict[str, Any], line_no: int) -> str:
  return f"line {line_no}" + (f" (id {record['id']!r})" if "id" in record else "")


def validate_record(record: Any, line_no: int, record_options: bool = False) -> Item:
  """Checks one parsed line; raises RecordError naming the line, id and field."""
  if not isinstance(record, dict):
    raise RecordError(f"line {line_no}: expected a JSON object, got {type(record).__name__}",
                      "json")
  where = _where(record, line_no)
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


def _reject(e: RecordError, path: storage.Path, strict: bool, skipped: collections.Counter
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
        _reject(e, path, strict, skipped)


def _summary(rows: list[tuple[str, dict[str, float], float]]) -> str:
  from vcoach_jax.rewards import REWARD_NAMES  # pylint: disable=g-import-not-at-top
  by_task: dict[str, list] = collections.defaultdict(list)
  for task, values, total in rows:
    by_task[task].append((values, total))
    by_task["(all)"].append((values, total))
  short = {"ans_acc": "acc", "ans_tiou": "tiou", "ans_viou": "viou", "thk_temporal_point": "t_pt",
           "thk_temporal_segment": "t_seg", "thk_spatial": "spat", "format": "fmt"}
  header = f"{'task':<32}{'n':>6}" + "".join(f"{short[n]:>7}" for n in REWARD_NAMES) + f"{'total':>8}"
  lines = [header, "-" * len(header)]
  for task in sorted(by_task, key=lambda t: (t == "(all)", t)):
    items = by_task[task]
    means = [math.fsum(v[name] for v, _ in items) / len(items) for name in REWARD_NAMES]
    total = math.fsum(t for _, t in items) / len(items)
    lines.append(f"{task:<32}{len(items):>6}" + "".join(f"{m:>7.3f}" for m in means)
                 + f"{total:>8.3f}")
  return "\n".join(lines)


def _scorer(default_options: dict[str, Any], shapes: Any, stats: Any
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


def run(args: argparse.Namespace) -> int:
  import tqdm  # pylint: disable=g-import-not-at-top
  from vcoach_jax import rewards  # pylint: disable=g-import-not-at-top

  path = storage.path(args.input)
  if args.out:
    storage.refuse_same_file(args.out, [path], flag="--out")
  config = config_lib.load(args.config, args.overrides)
  stats = rewards.RewardStats()
  score = _scorer(config_lib.reward_options(config), rewards.Shapes.from_config(config.rewards),
                  stats)
  if not path.is_file():
    raise FileNotFoundError(f"input file {path} does not exist")
  with path.open("rb") as f:
    n_lines = sum(1 for line in f if line.strip())

  skipped: collections.Counter = collections.Counter()
  rows: list[tuple[str, dict[str, float], float]] = []
  bar = tqdm.tqdm(total=n_lines, unit="rec", file=sys.stderr, disable=n_lines < 1000,
                  desc="rewards")
  stop: RecordError | None = None
  out_context = storage.atomic_open(args.out) if args.out else contextlib.nullcontext()
  with bar, out_context as out:

    batch: list[Item] = []

    def flush() -> None:
      """Scores and writes the pending batch in input order. A non-finite reward (possible only
      from non-finite numbers inside the answer text) makes its line a bad line."""
      items = batch[:]
      batch.clear()
      for item, (values, total) in zip(items, score(items)):
        bad = [name for name, v in values.items() if not math.isfinite(v)]
        if bad or not math.isfinite(total):
          _reject(RecordError(f"{_where(item.record, item.line_no)}: reward(s) {bad} are not "
                              "finite (non-finite numbers in the record's answer?)", "reward"),
                  path, args.strict, skipped)
          continue
        rows.append((item.record["task"], values, total))
        if out:
          out.write(json.dumps({**item.record, "rewards": values, "total": total}) + "\n")
      bar.update(len(items))

    try:
      for item in read_records(path, args.strict, skipped, args.record_options):
        batch.append(item)
        if len(batch) == BATCH:
          flush()
    except RecordError as e:  # --strict: the good records before the bad line are still written
      stop = e
    try:
      flush()
    except RecordError as e:  # --strict and a non-finite reward before `stop`'s line
      stop = e

  if rows:
    print(_summary(rows))
  print(f"\nscored {len(rows)} record(s) from {path}" + (f" -> {args.out}" if args.out else ""))
  if skipped:
    print(f"skipped {sum(skipped.values())} malformed line(s): "
          + ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())))
  if stats.raised:
    print("reference-raises events (scored 0): "
          + ", ".join(f"{k}: {v}" for k, v in sorted(stats.raised.items())))
  if stop:
    raise stop
  return 0
