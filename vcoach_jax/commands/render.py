"""`vcoach render`: draw the visual prompts on a video's key frames, as PNGs to look at."""

from __future__ import annotations

import argparse

from vcoach_jax import config as config_lib

HELP = "draw the visual prompts on a video's key frames and write PNGs (and a contact sheet)"
DESCRIPTION = """\
Decode a video as training does (the config's `video.*`), take the key frames of one STGR record
(its key-frame JPEGs when given, else the sampled frame nearest each key time, resized to the
frame size) and draw each visual prompt on them (docs/design.md §8.5): darken, circle, numbers,
attention. Writes OUT/<id>_kf<k>_<type>.png per key frame and type, and OUT/<id>_sheet.png, a
contact sheet with one row per key frame and one column per type in the order printed.

The record is a JSON object in the STGR schema (a JSON array or JSONL of records with --id);
its `video_path` is ignored in favour of --video, and key-frame JPEG paths are relative to the
video's folder. Boxes are each key frame's own (`prompting.per_key_frame_boxes`); --all-boxes
draws every box of the record on every key frame, as the released darken helper did. `numbers`
writes each key frame's position in the prompt's frame list.

examples:
  vcoach render --video clip.mp4 --record rec.json --out /tmp/prompts
  vcoach render --video clip.mp4 --record recs.jsonl --id 17 --type darken --type circle --out out
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--video", required=True, metavar="PATH", help="the video file")
  parser.add_argument("--record", required=True, metavar="REC.json",
                      help="STGR record: a JSON object, or an array / JSONL with --id")
  parser.add_argument("--id", default=None, help="record id to use from a file of several")
  parser.add_argument("--type", dest="types", action="append", default=[], metavar="TYPE",
                      help="prompt type to draw: all (default), raw, darken, circle, numbers, "
                      "attention (repeatable)")
  parser.add_argument("--all-boxes", action="store_true",
                      help="draw every box of the record on every key frame (the reference)")
  parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
  config_lib.add_config_flags(parser)


def _types(values: list[str]) -> list[str]:
  from vcoach_jax.prompting import visual_prompts  # pylint: disable=g-import-not-at-top
  types = visual_prompts.PROMPT_TYPES
  if not values or "all" in values:
    return list(types)
  for v in values:
    if v not in types:
      raise ValueError(f"--type {v!r}: expected all or one of {types}")
  return list(dict.fromkeys(values))


def _record(path: str, rid: str | None) -> dict:
  from vcoach_jax.data import records as records_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from vcoach_jax import storage  # pylint: disable=g-import-not-at-top
  if not storage.path(path).exists():
    raise FileNotFoundError(f"record file {path!r} does not exist")
  text = storage.read_text(path)
  try:
    raw = json.loads(text)
    raws = [raw] if isinstance(raw, dict) else raw
  except json.JSONDecodeError:
    raws = tfds_stgr.read_json_records(path)
  if rid is not None:
    raws = [r for r in raws if isinstance(r, dict) and str(r.get("id")) == str(rid)]
    if not raws:
      raise ValueError(f"record file {path!r} has no record with id {rid!r}")
  if len(raws) != 1:
    raise ValueError(f"record file {path!r} holds {len(raws)} records; choose one with --id")
  if isinstance(raws[0], Exception):
    raise ValueError(f"record file {path!r}: {raws[0]}")
  return records_lib.validate_record(raws[0], where=f"file {path}, ")


def run(args: argparse.Namespace) -> int:
  import os  # pylint: disable=g-import-not-at-top

  from PIL import Image  # pylint: disable=g-import-not-at-top

  from vcoach_jax import plots  # pylint: disable=g-import-not-at-top
  from vcoach_jax import storage  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import video as video_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import hints  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import visual_prompts as vp  # pylint: disable=g-import-not-at-top

  config = config_lib.load(args.config, args.overrides)
  types = _types(args.types)
  if not os.path.isfile(args.video):
    raise FileNotFoundError(f"video {args.video!r} does not exist")
  record = _record(args.record, args.id)
  if not record["key_frames"]:
    raise ValueError(f"record id {record['id']!r} has no key_frames to draw on")
  folder = os.path.dirname(os.path.abspath(args.video))
  record = dict(record, source="", video_path=os.path.basename(args.video))
  example = tfds_stgr.decode_record(record, {"": folder},
                                    video_lib.VideoSpec.from_config(config.video),
                                    where=f"file {args.record}, ")
  options = hints.PromptOptions.from_config(config.prompting, config.video.timestamps)
  positions = hints.key_frame_numbers(example, options.timestamps)
  per_frame = options.per_key_frame_boxes and not args.all_boxes
  drawn = {kind: vp.prompt_key_frames(record, example["key_frames"], kind, positions,
                                      per_key_frame_boxes=per_frame,
                                      darken_factor=options.darken_factor,
                                      darken_pad=options.darken_pad) for kind in types}
  rid = "".join(c if c.isalnum() or c in "-_." else "_" for c in record["id"])
  written = []
  for kind in types:
    for k, image in enumerate(drawn[kind]):
      path = os.fspath(storage.path(args.out) / f"{rid}_kf{k}_{kind}.png")
      storage.write_png(path, Image.fromarray(image))
      written.append(path)
  sheet = plots.contact_sheet([[drawn[kind][k] for kind in types]
                         for k in range(len(record["key_frames"]))])
  sheet_path = os.fspath(storage.path(args.out) / f"{rid}_sheet.png")
  storage.write_png(sheet_path, Image.fromarray(sheet))
  h, w = example["key_frames"].shape[1:3]
  print(f"record {record['id']}: {len(record['key_frames'])} key frames of {w}x{h} px "
        f"at positions {positions}; wrote {len(written)} PNGs to {args.out}")
  print(f"contact sheet {sheet_path}: rows = key frames, columns = {', '.join(types)}")
  return 0
