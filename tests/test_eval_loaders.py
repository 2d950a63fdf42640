"""Benchmark loaders on tiny hand-written files in each public format, and their errors."""

import json

import pytest

from conftest import DATA_DIR
from vcoach_jax import config as config_lib
from vcoach_jax.evaluation import loaders
from vcoach_jax.rewards import targets

EVAL = DATA_DIR / "eval"


def test_vstar_both_box_layouts():
  a, b = loaders.load("vstar", EVAL / "vstar.json", video_dir="/videos")
  assert a.id == "5587257558_0" and a.video == "/videos/5587257558.mp4" and a.task == "vstar"
  assert a.answer == "a blue cup" and a.segment == (2.5, 6.0) and a.box_size == (640, 360)
  assert a.boxes == ((3.0, (100.0, 50.0, 200.0, 250.0)), (5.0, (120.0, 60.0, 220.0, 260.0)))
  assert a.duration == 18.0 and a.domain == "Daily Life"
  assert a.questions["when"].startswith("When does") and a.questions["object"] == "man in red shirt"
  assert b.boxes == ((11.0, (10.0, 20.0, 110.0, 220.0)),)  # the "<t>_<frame>" layout
  assert b.duration == 200.0


def test_charades_lines():
  items = loaders.load("charades", EVAL / "charades_sta_test.txt")
  assert [i.id for i in items] == ["3MSZA_1", "3MSZA_2", "AB12C_4"]
  assert items[0].segment == (24.3, 30.4) and items[0].question == "person turn a light on."
  assert items[0].task == targets.TASK_TG and items[0].video.endswith("eval/3MSZA.mp4")


def test_videomme_rows():
  a, b = loaders.load("videomme", EVAL / "videomme.jsonl")
  assert a.id == "001-1" and a.options == ("Four.", "Three.", "Two.", "Five.") and a.answer == "C"
  assert a.category == "Counting Problem" and a.domain == "Knowledge" and a.length == "short"
  assert a.video.endswith("fFjv93ACGo8.mp4") and b.answer == "B" and a.task == targets.TASK_MCQ


def test_worldsense_tasks():
  items = loaders.load("worldsense", EVAL / "worldsense_qa.json")
  assert [i.id for i in items] == ["vid_a_task0", "vid_a_task1", "vid_b_task0"]
  assert items[0].options == ("Tennis", "Golf", "Soccer", "Rugby") and items[0].answer == "C"
  assert items[1].category == "Object Counting" and items[0].duration == 75.0
  assert items[2].domain == "Music" and items[2].duration == 0.0


def test_videommmu_mcq_and_open():
  mcq, open_q = loaders.load("videommmu", EVAL / "Perception.json")
  assert mcq.answer == "B" and mcq.options[1] == "Tempera" and mcq.category == "Perception"
  assert open_q.task == targets.TASK_FREE and open_q.answer == "42" and not open_q.options


def test_perceptiontest_mc_questions():
  a, b = loaders.load("perceptiontest", EVAL / "perceptiontest_mc.json")
  assert a.id == "video_1001_0" and a.answer == "B" and a.options == (
      "open the box", "close the box", "leave")
  assert a.category == "physics" and a.domain == "predictive" and b.answer == "A"


def _bad(tmp_path, name, content, benchmark, *needles):
  path = tmp_path / name
  path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
  with pytest.raises(ValueError) as e:
    loaders.load(benchmark, path)
  for needle in (str(path),) + needles:
    assert needle in str(e.value), (needle, str(e.value))


def test_malformed_files_name_file_item_and_field(tmp_path):
  vstar = json.loads((EVAL / "vstar.json").read_text())
  bad = [dict(vstar[0], timestamps=[5, 1])]
  _bad(tmp_path, "v1.json", bad, "vstar", "5587257558_0", "'timestamps'")
  bad = [dict(vstar[0], bboxes=[{"timestamp": 3, "xmin": 1}])]
  _bad(tmp_path, "v2.json", bad, "vstar", "5587257558_0", "bboxes[0]", "xmax")
  bad = [{k: v for k, v in vstar[1].items() if k != "spatial_question_2"}]
  _bad(tmp_path, "v3.json", bad, "vstar", "clip2_0", "'spatial_question_2'", "missing")
  dup = dict(vstar[0], id="q1")
  _bad(tmp_path, "v4.json", [dup, dup], "vstar", "'q1'", "unique")
  _bad(tmp_path, "v5.json", {"not": "a list"}, "vstar", "list of entries")
  _bad(tmp_path, "c.txt", "vid 1.0 x##sentence\n", "charades", "vid_1", "start/end")
  _bad(tmp_path, "c2.txt", "vid 1.0 2.0 no separator\n", "charades", "vid_1", "sentence")
  row = json.loads((EVAL / "videomme.jsonl").read_text().splitlines()[0])
  _bad(tmp_path, "m.jsonl", json.dumps(dict(row, answer="E")), "videomme", "001-1", "'answer'")
  _bad(tmp_path, "m2.jsonl", json.dumps(dict(row, options=["A. only"])), "videomme", "'options'")
  _bad(tmp_path, "w.json", {"v": {"domain": "x"}}, "worldsense", "'v'", "task0")
  _bad(tmp_path, "p.json", {"v": {"mc_question": [{"id": 0, "question": "q",
                                                   "options": ["a", "b"], "answer_id": 5}]}},
       "perceptiontest", "v_0", "'answer_id'")
  _bad(tmp_path, "j.json", "{not json", "videommmu", "not valid JSON")
  with pytest.raises(FileNotFoundError):
    loaders.load("vstar", tmp_path / "missing.json")
  with pytest.raises(ValueError, match="unknown benchmark"):
    loaders.load("mvbench", EVAL / "vstar.json")


def test_synthetic_items_follow_the_held_out_records():
  config = config_lib.load(None, ["synthetic.num_eval=6", "synthetic.num_train=3"])
  items = loaders.synthetic_items(config, "eval")
  assert len(items) == 6 and len({i.id for i in items}) == 6
  assert all(i.id.startswith("syn-0-100000") for i in items)
  by_task = {i.task: i for i in items}
  assert set(by_task) == set(targets.TASKS)
  st = by_task[targets.TASK_ST]
  kf_times = [kf["time"] for kf in st.record["key_frames"]]
  assert [t for t, _ in st.boxes] == kf_times and st.answer == st.record["answer"]
  tg = by_task[targets.TASK_TG]
  assert tg.segment is not None and not tg.boxes and tg.answer == ""
  mcq = by_task[targets.TASK_TG_MCQ]
  assert mcq.answer in "ABCD" and mcq.segment is not None
  assert by_task[targets.TASK_VQA].boxes[0][0] == 0.0
  assert loaders.synthetic_index(st) == int(st.id.rsplit("-", 1)[1])
  train = loaders.synthetic_items(config, "train")
  assert [i.id for i in train] == ["syn-0-0", "syn-0-1", "syn-0-2"]
  with pytest.raises(ValueError, match="split"):
    loaders.synthetic_items(config, "test")
