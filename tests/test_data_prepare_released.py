"""`vcoach prepare` on a tree laid out as the released STGR trainers read it: video roots and
key-frame roots per source, all six tasks, visual-QA key items as {name: boxes}, a box at 1.0004,
key frames out of time order, a time float32 cannot hold."""

import os

os.environ.setdefault("USE_TF", "0")

import json
import re

import numpy as np
import pytest
from PIL import Image

import video_testutil
from vcoach_jax import cli
from vcoach_jax.data import tfds_stgr

ST, VQA = "temporal-spatial free-form QA", "visual QA"
T_KEY = 2.0000001  # float32 rounds it to 2.0: the other side of the reward's 1-second gate
SMALL = ["--set", "video.pixels_factor=4", "--set", "video.image_max_pixels=12544"]
RECORDS = [
    {"id": "st-str", "task": ST, "source": "STR_vidstg", "video_path": "a/tg.avi",
     "question": "What does the dog do?", "answer": "it runs",
     "key_frames": [{"idx": 8, "time": T_KEY, "path": "k/f1.jpg"},
                    {"idx": 2, "time": 0.5, "path": "k/f0.jpg"}],
     "key_items": {"2": {"dog": [[0.1, 0.2, 0.5, 1.0004]]},
                   "8": {"dog": [[0.2, 0.2, 0.6, 0.9]], "cat": None}, "9": None},
     "reasoning_process": "<obj>dog</obj><box>[0.2,0.2,0.6,0.9]</box>at<t>2.0</t>s"},
    {"id": "st-plm", "task": ST, "source": "STR_plm_rdcap", "video_path": "plm.avi",
     "question": "Who waves?", "answer": "the man",
     "key_frames": [{"idx": 4, "time": 1.25, "path": "k/f1.jpg"}],
     "key_items": {"4": {"man": [[0.0, 0.0, 0.4, 0.5]]}}},
    {"id": "st-ve", "task": ST, "source": "videoespresso_train_video", "video_path": "ve.avi",
     "question": "What is on the table?", "answer": "a cup",
     "key_frames": [{"idx": 1, "time": 0.25, "path": "k/f1.jpg"}],
     "key_items": {"1": {"cup": [[0.3, 0.3, 0.5, 0.6]]}}},
    {"id": "tg", "task": "temporal QA", "source": "TVG_r1", "video_path": "tvg.avi",
     "question": "When does the door open?", "answer": "[0.5, 2.0]"},
    {"id": "tg-mcq", "task": "temporal QA (MCQ)", "source": "timerft", "video_path": "trft.avi",
     "question": "When? A. early B. late", "answer": "B\n[1.0, 2.5]"},
    {"id": "vqa", "task": VQA, "source": "gqa", "image_path": "g1.jpg", "image_size": [200, 120],
     "question": "Where is the cup?", "answer": "<obj>cup</obj><box>[10, 20, 100, 90]</box>",
     "key_items": {"cup": [[0.05, 0.1667, 0.5, 0.75]], "plate": None}},
    {"id": "mcq", "task": "General video QA MCQ", "source": "videor1_mcq", "video_path": "gen.avi",
     "question": "Colour? A. red B. blue C. grey", "answer": "C"},
    {"id": "free", "task": "General video QA Free-form", "source": "videor1_free",
     "video_path": "gen.avi", "question": "What happens?", "answer": "the screen brightens"},
]
KEY_FRAME_LEVEL = {"": 60, "STR_plm": 120, "videoespresso_train_video": 180}


def _jpeg(path, level, size=(64, 48)):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.full((size[1], size[0], 3), level, np.uint8)).save(path)


def released_tree(root):
  """DATA/videos/... as the released trainers' roots name it; returns (json, flags)."""
  v = root / "videos"
  media = {"gqa": v / "gqa", "timerft": v / "timerft", "TVG": v / "tvg_r1",
           "videor1": v / "videor1", "STR": v / "stgr/temporal_grounding/videos",
           "STR_plm": v / "stgr/plm/videos",
           "videoespresso_train_video": v / "videoespresso/videos"}
  keys = {"": v / "stgr/temporal_grounding/kfs", "STR_plm": v / "stgr/plm/kfs",
          "videoespresso_train_video": v / "videoespresso/kfs"}
  clips = {media["STR"] / "a/tg.avi": 0, media["STR_plm"] / "plm.avi": 20,
           media["videoespresso_train_video"] / "ve.avi": 40, media["TVG"] / "tvg.avi": 60,
           media["timerft"] / "trft.avi": 80, media["videor1"] / "gen.avi": 100}
  for path, start in clips.items():  # 12 frames at 4 fps: 3 s
    path.parent.mkdir(parents=True, exist_ok=True)
    video_testutil.write_avi(path, video_testutil.ramp_frames(12, start=start), fps=4.0)
  for source, folder in keys.items():
    for name in ("k/f0.jpg", "k/f1.jpg"):
      _jpeg(folder / name, KEY_FRAME_LEVEL[source])
  _jpeg(media["gqa"] / "g1.jpg", 30, size=(200, 120))
  src = root / "json_data" / "STGR-RL.json"
  src.parent.mkdir()
  src.write_text(json.dumps(RECORDS))
  flags = [f for s, d in media.items() for f in ("--media-root", f"{s}={d}")]
  flags += [f for s, d in keys.items() for f in ("--key-frame-root", f"{s}={d}" if s else str(d))]
  return src, flags


@pytest.fixture(scope="module")
def released(tmp_path_factory):
  root = tmp_path_factory.mktemp("DATA")
  src, flags = released_tree(root)
  return root, src, flags


def _run(args, capsys):
  rc = cli.main(["prepare", "--no-progress"] + SMALL + args)
  out, err = capsys.readouterr()
  return rc, out, err


def _examples(out, split="train"):
  ds = tfds_stgr.load(str(out)).as_dataset(split=split)
  return {e["id"].decode(): e for e in ds.as_numpy_iterator()}


def test_released_layout_every_record_kept(released, tmp_path, capsys):
  _, src, flags = released
  out = tmp_path / "out"
  rc, table, err = _run(["--json", str(src), "--out", str(out)] + flags, capsys)
  assert rc == 0, err
  assert re.search(r"^written\s+8$", table, re.M), table
  assert re.search(r"^total\s+8$", table, re.M) and re.search(r"^clipped_box\s+1\b", table, re.M)
  assert "earlier" not in table
  ex = _examples(out)
  assert set(ex) == {r["id"] for r in RECORDS}
  for r in RECORDS:
    e = ex[r["id"]]
    assert (e["task"].decode(), e["answer"].decode(), e["question"].decode()) == (
        r["task"], r["answer"], r["question"])
    assert e["source"].decode() == r["source"]
    assert e["timestamps"].dtype == np.float64 and e["key_frame_times"].dtype == np.float64
    assert e["video_duration"].dtype == np.float64 and e["video_sample_fps"].dtype == np.float64
  # Key frames in the record's order (not sorted by time), the time exactly as written.
  st = ex["st-str"]
  assert np.float32(T_KEY) == 2.0 and st["key_frame_times"].tolist() == [T_KEY, 0.5]
  assert st["key_frame_idx"].tolist() == [8, 2]
  assert json.loads(st["key_items"]) == {"2": {"dog": [[0.1, 0.2, 0.5, 1.0]]},
                                         "8": {"dog": [[0.2, 0.2, 0.6, 0.9]]}}
  # 12 frames at 4 fps -> 6 sampled at indices round(linspace(0, 11, 6)), times idx / 4.
  assert st["timestamps"].tolist() == [0.0, 0.5, 1.0, 1.75, 2.25, 2.75]
  assert float(st["video_duration"]) == 3.0 and float(st["video_sample_fps"]) == 2.0
  # Each key frame is the JPEG under its source's key-frame root, resized to the frame size.
  for rid, source in (("st-str", ""), ("st-plm", "STR_plm"),
                      ("st-ve", "videoespresso_train_video")):
    k = ex[rid]["key_frames"]
    assert k.shape[1:] == ex[rid]["frames"].shape[1:]
    assert abs(float(k.mean()) - KEY_FRAME_LEVEL[source]) < 3, rid
  # Each video from its source's root (the clips start at different grey levels).
  assert abs(float(ex["st-plm"]["frames"][0].mean()) - 20) < 3
  assert abs(float(ex["tg-mcq"]["frames"][0].mean()) - 80) < 3
  vqa = ex["vqa"]
  assert json.loads(vqa["key_items"]) == {"0": {"cup": [[0.05, 0.1667, 0.5, 0.75]]}}
  assert vqa["image_size"].tolist() == [200, 120] and vqa["frames"].shape[0] == 1


def test_second_split_into_the_same_out(released, tmp_path, capsys):
  _, src, flags = released
  out = tmp_path / "out"
  assert _run(["--json", str(src), "--out", str(out)] + flags, capsys)[0] == 0
  held = tmp_path / "held_out.json"
  held.write_text(json.dumps([dict(RECORDS[3], id="tg-eval"), RECORDS[6]]))
  rc, table, _ = _run(["--json", str(held), "--out", str(out), "--split", "eval"] + flags, capsys)
  assert rc == 0 and re.search(r"^written\s+2$", table, re.M)
  assert set(_examples(out, "eval")) == {"tg-eval", "mcq"}
  assert len(_examples(out, "train")) == 8
  # Preparing train again (unchanged) keeps eval, decodes nothing, writes nothing, says so.
  info = tfds_stgr.dataset_dir(out) / "dataset_info.json"
  os.utime(info, (1, 1))
  rc, table, _ = _run(["--json", str(src), "--out", str(out)] + flags, capsys)
  assert os.stat(info).st_mtime == 1  # the dataset in place was already the one to write
  assert rc == 0 and "(8 unchanged records reused from an earlier run)" in table
  assert "interrupted" not in table
  assert set(_examples(out, "eval")) == {"tg-eval", "mcq"} and len(_examples(out, "train")) == 8
  assert not list((out / "_work").glob("build-*")) and not list((out / "_work").glob("old-*"))


def test_rerun_redoes_exactly_the_changed_records(released, tmp_path, capsys, monkeypatch):
  root, _, flags = released
  bad = dict(RECORDS[3], answer="[2.0, 0.5]")  # end before start
  late = dict(RECORDS[4], video_path="later.avi")  # its video is added afterwards
  src = tmp_path / "r.jsonl"
  src.write_text("\n".join(json.dumps(r) for r in (bad, late, RECORDS[6])) + "\n")
  out = tmp_path / "out"
  rc, table, err = _run(["--json", str(src), "--out", str(out)] + flags, capsys)
  assert rc == 0 and re.search(r"^bad_answer\s+1$", table, re.M)
  assert re.search(r"^missing_media\s+1$", table, re.M) and table.startswith("outcome")
  # Fix the answer, add the video: both are evaluated again, the third is not decoded again.
  src.write_text("\n".join(json.dumps(r) for r in (RECORDS[3], late, RECORDS[6])) + "\n")
  video_testutil.write_avi(root / "videos/timerft/later.avi", video_testutil.ramp_frames(12), 4.0)
  decoded, real = [], tfds_stgr.decode_record
  monkeypatch.setattr(tfds_stgr, "decode_record",
                      lambda record, *a, **k: decoded.append(record["id"]) or real(record, *a, **k))
  rc, table, _ = _run(["--json", str(src), "--out", str(out)] + flags, capsys)
  assert rc == 0 and re.search(r"^written\s+3$", table, re.M), table
  assert sorted(decoded) == ["tg", "tg-mcq"]
  assert "(1 unchanged records reused from an earlier run)" in table and "interrupted" not in table
  assert set(_examples(out)) == {"tg", "tg-mcq", "mcq"}
  # A changed video config changes every key: all records are decoded again.
  decoded.clear()
  rc, table, _ = _run(["--json", str(src), "--out", str(out), "--set", "video.max_frames=8"]
                      + flags, capsys)
  assert rc == 0 and sorted(decoded) == ["mcq", "tg", "tg-mcq"] and "earlier" not in table
  # Only the work files the dataset uses are left.
  assert len(list((out / "_work" / "records").iterdir())) == 3


def test_interrupted_run_says_so(released, tmp_path, capsys, monkeypatch):
  _, src, flags = released
  out = tmp_path / "out"
  real, calls = tfds_stgr.decode_record, []

  def interrupted(record, *a, **k):
    calls.append(record["id"])
    if len(calls) == 3:
      raise KeyboardInterrupt
    return real(record, *a, **k)

  monkeypatch.setattr(tfds_stgr, "decode_record", interrupted)
  (out / "_work").mkdir(parents=True)  # work files of the earlier layout: removed
  for name in ("status.jsonl", "0123abcd.npz"):
    (out / "_work" / name).write_text("{}")
  assert _run(["--json", str(src), "--out", str(out)] + flags, capsys)[0] == 130
  assert not any((out / "_work" / name).exists() for name in ("status.jsonl", "0123abcd.npz"))
  monkeypatch.setattr(tfds_stgr, "decode_record", real)
  rc, table, _ = _run(["--json", str(src), "--out", str(out)] + flags, capsys)
  assert rc == 0 and "(2 records taken from an earlier interrupted run)" in table
  assert len(_examples(out)) == 8


@pytest.mark.parametrize("case", ["folder", "no_media_root", "no_valid_record", "missing_json",
                                  "no_root_for_source"])
def test_one_clear_line(released, tmp_path, capsys, case):
  _, src, flags = released
  args = {"folder": ["--json", str(tmp_path)] + flags,
          "no_media_root": ["--json", str(src)],
          "no_valid_record": ["--json", str(tmp_path / "bad.json")] + flags,
          "missing_json": ["--json", str(tmp_path / "nothere.json")] + flags,
          "no_root_for_source": ["--json", str(tmp_path / "vqa.json"), "--media-root", "STR=/x"]
          }[case]
  (tmp_path / "vqa.json").write_text(json.dumps([RECORDS[5]]))
  (tmp_path / "bad.json").write_text(json.dumps([dict(RECORDS[3], answer="later")]))
  rc, out, err = _run(args + ["--out", str(tmp_path / "o")], capsys)
  assert rc == 2 and "Traceback" not in err
  line = err.strip().splitlines()[-1]
  expected = {"folder": f"records file {tmp_path} is a folder",
              "no_media_root": "--media-root is required: the folder the video/image paths of "
                               f"{src}",
              "no_valid_record": f"file {tmp_path / 'bad.json'}: no valid record among 1 "
                                 "(bad_answer 1); nothing written for split 'train'",
              "missing_json": f"records file {tmp_path / 'nothere.json'} does not exist",
              "no_root_for_source": "no valid record among 1 (no_media_root 1)"}[case]
  assert line.startswith("vcoach prepare: error: ") and expected in line, err


def test_no_progress_silences_tfds_bars(released, tmp_path, capfd):
  _, src, flags = released
  one = tmp_path / "one.json"
  one.write_text(json.dumps([RECORDS[6]]))
  base = ["prepare", "--json", str(one)] + SMALL + flags
  assert cli.main(base + ["--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
  quiet = capfd.readouterr().err
  assert cli.main(base + ["--out", str(tmp_path / "loud")]) == 0
  loud = capfd.readouterr().err
  assert "Generating" in loud and "Generating" not in quiet and "rec/s" not in quiet


def test_root_for_longest_source_prefix():
  roots = {"": "/fallback", "STR": "/str", "STR_plm": "/plm", "gqa": "/gqa"}
  assert tfds_stgr.root_for(roots, "STR_plm_rdcap") == "/plm"
  assert tfds_stgr.root_for(roots, "STR_vidstg") == "/str"
  assert tfds_stgr.root_for(roots, "gqa") == "/gqa"
  assert tfds_stgr.root_for(roots, "videor1") == "/fallback"
  assert tfds_stgr.root_for(roots, "") == "/fallback"
  assert tfds_stgr.root_for({"STR": "/str"}, "gqa") is None
