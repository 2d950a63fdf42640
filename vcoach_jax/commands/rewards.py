"""`vcoach rewards`: score a JSONL file of completions with the seven rewards."""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys
from typing import Any, Iterator

from vcoach_jax import config as config_lib

HELP = "score a JSONL of completions with the seven rewards"
DESCRIPTION = """\
Score completions with the seven VisionCoach rewards (REWARDS.md).

Each input line is a JSON record with the sample fields
  task, answer, key_frames, key_items, image_size, image_size_refine, step_percent
plus `completion` (the model's text) and optionally `id`. Each output line is the input record
with `rewards` (the seven rewards) and `total` (their sum) added. The reward options come from
the config (`rewards.*`); --record-options uses a record's own `options` field when it has one.

A malformed line (bad JSON, a missing or wrongly typed field, an unknown task) is reported with
its line number and field, skipped and counted; --strict stops at the first one instead.

examples:
  vcoach rewards vcoach_jax/assets/example_completions.jsonl --out scored.jsonl
  vcoach rewards in.jsonl --set rewards.spatial_iou_mode=max --set rewards.identity_match_mode=none
"""

REQUIRED_FIELDS: dict[str, tuple[type, ...]] = {
    "task": (str,),
    "answer": (str,),
    "completion": (str,),
}
OPTIONAL_FIELDS: dict[str, tuple[type, ...]] = {
    "key_frames": (list, type(None)),
    "key_items": (dict, type(None)),
    "image_size": (list, type(None)),
    "image_size_refine": (list, type(None)),
    "step_percent": (int, float),
    "options": (dict,),
}
BATCH = 256


class RecordError(ValueError):
  """A malformed input line; the message names the line, the record id and the field."""

  def __init__(self, message: str, reason: str):
    super().__init__(message)
    self.reason = reason  # what is counted in the summary: the field name, or "json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("input", metavar="INPUT.jsonl", help="records with a `completion` field")
  parser.add_argument("--out", metavar="OUT.jsonl", default=None,
                      help="write the scored records here (default: only print the summary)")
  parser.add_argument("--strict", action="store_true",
                      help="stop at the first malformed line instead of skipping it")
  parser.add_argument("--record-options", action="store_true",
                      help="use a record's own `options` field when present")
  config_lib.add_config_flags(parser)


def validate_record(record: Any, line_no: int) -> dict[str, Any]:
  """Checks one parsed line; raises RecordError naming the line, id and field."""
  if not isinstance(record, dict):
    raise RecordError(f"line {line_no}: expected a JSON object, got {type(record).__name__}",
                      "json")
  where = f"line {line_no}" + (f" (id {record['id']!r})" if "id" in record else "")
  for field, types in REQUIRED_FIELDS.items():
    if field not in record:
      raise RecordError(f"{where}: field {field!r} is missing", field)
    if not isinstance(record[field], types):
      raise RecordError(f"{where}: field {field!r} must be a string, got {record[field]!r}",
                        field)
  for field, types in OPTIONAL_FIELDS.items():
    if field in record and not isinstance(record[field], types):
      names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
      raise RecordError(f"{where}: field {field!r} must be {names}, got {record[field]!r}",
                        field)
  from vcoach_jax.rewards import TASKS  # pylint: disable=g-import-not-at-top
  if record["task"] not in TASKS:
    raise RecordError(f"{where}: field 'task' has unknown value {record['task']!r}; "
                      f"expected one of {list(TASKS)}", "task")
  return record


def read_records(path: pathlib.Path, strict: bool, skipped: collections.Counter
                 ) -> Iterator[dict[str, Any]]:
  with path.open(encoding="utf-8") as f:
    for line_no, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise RecordError(f"line {line_no}: not valid JSON ({e.msg} at column {e.colno})",
                            "json") from e
        yield validate_record(record, line_no)
      except RecordError as e:
        if strict:
          raise RecordError(f"{path}: {e}", e.reason) from e
        print(f"{path}: skipped {e}", file=sys.stderr)
        skipped[e.reason] += 1


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
    means = [sum(v[name] for v, _ in items) / len(items) for name in REWARD_NAMES]
    total = sum(t for _, t in items) / len(items)
    lines.append(f"{task:<32}{len(items):>6}" + "".join(f"{m:>7.3f}" for m in means)
                 + f"{total:>8.3f}")
  return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
  import tqdm  # pylint: disable=g-import-not-at-top
  from vcoach_jax import rewards  # pylint: disable=g-import-not-at-top

  config = config_lib.load(args.config, args.overrides)
  default_options = config_lib.reward_options(config)
  shapes = rewards.Shapes.from_config(config.rewards)
  path = pathlib.Path(args.input)
  if not path.is_file():
    raise FileNotFoundError(f"input file {path} does not exist")
  n_lines = sum(1 for line in path.open(encoding="utf-8") if line.strip())

  skipped: collections.Counter = collections.Counter()
  stats = rewards.RewardStats()
  rows: list[tuple[str, dict[str, float], float]] = []
  out = open(args.out, "w", encoding="utf-8") if args.out else None  # pylint: disable=consider-using-with
  bar = tqdm.tqdm(total=n_lines, unit="rec", file=sys.stderr, disable=n_lines < 1000,
                  desc="rewards")

  def flush(batch: list[dict[str, Any]]) -> None:
    """Scores a batch (grouped by reward options) and writes it in input order."""
    groups = collections.defaultdict(list)
    for position, record in enumerate(batch):
      opts = record.get("options") if args.record_options and "options" in record else None
      groups[json.dumps(opts or default_options, sort_keys=True)].append(position)
    results: list[tuple[dict[str, float], float]] = [({}, 0.0)] * len(batch)
    for key, positions in groups.items():
      group = [batch[p] for p in positions]
      scores, batch_stats = rewards.compute_with_stats(
          [r["completion"] for r in group], group, json.loads(key), shapes)
      stats.merge(batch_stats)
      totals = rewards.total(scores, [r["task"] for r in group])
      for i, position in enumerate(positions):
        values = {name: float(scores[name][i]) for name in rewards.REWARD_NAMES}
        results[position] = (values, float(totals[i]))
    for record, (values, total) in zip(batch, results):
      rows.append((record["task"], values, total))
      if out:
        out.write(json.dumps({**record, "rewards": values, "total": total}) + "\n")
    if out:
      out.flush()
    bar.update(len(batch))

  try:
    batch: list[dict[str, Any]] = []
    for record in read_records(path, args.strict, skipped):
      batch.append(record)
      if len(batch) == BATCH:
        flush(batch)
        batch = []
    if batch:
      flush(batch)
  finally:
    bar.close()
    if out:
      out.close()

  if rows:
    print(_summary(rows))
  print(f"\nscored {len(rows)} record(s) from {path}" + (f" -> {args.out}" if args.out else ""))
  if skipped:
    print(f"skipped {sum(skipped.values())} malformed line(s): "
          + ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())))
  if stats.raised:
    print("reference-raises events (scored 0): "
          + ", ".join(f"{k}: {v}" for k, v in sorted(stats.raised.items())))
  return 0
