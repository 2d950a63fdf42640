"""`vcoach prepare`: STGR json + videos -> a TFDS dataset of decoded, resized frames."""

from __future__ import annotations

import argparse
import sys

from vcoach_jax import config as config_lib

HELP = "decode STGR records and their videos into a TFDS dataset (or write the synthetic world)"
DESCRIPTION = """\
Turn STGR-format records (a JSON array or JSONL) plus their media into a TFDS dataset of decoded,
resized frames, key frames with their boxes, question, answer, task and metadata, so training
never decodes video. Frame sampling and resizing follow the config's `video.*`. The record
schema and the released data's layout are in docs/data.md.

Roots. A record's `video_path` / `image_path` is relative to its media root, and the `path` of
each of its key frames (the temporal-spatial task's JPEGs) to its key-frame root. Both flags are
repeatable: `SOURCE=DIR` applies to the records whose `source` equals SOURCE or starts with it
(the longest such SOURCE wins), a DIR without `SOURCE=` to every other record. A record with no
key-frame root uses its media root for its key frames.

Bad records (missing or undecodable media, wrong box arity, a box coordinate more than 0.01
outside 0..1, unknown task, a key frame past the video's end, malformed JSON, a duplicate id) are
skipped, logged and counted by reason in the summary table; --strict stops at the first one with
its message (file, record id, field, value, what was expected). A box coordinate at most 0.01
outside 0..1 (annotation rounding, e.g. 1.0004) is clipped into it and the record kept (counted
as clipped_box). Visual-QA `key_items` may be {object name: [boxes]} without the frame level.

Reruns. Work files are keyed on each record's content, its media files' size and modification
time and the video config: a rerun (after an interruption, a fixed record or an added video)
evaluates only the records that changed. Several splits go into one --out (--split eval after
--split train: both are in the dataset).

The released STGR data, laid out as its trainers read it (DATA/videos/...):
  vcoach prepare --json DATA/json_data/STGR-RL.json --out /data/stgr_rl \\
    --media-root gqa=DATA/videos/gqa          --media-root timerft=DATA/videos/timerft \\
    --media-root TVG=DATA/videos/tvg_r1       --media-root videor1=DATA/videos/videor1 \\
    --media-root STR=DATA/videos/stgr/temporal_grounding/videos \\
    --media-root STR_plm=DATA/videos/stgr/plm/videos \\
    --media-root videoespresso_train_video=DATA/videos/videoespresso/videos \\
    --key-frame-root DATA/videos/stgr/temporal_grounding/kfs \\
    --key-frame-root STR_plm=DATA/videos/stgr/plm/kfs \\
    --key-frame-root videoespresso_train_video=DATA/videos/videoespresso/kfs

other examples:
  vcoach prepare --json a.jsonl --media-root /data --media-root charades=/data/charades --out out
  vcoach prepare --json held_out.json --media-root /data --out out --split eval
  vcoach prepare --synthetic --out /tmp/world --set synthetic.num_train=256
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--json", metavar="FILE", help="STGR records: a JSON array or JSONL")
  parser.add_argument("--media-root", action="append", default=[], metavar="[SOURCE=]DIR",
                      help="folder the records' video/image paths are relative to; SOURCE= "
                      "limits it to records whose source starts with SOURCE (repeatable)")
  parser.add_argument("--key-frame-root", action="append", default=[], metavar="[SOURCE=]DIR",
                      help="folder the key frames' JPEG paths are relative to; SOURCE= as for "
                      "--media-root (repeatable; default: the record's media root)")
  parser.add_argument("--out", required=True, metavar="DIR",
                      help="output folder (local or gs://...)")
  parser.add_argument("--split", default="train", help="split name to write (default: train)")
  parser.add_argument("--strict", action="store_true",
                      help="stop at the first bad record instead of skipping it")
  parser.add_argument("--synthetic", action="store_true",
                      help="write the synthetic world of the config (`synthetic.*`) instead")
  parser.add_argument("--no-progress", action="store_true",
                      help="no progress bars (ours and TFDS's)")
  config_lib.add_config_flags(parser)


def _roots(values: list[str], flag: str) -> dict[str, str]:
  roots = {}
  for value in values:
    source, sep, path = value.partition("=")
    if not sep:
      source, path = "", value
    if not path:
      raise ValueError(f"{flag} {value!r}: expected DIR or SOURCE=DIR")
    if source in roots and roots[source] != path:
      whose = f"source {source!r}" if source else "the fallback"
      raise ValueError(f"{flag}: two folders for {whose}: {roots[source]!r} and {path!r}")
    roots[source] = path
  return roots


def run(args: argparse.Namespace) -> int:
  import logging  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import prepare_stgr  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import video  # pylint: disable=g-import-not-at-top

  logging.basicConfig(level=logging.WARNING, format="%(message)s")
  config = config_lib.load(args.config, args.overrides)
  if args.synthetic:
    with tfds_stgr.tfds_progress(not args.no_progress):
      tfds_stgr.synthetic_from_config(config, args.out)
    s = config.synthetic
    print(f"wrote the synthetic world ({s.num_train} train, {s.num_eval} eval) to {args.out}")
    return 0
  if not args.json:
    raise ValueError("--json FILE is required (or use --synthetic)")
  if not args.media_root:
    raise ValueError(f"--media-root is required: the folder the video/image paths of {args.json} "
                     "are relative to (--media-root DIR, or SOURCE=DIR per source)")
  result = prepare_stgr.prepare(
      args.json, _roots(args.media_root, "--media-root"), args.out,
      video.VideoSpec.from_config(config.video), strict=args.strict,
      progress=not args.no_progress, split=args.split,
      key_frame_roots=_roots(args.key_frame_root, "--key-frame-root"))
  print(result.table())
  print(f"dataset: {tfds_stgr.dataset_dir(args.out)} (split {args.split!r})", file=sys.stderr)
  return 0
