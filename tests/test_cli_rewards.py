"""`vcoach rewards` end to end (in-process), and --help at every level."""

import json

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
     "line 2: field 'step_percent' must be int or float"),
]


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
