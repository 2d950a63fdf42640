"""`vcoach rewards`: score a JSONL file of completions with the seven rewards (the line checks,
scorer and summary are `vcoach_jax.rewards.records`)."""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import sys

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

BATCH = 256


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


def run(args: argparse.Namespace) -> int:
  import tqdm  # pylint: disable=g-import-not-at-top
  from vcoach_jax import rewards  # pylint: disable=g-import-not-at-top
  from vcoach_jax.rewards import records  # pylint: disable=g-import-not-at-top

  path = storage.path(args.input)
  if args.out:
    storage.refuse_same_file(args.out, [path], flag="--out")
  config = config_lib.load(args.config, args.overrides)
  stats = rewards.RewardStats()
  score = records.scorer(config_lib.reward_options(config),
                         rewards.Shapes.from_config(config.rewards), stats)
  if not path.is_file():
    raise FileNotFoundError(f"input file {path} does not exist")
  with path.open("rb") as f:
    n_lines = sum(1 for line in f if line.strip())

  skipped: collections.Counter = collections.Counter()
  rows: list[tuple[str, dict[str, float], float]] = []
  bar = tqdm.tqdm(total=n_lines, unit="rec", file=sys.stderr, disable=n_lines < 1000,
                  desc="rewards")
  stop: records.RecordError | None = None
  out_context = storage.atomic_open(args.out) if args.out else contextlib.nullcontext()
  with bar, out_context as out:

    batch: list[records.Item] = []

    def flush() -> None:
      """Scores and writes the pending batch in input order. A non-finite reward (possible only
      from non-finite numbers inside the answer text) makes its line a bad line."""
      items = batch[:]
      batch.clear()
      for item, (values, total) in zip(items, score(items)):
        bad = [name for name, v in values.items() if not math.isfinite(v)]
        if bad or not math.isfinite(total):
          records.reject(records.RecordError(
              f"{records.line_label(item.record, item.line_no)}: reward(s) {bad} are not finite "
              "(non-finite numbers in the record's answer?)", "reward"), path, args.strict, skipped)
          continue
        rows.append((item.record["task"], values, total))
        if out:
          out.write(json.dumps({**item.record, "rewards": values, "total": total}) + "\n")
      bar.update(len(items))

    try:
      for item in records.read_records(path, args.strict, skipped, args.record_options):
        batch.append(item)
        if len(batch) == BATCH:
          flush()
    except records.RecordError as e:  # --strict: the good records before it are still written
      stop = e
    try:
      flush()
    except records.RecordError as e:  # --strict and a non-finite reward before `stop`'s line
      stop = e

  if rows:
    print(records.summary_table(rows))
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
