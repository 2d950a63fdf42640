"""`vcoach prepare`: good records all present, bad ones counted by reason, --strict, resume."""

import os

os.environ.setdefault("USE_TF", "0")

import argparse
import json
import pathlib
import re
import shutil

import numpy as np
import pytest

from vcoach_jax.commands import prepare as prepare_command
from vcoach_jax.data import records
from vcoach_jax.data import tfds_stgr

CLIP = pathlib.Path(__file__).parent / "data" / "example_22s_640x360.mp4"
ST = "temporal-spatial free-form QA"
ITEMS = {"40": {"man": [[0.1, 0.2, 0.5, 0.9]]}}


def _media(root: pathlib.Path):
  from PIL import Image
  (root / "v").mkdir(parents=True)
  (root / "kf").mkdir()
  shutil.copy(CLIP, root / "v" / "a.mp4")
  shutil.copy(CLIP, root / "v" / "first.mp4")
  (root / "v" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x07" * 4000)
  Image.fromarray(np.full((360, 640, 3), 200, np.uint8)).save(root / "kf" / "a_40.jpg")
  Image.fromarray(np.full((596, 336, 3), 90, np.uint8)).save(root / "img.png")


GOOD = [
    {"id": "first", "task": "temporal QA", "video_path": "v/first.mp4", "question": "When?",
     "answer": "[1.0, 4.0]"},
    {"id": "st", "task": ST, "video_path": "v/a.mp4", "question": "What does he hold?",
     "answer": "a cup", "key_frames": [{"idx": 40, "time": 1.8, "path": "kf/a_40.jpg"}],
     "key_items": ITEMS, "reasoning_process": "r"},
    {"id": "vqa", "task": "visual QA", "image_path": "img.png", "question": "Where?",
     "answer": "<obj>cup</obj><box>[10, 20, 100, 200]</box>", "image_size": [336, 596]},
    {"id": "mcq", "task": "General video QA MCQ", "video_path": "v/a.mp4", "question": "Q? A. x",
     "answer": "A"},
]
BAD = {
    "corrupt": ({"id": "corrupt", "task": "temporal QA", "video_path": "v/corrupt.mp4",
                 "question": "q", "answer": "[1, 2]"}, "corrupt_media"),
    "missing": ({"id": "missing", "task": "temporal QA", "video_path": "v/nothere.mp4",
                 "question": "q", "answer": "[1, 2]"}, "missing_media"),
    "arity": ({"id": "arity", "task": ST, "video_path": "v/a.mp4", "question": "q",
               "answer": "a", "key_frames": [{"idx": 40, "time": 1.8, "path": ""}],
               "key_items": {"40": {"man": [[0.1, 0.2, 0.5]]}}}, "bad_box"),
    "range": ({"id": "range", "task": ST, "video_path": "v/a.mp4", "question": "q",
               "answer": "a", "key_frames": [{"idx": 40, "time": 1.8, "path": ""}],
               "key_items": {"40": {"man": [[0.1, 0.2, 1.5, 0.9]]}}}, "bad_box"),
    "task": ({"id": "task", "task": "video QA", "video_path": "v/a.mp4", "question": "q",
              "answer": "a"}, "unknown_task"),
    "late": ({"id": "late", "task": ST, "video_path": "v/a.mp4", "question": "q", "answer": "a",
              "key_frames": [{"idx": 40, "time": 60.0, "path": ""}], "key_items": ITEMS},
             "key_frame_past_end"),
}


def _write(path: pathlib.Path, recs, extra_lines=()):
  path.write_text("\n".join([json.dumps(r) for r in recs] + list(extra_lines)) + "\n")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("media")
  _media(root)
  recs = [GOOD[0], BAD["corrupt"][0], GOOD[1], BAD["missing"][0], BAD["arity"][0], GOOD[2],
          BAD["range"][0], BAD["task"][0], GOOD[3], BAD["late"][0], dict(GOOD[3], question="dup")]
  src = root / "stgr.jsonl"
  _write(src, recs, ['{"id": "cut", "task": '])
  out = tmp_path_factory.mktemp("out")
  # Interrupted (Ctrl-C) while decoding the third record: the resumed run takes the first two
  # verdicts from the first run's work files and decodes only the others.
  real_decode, calls = tfds_stgr.decode_record, []

  def interrupted(*args, **kwargs):
    calls.append(args[0]["id"])
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real_decode(*args, **kwargs)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tfds_stgr, "decode_record", interrupted)
    with pytest.raises(KeyboardInterrupt):
      tfds_stgr.prepare(str(src), {"": str(root)}, str(out), progress=False)
    assert calls == ["first", "corrupt", "st"]
    result = tfds_stgr.prepare(str(src), {"": str(root)}, str(out), progress=False)
  assert calls[3:] == ["st", "missing", "vqa", "mcq", "late"]  # the others fail validation
  return root, src, out, result


def test_bad_records_counted_by_reason(prepared):
  _, _, _, result = prepared
  assert result.written == 4
  assert result.resumed == 2  # "first" and "corrupt" had verdicts before the interruption
  assert dict(result.skipped) == {"corrupt_media": 1, "missing_media": 1, "bad_box": 2,
                                  "unknown_task": 1, "key_frame_past_end": 1, "bad_json": 1,
                                  "duplicate_id": 1}
  table = result.table()
  assert re.search(r"^bad_box\s+2$", table, re.M) and re.search(r"^total\s+12$", table, re.M)


def test_good_records_all_present(prepared):
  _, _, out, _ = prepared
  ds = tfds_stgr.load(str(out)).as_dataset(split="train")
  examples = {e["id"].decode(): e for e in ds.as_numpy_iterator()}
  assert set(examples) == {"first", "st", "vqa", "mcq"}
  st = examples["st"]
  assert st["frames"].shape == (16, 224, 420, 3) and st["frames"].dtype == np.uint8
  assert st["key_frames"].shape == (1, 224, 420, 3) and abs(int(st["key_frames"].mean()) - 200) <= 1
  np.testing.assert_allclose(st["timestamps"], np.round(np.linspace(0, 490, 16)) / 22.29, atol=1e-3)
  np.testing.assert_array_equal(st["image_size"], [420, 224])
  assert json.loads(st["key_items"]) == ITEMS and st["key_frame_times"][0] == pytest.approx(1.8)
  assert st["video_sample_fps"] == pytest.approx(16 / 491 * 22.29, rel=1e-3)
  assert st["question"].decode() == "What does he hold?" and st["reasoning_process"] == b"r"
  vqa = examples["vqa"]
  assert vqa["frames"].shape == (1, 588, 336, 3)
  np.testing.assert_array_equal(vqa["image_size"], [336, 596])
  np.testing.assert_array_equal(vqa["image_size_refine"], [336, 588])


def test_strict_stops_with_the_record_id(prepared, tmp_path):
  root, _, _, _ = prepared
  src = tmp_path / "s.json"
  src.write_text(json.dumps([GOOD[3], BAD["arity"][0], GOOD[1]]))
  parser = argparse.ArgumentParser()
  prepare_command.add_arguments(parser)
  args = parser.parse_args(["--json", str(src), "--media-root", str(root), "--out",
                            str(tmp_path / "o"), "--strict", "--no-progress"])
  with pytest.raises(records.RecordError, match=r"record id 'arity': field "
                     r"\"key_items\['40'\]\['man'\]\[0\]\" = \[0.1, 0.2, 0.5\]"):
    prepare_command.run(args)


def test_cli_summary(prepared, tmp_path, capsys):
  root, _, _, _ = prepared
  src = tmp_path / "c.json"
  src.write_text(json.dumps([GOOD[3], BAD["missing"][0]]))
  parser = argparse.ArgumentParser()
  prepare_command.add_arguments(parser)
  args = parser.parse_args(["--json", str(src), "--media-root", f"other={tmp_path}",
                            "--media-root", str(root), "--out", str(tmp_path / "o"),
                            "--no-progress"])
  assert prepare_command.run(args) == 0
  out = capsys.readouterr().out
  assert re.search(r"^written\s+1$", out, re.M) and re.search(r"^missing_media\s+1$", out, re.M)
  assert re.search(r"^total\s+2$", out, re.M)


def test_strict_after_a_lenient_run_still_stops(prepared):
  root, src, out, _ = prepared
  with pytest.raises(records.RecordError, match=r"record id 'corrupt': field 'video_path'"):
    tfds_stgr.prepare(str(src), {"": str(root)}, str(out), progress=False, strict=True)
