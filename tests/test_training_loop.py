"""The outer loop: periodic saves, the non-finite stop rule, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal

import pytest

from vcoach_jax import training_loop


class _Log:
  def __init__(self):
    self.saved, self.written = [], []

  def save(self, step):
    self.saved.append(step)

  def write(self, step, metrics):
    self.written.append((step, dict(metrics)))


def test_runs_all_steps_and_saves_periodically_and_at_the_end():
  log = _Log()
  result = training_loop.run(lambda s: {"loss": float(s), "skipped": 0.0}, start=0, total=7,
                             save=log.save, write=log.write, save_every=3, max_nonfinite=2,
                             progress=False)
  assert result == training_loop.LoopResult(7, False, 0)
  assert log.saved == [3, 6, 7]
  assert [s for s, _ in log.written] == list(range(7))
  assert all("step_seconds" in m for _, m in log.written)


def test_resumes_from_start():
  log = _Log()
  result = training_loop.run(lambda s: {"skipped": 0.0}, start=4, total=6, save=log.save,
                             write=log.write, save_every=100, max_nonfinite=2, progress=False)
  assert result.last_step == 6 and [s for s, _ in log.written] == [4, 5]


def test_stops_after_k_nonfinite_updates_in_a_row_naming_step_and_batch():
  log = _Log()
  skipped = {2, 4, 5, 6}

  def step(s):
    return {"skipped": 1.0 if s in skipped else 0.0, "batch_ids": [f"id{s}a", f"id{s}b"]}
  with pytest.raises(training_loop.NonFiniteError, match=r"3 updates in a row.*step 6.*id6a"):
    training_loop.run(step, start=0, total=20, save=log.save, write=log.write, save_every=100,
                      max_nonfinite=3, progress=False)
  assert log.saved == [7]  # saved before stopping
  assert all("batch_ids" not in m for _, m in log.written)  # ids are not metrics


def test_sigterm_saves_and_returns_interrupted():
  log = _Log()

  def step(s):
    if s == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return {"skipped": 0.0}
  before = signal.getsignal(signal.SIGTERM)
  result = training_loop.run(step, start=0, total=10, save=log.save, write=log.write,
                             save_every=100, max_nonfinite=3, progress=False)
  assert result == training_loop.LoopResult(3, True, 0)
  assert log.saved == [3]
  assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
