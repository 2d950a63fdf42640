"""Run bookkeeping: `--steps` is positive, one number decides the schedule and the stop unless
both are set, a resumed run keeps its schedule, `optim.epochs` counts steps from the dataset,
and a fresh run over a folder that holds checkpoints is refused before any work."""

from __future__ import annotations

import json

import pytest

from conftest import CONFIGS, TINY_WORLD, set_args
from vcoach_jax import cli
from vcoach_jax import config as config_lib
from vcoach_jax import run_length


def _plan(overrides, steps, keys=run_length.RL_KEYS, tmp_path="."):
  config = config_lib.load(None, list(overrides))
  return run_length.plan(config, keys, steps, overrides, tmp_path)


def test_steps_alone_sets_the_schedule_and_the_stop():
  config, stop, explicit = _plan([], 7)
  assert (config.optim.total_steps, stop, explicit) == (7, 7, False)
  config, stop, explicit = _plan(["optim.total_steps=20"], 7)
  assert (config.optim.total_steps, stop, explicit) == (20, 7, True)  # stop early, resume later
  config, stop, _ = _plan(["sft.steps=9"], None, run_length.SFT_KEYS)
  assert (config.sft.steps, stop) == (9, 9)
  with pytest.raises(run_length.RunLengthError, match="past the end of the schedule"):
    _plan(["optim.total_steps=5"], 7)
  with pytest.raises(run_length.RunLengthError, match="positive"):
    _plan([], 0)


def test_epochs_count_steps_from_the_dataset(tiny_world, tmp_path):
  world = list(TINY_WORLD) + tiny_world  # 16 train examples
  config, stop, _ = _plan(world + ["optim.epochs=1.5", "data.batch_size=4"], None)
  assert config.optim.total_steps == stop == 6  # ceil(1.5 * 16 / 4)
  config, stop, _ = _plan(world + ["optim.epochs=1.0", "data.batch_size=4"], 2)
  assert (config.optim.total_steps, stop) == (4, 2)  # the epoch set too: --steps only stops
  with pytest.raises(run_length.RunLengthError, match=r"optim.total_steps = 2\)"):
    _plan(world + ["optim.epochs=1.0"], 3)  # ceil(16 / 8) = 2 < 3
  # A prepared dataset (source tfds): the count comes from its metadata, slices included.
  config, stop, _ = _plan(world + ["data.source=tfds", "data.split=train[:50%]",
                                   "optim.epochs=1.0", "data.batch_size=4"], None)
  assert config.optim.total_steps == stop == 2
  # A config file's epochs with --steps alone: the one number wins.
  config = config_lib.with_overrides(config_lib.load(None, world), ["optim.epochs=1.0"])
  config, stop, _ = run_length.plan(config, run_length.RL_KEYS, 5, [], tmp_path)
  assert (config.optim.epochs, config.optim.total_steps, stop) == (0.0, 5, 5)
  # The config file's epochs, a length on the command line: the length.
  config = config_lib.with_overrides(config_lib.load(None, world),
                                     ["optim.epochs=1.0", "optim.total_steps=9"])
  config, stop, explicit = run_length.plan(config, run_length.RL_KEYS, None,
                                           ["optim.total_steps=9"], tmp_path)
  assert (config.optim.epochs, config.optim.total_steps, stop, explicit) == (0.0, 9, 9, True)


def _rows(workdir):
  path = workdir / "metrics" / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_sft_bookkeeping_end_to_end(tiny_world, tmp_path, capsys):
  """--steps 0 refused; a second fresh run refused before any row is written; a resume on
  another schedule refused unless set, then stated; --steps past the schedule refused. The
  config is the shipped default under `:runlocal` (the suite runs every shipped config so:
  tests/test_recipes.py); the shared tiny world's sizes and paths override its own."""
  work = tmp_path / "sft"
  base = ["sft", "--config", f"{CONFIGS / 'default'}.py:runlocal", "--workdir", str(work),
          "--no-progress"] + set_args(
      list(TINY_WORLD) + tiny_world + ["data.batch_size=2", "checkpoint.every_steps=1"])
  with pytest.raises(SystemExit):
    cli.main(base + ["--steps", "0"])
  assert "positive number of steps" in capsys.readouterr().err
  assert cli.main(base + ["--steps", "2"]) == 0
  assert [r["step"] for r in _rows(work)] == [0, 1]
  assert cli.main(base + ["--steps", "2"]) == 2
  assert "already holds checkpoints (steps [1, 2]): pass --resume" in capsys.readouterr().err
  assert [r["step"] for r in _rows(work)] == [0, 1]  # nothing appended
  assert cli.main(base + ["--resume", "--steps", "3"]) == 2
  err = capsys.readouterr().err
  assert "belongs to a 2-step schedule (sft.steps); this run's has 3" in err, err
  assert cli.main(base + ["--resume", "--steps", "4", "--set", "sft.steps=3"]) == 2
  assert "past the end of the schedule (sft.steps = 3)" in capsys.readouterr().err
  assert cli.main(base + ["--resume", "--steps", "3", "--set", "sft.steps=3"]) == 0
  assert "continuing on the new schedule from step 2" in capsys.readouterr().out
  rows = _rows(work)
  assert [r["step"] for r in rows] == [0, 1, 2]
  assert rows[2]["lr"] > 0  # step 2 of a 3-step cosine, not past the end
