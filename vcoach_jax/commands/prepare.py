"""`vcoach prepare`: STGR json + videos -> a TFDS dataset of decoded, resized frames."""

from __future__ import annotations

import argparse
import sys

from vcoach_jax import config as config_lib

HELP = "decode STGR records and their videos into a TFDS dataset (or write the synthetic world)"
DESCRIPTION = """\
Turn STGR-format records (a JSON array or JSONL) plus their media into a TFDS dataset of decoded,
resized frames, key frames with their boxes, question, answer, task and metadata, so training
never decodes video (DESIGN.md §6). Frame sampling and resizing follow the config's `video.*`.

Bad records (missing or undecodable video, wrong box arity or range, unknown task, a key frame
past the video's end, malformed JSON) are skipped, logged and counted by reason in the summary
table; --strict stops at the first one with its message (file, record id, field, value, what
was expected). An interrupted run resumes where it stopped when run again with the same --out.

Media paths are relative to --media-root; a record whose `source` has its own root
(--media-root SOURCE=DIR) uses that one.

examples:
  vcoach prepare --json stgr_rl.json --media-root /data/videos --out /data/stgr_tfds
  vcoach prepare --json a.jsonl --media-root /data --media-root charades=/data/charades --out out
  vcoach prepare --synthetic --out /tmp/world --set synthetic.num_train=256
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--json", metavar="FILE", help="STGR records: a JSON array or JSONL")
  parser.add_argument("--media-root", action="append", default=[], metavar="[SOURCE=]DIR",
                      help="folder the records' media paths are relative to (repeatable)")
  parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
  parser.add_argument("--split", default="train", help="split name to write (default: train)")
  parser.add_argument("--strict", action="store_true",
                      help="stop at the first bad record instead of skipping it")
  parser.add_argument("--synthetic", action="store_true",
                      help="write the synthetic world of the config (`synthetic.*`) instead")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  config_lib.add_config_flags(parser)


def _roots(values: list[str]) -> dict[str, str]:
  roots = {}
  for value in values:
    source, sep, path = value.partition("=")
    if sep:
      roots[source] = path
    else:
      roots[""] = value
  return roots


def run(args: argparse.Namespace) -> int:
  import logging  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import video  # pylint: disable=g-import-not-at-top

  logging.basicConfig(level=logging.WARNING, format="%(message)s")
  config = config_lib.load(args.config, args.overrides)
  if args.synthetic:
    tfds_stgr.synthetic_from_config(config, args.out)
    s = config.synthetic
    print(f"wrote the synthetic world ({s.num_train} train, {s.num_eval} eval) to {args.out}")
    return 0
  if not args.json or not args.media_root:
    raise ValueError("--json and --media-root are required (or use --synthetic)")
  result = tfds_stgr.prepare(
      args.json, _roots(args.media_root), args.out, video.VideoSpec.from_config(config.video),
      strict=args.strict, progress=not args.no_progress, split=args.split)
  print(result.table())
  print(f"dataset: {args.out}/stgr/{tfds_stgr.VERSION}", file=sys.stderr)
  return 0
