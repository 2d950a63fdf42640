"""`vcoach rewards` end to end (in-process), and --help at every level."""

import json
import os

import pytest

from conftest import DATA_DIR
from vcoach_jax import cli
from vcoach_jax import rewards

VECTORS = [json.loads(l) for l in (DATA_DIR / "rewards_public.jsonl").read_text().splitlines()]


def _write(path, lines):
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def test_scores_records_and_writes_totals(tmp_path, capsys):
  cases = VECTORS[:40]
  src = _write(tmp_path / "in.jsonl", [json.dumps(c) for c in cases])
  out = tmp_path / "out.jsonl"
  assert cli.main(["rewards", str(src), "--out", str(out), "--record-options"]) == 0
  scored = [json.loads(l) for l in out.read_text().splitlines()]
  assert len(scored) == len(cases)
  for case, row in zip(cases, scored):
    for name in rewards.REWARD_NAMES:
      assert row["rewards"][name] == pytest.approx(case["expected"][name], abs=1e-6)
    assert row["total"] == pytest.approx(sum(case["expected"].values()), abs=1e-5)
  printed = capsys.readouterr().out
  assert "(all)" in printed and "scored 40 record(s)" in printed


def test_config_options_apply_without_record_options(tmp_path):
  case = next(c for c in VECTORS if c["options"]["identity_match_mode"] == "none"
              and c["expected"]["thk_spatial"] > 0)
  src = _write(tmp_path / "in.jsonl", [json.dumps(case)])
  out = tmp_path / "out.jsonl"
  flags = [f"--set=rewards.{k}={v}" for k, v in case["options"].items()]
  assert cli.main(["rewards", str(src), "--out", str(out), *flags]) == 0
  row = json.loads(out.read_text())
  assert row["rewards"]["thk_spatial"] == pytest.approx(case["expected"]["thk_spatial"], abs=1e-6)


MALFORMED = [
    ("{not json", "line 2: not valid JSON"),
    (json.dumps({"task": "visual QA", "completion": "x"}), "line 2: field 'answer' is missing"),
    (json.dumps({"id": "r7", "task": "foo", "answer": "a", "completion": "x"}),
     "line 2 (id 'r7'): field 'task' has unknown value 'foo'"),
    (json.dumps({"id": 3, "task": "visual QA", "answer": "a", "completion": 5}),
     "line 2 (id 3): field 'completion' must be a string"),
    (json.dumps({"task": "visual QA", "answer": "a", "completion": "x", "step_percent": "half"}),
     "line 2: field 'step_percent' must be a finite number >= 0"),
]
ST_CASE = next(c for c in VECTORS if c["task"] == "temporal-spatial free-form QA")


def _st(**fields):
  """A good temporal-spatial record with some fields replaced (as JSON text: NaN stays NaN)."""
  record = {k: v for k, v in ST_CASE.items() if k not in ("expected", "options")}
  return json.dumps({**record, **fields})


# Wrong types or non-finite numbers inside the sample's fields: each names the line and field.
BAD_FIELDS = [
    (_st(image_size=["640", 360]), "line 2 (id", "field 'image_size' must be null or [width, "
     "height], two finite numbers > 0, got [\"640\", 360]", "image_size"),
    (_st(image_size_refine=[0, 10]), "line 2", "field 'image_size_refine' must be",
     "image_size_refine"),
    (_st(key_frames=[{"idx": 0, "time": float("nan")}]), "line 2",
     "field 'key_frames[0].time' must be a finite number (seconds), got NaN", "key_frames"),
    (_st(key_frames=[{"idx": 0, "time": "5"}]), "line 2", "field 'key_frames[0].time'",
     "key_frames"),
    (_st(key_frames=[{"idx": [0], "time": 5}]), "line 2", "field 'key_frames[0].idx'",
     "key_frames"),
    (_st(key_frames="0,1"), "line 2", "field 'key_frames' must be null or a list", "key_frames"),
    (_st(key_items={"0": {"man": [[0.1, "x", 0.5, 0.5]]}}), "line 2",
     "field \"key_items['0']['man'][0]\" must be a box [x1, y1, x2, y2] of four finite numbers",
     "key_items"),
    (_st(key_items={"0": [[0.1, 0.1, 0.5, 0.5]]}), "line 2", "field \"key_items['0']\" must be",
     "key_items"),
    (_st(step_percent=float("inf")), "line 2", "field 'step_percent' must be a finite number >= 0",
     "step_percent"),
    (_st(step_percent=-0.5), "line 2", "field 'step_percent' must be a finite number >= 0",
     "step_percent"),
    (_st(step_percent=True), "line 2", "field 'step_percent' must be", "step_percent"),
]


@pytest.mark.parametrize("bad,where,message,field", BAD_FIELDS)
def test_bad_field_values_are_named_counted_and_skipped(tmp_path, capsys, bad, where, message,
                                                         field):
  src = _write(tmp_path / "in.jsonl", [json.dumps(VECTORS[0]), bad, json.dumps(VECTORS[1])])
  out = tmp_path / "out.jsonl"
  assert cli.main(["rewards", str(src), "--out", str(out)]) == 0
  assert len(out.read_text().splitlines()) == 2
  captured = capsys.readouterr()
  assert where in captured.err and message in captured.err
  assert f"skipped 1 malformed line(s): {field}: 1" in captured.out
  assert "nan" not in captured.out


def test_bad_options_are_a_per_line_error(tmp_path, capsys):
  bad = json.dumps({**VECTORS[1], "options": {**VECTORS[1]["options"], "spatial_iou_mode": "mean"}})
  src = _write(tmp_path / "in.jsonl", [json.dumps(VECTORS[0]), bad, json.dumps(VECTORS[2])])
  out = tmp_path / "out.jsonl"
  assert cli.main(["rewards", str(src), "--out", str(out), "--record-options"]) == 0
  assert [json.loads(l)["id"] for l in out.read_text().splitlines()] == [VECTORS[0]["id"],
                                                                        VECTORS[2]["id"]]
  captured = capsys.readouterr()
  assert "line 2 (id" in captured.err and "field 'options'" in captured.err
  assert "spatial_iou_mode" in captured.err
  assert "skipped 1 malformed line(s): options: 1" in captured.out
  # Without --record-options the record's options are not used, so the line is scored.
  assert cli.main(["rewards", str(src), "--out", str(out)]) == 0
  assert len(out.read_text().splitlines()) == 3


def test_undecodable_bytes_name_the_line(tmp_path, capsys):
  src = tmp_path / "in.jsonl"
  src.write_bytes(json.dumps(VECTORS[0]).encode() + b"\n" + b'{"id": "x\xff"}\n'
                  + json.dumps(VECTORS[1]).encode() + b"\n")
  out = tmp_path / "out.jsonl"
  assert cli.main(["rewards", str(src), "--out", str(out)]) == 0
  assert len(out.read_text().splitlines()) == 2
  captured = capsys.readouterr()
  assert "line 2: not valid UTF-8 (byte 0xff at column 10)" in captured.err
  assert "encoding: 1" in captured.out
  assert cli.main(["rewards", str(src), "--strict"]) == 2
  assert f"{src}: line 2: not valid UTF-8" in capsys.readouterr().err


def test_a_non_finite_reward_never_reaches_the_summary(tmp_path, capsys):
  """An infinite GT segment in the answer text and an infinite predicted one give the
  reference's NaN tIoU (inf - inf); the line is reported and skipped, not averaged."""
  huge = "9" * 400
  bad = json.dumps({"id": "inf", "task": "temporal QA", "answer": "[1e999, 1e999]",
                    "completion": f"<answer><t>{huge}</t>s to <t>{huge}</t>s</answer>"})
  src = _write(tmp_path / "in.jsonl", [json.dumps(VECTORS[0]), bad])
  assert cli.main(["rewards", str(src)]) == 0
  captured = capsys.readouterr()
  assert "line 2 (id 'inf'): reward(s) ['ans_tiou'] are not finite" in captured.err
  assert "nan" not in captured.out and "scored 1 record(s)" in captured.out


@pytest.mark.parametrize("bad,message", MALFORMED)
def test_malformed_line_is_skipped_and_counted(tmp_path, capsys, bad, message):
  src = _write(tmp_path / "in.jsonl", [json.dumps(VECTORS[0]), bad, json.dumps(VECTORS[1])])
  out = tmp_path / "out.jsonl"
  assert cli.main(["rewards", str(src), "--out", str(out)]) == 0
  assert len(out.read_text().splitlines()) == 2
  captured = capsys.readouterr()
  assert message in captured.err
  assert "skipped 1 malformed line(s)" in captured.out


@pytest.mark.parametrize("bad,message", MALFORMED[:3])
def test_strict_stops_with_the_line_and_field(tmp_path, capsys, bad, message):
  src = _write(tmp_path / "in.jsonl", [json.dumps(VECTORS[0]), bad])
  assert cli.main(["rewards", str(src), "--strict"]) == 2
  err = capsys.readouterr().err
  assert message in err and str(src) in err


@pytest.mark.parametrize("batch", [2, 256])
def test_strict_writes_the_good_records_before_the_bad_line(tmp_path, capsys, monkeypatch, batch):
  from vcoach_jax.commands import rewards as command
  monkeypatch.setattr(command, "BATCH", batch)  # 2: the stop falls after two full batches
  good = [json.dumps(c) for c in VECTORS[:5]]
  src = _write(tmp_path / "in.jsonl", good + ["{not json"] + good)
  out = tmp_path / "out.jsonl"
  assert cli.main(["rewards", str(src), "--out", str(out), "--strict"]) == 2
  assert [json.loads(l)["id"] for l in out.read_text().splitlines()] == [c["id"] for c in
                                                                        VECTORS[:5]]
  captured = capsys.readouterr()
  assert f"{src}: line 6: not valid JSON" in captured.err and "scored 5 record(s)" in captured.out
  assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out.jsonl"]  # no temporary left


def _same_file_spellings(tmp_path, monkeypatch):
  src = _write(tmp_path / "in.jsonl", [json.dumps(c) for c in VECTORS[:3]])
  (tmp_path / "link.jsonl").symlink_to(src)
  monkeypatch.chdir(tmp_path)
  return src, [(str(src), str(src)), (str(src), "in.jsonl"), ("in.jsonl", str(src)),
               (str(src), str(tmp_path / "link.jsonl")), ("link.jsonl", "./in.jsonl")]


def test_out_equal_to_the_input_is_refused_before_reading(tmp_path, capsys, monkeypatch):
  src, spellings = _same_file_spellings(tmp_path, monkeypatch)
  before = src.read_bytes()
  for inp, out in spellings:
    assert cli.main(["rewards", inp, "--out", out]) == 2, (inp, out)
    err = capsys.readouterr().err
    assert "is the input file" in err and "--out" in err, err
    assert src.read_bytes() == before and not src.is_symlink()


def test_output_is_written_atomically(tmp_path, capsys, monkeypatch):
  """A failure while scoring leaves the previous output whole and no temporary file."""
  from vcoach_jax import rewards as rewards_lib
  from vcoach_jax.commands import rewards as command
  monkeypatch.setattr(command, "BATCH", 2)
  src = _write(tmp_path / "in.jsonl", [json.dumps(c) for c in VECTORS[:5]])
  out = tmp_path / "out.jsonl"
  out.write_text("previous\n")
  calls = []
  real = rewards_lib.compute_with_stats

  def failing(*a, **k):
    calls.append(1)
    if len(calls) == 2:
      raise OSError(28, "No space left on device")
    return real(*a, **k)

  monkeypatch.setattr(rewards_lib, "compute_with_stats", failing)
  with pytest.raises(OSError):
    cli.main(["rewards", str(src), "--out", str(out)])
  assert out.read_text() == "previous\n"
  assert sorted(os.listdir(tmp_path)) == ["in.jsonl", "out.jsonl"]


def test_bad_config_and_missing_input_are_clear_errors(tmp_path, capsys):
  src = _write(tmp_path / "in.jsonl", [json.dumps(VECTORS[0])])
  assert cli.main(["rewards", str(src), "--set", "rewards.spatial_iou_mode=mean"]) == 2
  assert "rewards.spatial_iou_mode" in capsys.readouterr().err
  assert cli.main(["rewards", str(src), "--set", "rewards.nope=1"]) == 2
  assert "unknown config key 'rewards.nope'" in capsys.readouterr().err
  assert cli.main(["rewards", str(tmp_path / "missing.jsonl")]) == 2
  assert "does not exist" in capsys.readouterr().err


def test_packaged_example_scores(capsys):
  import vcoach_jax
  import pathlib
  example = pathlib.Path(vcoach_jax.__file__).parent / "assets" / "example_completions.jsonl"
  assert cli.main(["rewards", str(example)]) == 0
  assert "scored 13 record(s)" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"]] + [[name, "--help"] for name in cli.COMMANDS])
def test_help_at_every_level(argv, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 0
  assert "usage: vcoach" in capsys.readouterr().out
