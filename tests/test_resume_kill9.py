"""`vcoach sft` killed with SIGKILL mid-run, then `--resume`: the steps after the checkpoint it
resumes from have the losses of an uninterrupted run and the exported policy is bit-identical
(docs/design.md §12).

Slow (three `vcoach sft` processes, each compiling its programs, two at a time: 85 s on a loaded
2-core machine; run with `-m slow`); tests/test_trainer_resume.py covers the same restore path
(params, optimizer, rng, data position) in-process after a clean stop.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vcoach_jax import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 6
COMPARED = ("loss", "nll", "grad_norm", "num_tokens", "lr")


def _overrides(data_dir: pathlib.Path) -> list[str]:
  return ["synthetic.num_train=12", "synthetic.num_eval=2", "data.batch_size=2",
          "data.tiny_vocab_size=400", f"sft.steps={STEPS}", "sft.lr=0.003",
          "checkpoint.every_steps=2", "data.shuffle_buffer=8", f"data.tfds_dir={data_dir}"]


def _sft(workdir: pathlib.Path, data_dir: pathlib.Path, *extra: str) -> subprocess.Popen:
  cmd = [sys.executable, "-m", "vcoach_jax.cli", "sft", "--workdir", str(workdir),
         "--no-progress", *extra]
  for item in _overrides(data_dir):
    cmd += ["--set", item]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
  log = open(workdir.with_suffix(".log"), "ab")  # pylint: disable=consider-using-with
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _rows(workdir: pathlib.Path) -> list[dict]:
  path = workdir / "metrics" / "metrics.jsonl"
  if not path.exists():
    return []
  lines = path.read_text().splitlines()
  return [json.loads(line) for line in lines if line.endswith("}")]


def _finish(proc: subprocess.Popen, workdir: pathlib.Path) -> None:
  rc = proc.wait(timeout=400)
  assert rc == 0, workdir.with_suffix(".log").read_text()[-3000:]


def _tensors(folder: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of a HF-layout folder (the exported policy/, or init/)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  files = sorted(folder.glob("*.safetensors"))
  assert files, f"no safetensors in {folder}"
  out = {}
  for f in files:
    out.update(load_file(str(f)))
  return out


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path / "data"
  tfds_stgr.synthetic_from_config(config_lib.load(None, _overrides(data_dir)), str(data_dir))
  straight_dir, killed_dir = tmp_path / "straight", tmp_path / "killed"
  straight = _sft(straight_dir, data_dir)
  victim = _sft(killed_dir, data_dir)
  # The row of step 2 is written after checkpoint 2 (orbax state + data position) is complete.
  deadline = time.monotonic() + 400
  while not any(r["step"] >= 2 for r in _rows(killed_dir)):
    assert victim.poll() is None, killed_dir.with_suffix(".log").read_text()[-3000:]
    assert time.monotonic() < deadline, "no step 2 within the deadline"
    time.sleep(0.01)
  victim.send_signal(signal.SIGKILL)
  assert victim.wait(timeout=60) == -signal.SIGKILL
  from vcoach_jax import checkpointing  # pylint: disable=g-import-not-at-top
  start = checkpointing.Checkpointer(killed_dir / "checkpoints").latest_step()
  assert start in (2, 4), start  # killed mid-run, after a complete checkpoint
  assert len(_rows(killed_dir)) < STEPS
  _finish(_sft(killed_dir, data_dir, "--resume"), killed_dir)
  _finish(straight, straight_dir)

  ref = {r["step"]: r for r in _rows(straight_dir)}
  assert sorted(ref) == list(range(STEPS))
  # The resumed run drops the rows after its checkpoint (steps it runs again) and appends.
  rows = _rows(killed_dir)
  first = [r for r in rows if r["step"] < start]
  resumed = rows[len(first):]
  assert [r["step"] for r in first] == list(range(start))
  assert [r["step"] for r in resumed] == list(range(start, STEPS))
  for r in first + resumed:  # floats round-trip through JSON exactly: bit-exact equality
    assert {k: r[k] for k in COMPARED} == {k: ref[r["step"]][k] for k in COMPARED}, r["step"]
  a, b = _tensors(straight_dir / "policy"), _tensors(killed_dir / "policy")
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(b[name], a[name], err_msg=name)
  init = _tensors(straight_dir / "init")
  assert any(not np.array_equal(a[n], init[n]) for n in a)  # training moved the policy

