"""The outer loop shared by `vcoach sft` and `vcoach train`: steps, progress bar, metrics,
periodic checkpoints, a clean stop on SIGTERM/SIGINT, and the non-finite guard's stop rule.

The step itself (sampling, rewards, the jitted update) is the caller's `step_fn`; this module
only decides when to save, when to stop and what to report, so both trainers behave the same
under interruption (docs/design.md §12).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from typing import Any, Callable, Iterator, Mapping

from vcoach_jax import config as config_lib
from vcoach_jax import run_length
from vcoach_jax import storage


class NonFiniteError(RuntimeError):
  """Too many updates in a row were skipped for a non-finite loss or gradient."""


class RunError(ValueError):
  """A run the command refuses before any work (the message says what to do)."""


def checkpoint_dir(config, workdir) -> str:
  """`checkpoint.dir`, or WORKDIR/checkpoints."""
  return config.checkpoint.dir or os.fspath(storage.path(workdir) / "checkpoints")


def refuse_fresh_run_over(ckpt) -> None:
  """A run without --resume over a folder that holds checkpoints would mix two runs (its
  metrics appended to the old ones, its checkpoints among theirs): refused."""
  steps = ckpt.all_steps()
  if steps:
    raise RunError(f"{ckpt.directory} already holds checkpoints (steps {steps}): pass --resume "
                   "to continue that run, or use another --workdir (or checkpoint.dir)")


@dataclasses.dataclass
class LoopResult:
  last_step: int  # number of steps completed (the next step's index)
  interrupted: bool  # stopped by a signal (a checkpoint was written)
  skipped: int  # updates skipped for non-finite values


class _Signals:
  """Turns SIGTERM/SIGINT into a flag checked between steps (a second SIGINT aborts)."""

  def __init__(self):
    self.received: int | None = None

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.received is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.received = signum

  @contextlib.contextmanager
  def installed(self) -> Iterator["_Signals"]:
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no handlers, nothing to restore
        pass
    try:
      yield self
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)


def run(step_fn: Callable[[int], Mapping[str, Any]], *, start: int, total: int,
        save: Callable[[int], None], write: Callable[[int, Mapping[str, Any]], None],
        save_every: int, max_nonfinite: int, desc: str = "train",
        progress: bool = True) -> LoopResult:
  """Runs steps `start .. total-1`.

  Args:
    step_fn: `step -> metrics`; metrics carry `skipped` (1.0 when the update was skipped for a
      non-finite loss or gradient) and may carry `batch_ids` (reported when the loop stops).
    start, total: the first step to run and the total number of steps.
    save: `step -> None`, writes a checkpoint labelled with the number of completed steps.
    write: `(step, metrics) -> None`, records one step's metrics.
    save_every: checkpoint period in steps (the last step is always saved).
    max_nonfinite: stop with `NonFiniteError` after this many skipped updates in a row.
    desc: progress-bar label.
    progress: show a tqdm bar.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  signals = _Signals()
  in_a_row = skipped = 0
  step = start
  bar = tqdm(total=total, initial=start, desc=desc, disable=not progress, dynamic_ncols=True)
  with signals.installed(), bar:
    while step < total:
      t0 = time.perf_counter()
      metrics = dict(step_fn(step))
      metrics.setdefault("step_seconds", time.perf_counter() - t0)
      batch_ids = metrics.pop("batch_ids", None)
      write(step, metrics)
      step += 1
      bar.update(1)
      bar.set_postfix({k: f"{float(metrics[k]):.3g}" for k in ("loss", "reward_total")
                       if k in metrics}, refresh=False)
      if float(metrics.get("skipped", 0.0)) > 0:
        in_a_row += 1
        skipped += 1
        if in_a_row >= max_nonfinite:
          save(step)
          raise NonFiniteError(
              f"{in_a_row} updates in a row had a non-finite loss or gradient (last at step "
              f"{step - 1}, batch ids {batch_ids}); checkpoint saved at step {step}")
      else:
        in_a_row = 0
      if signals.received is not None:
        save(step)
        return LoopResult(step, True, skipped)
      if step % save_every == 0 or step == total:
        save(step)
  return LoopResult(step, False, skipped)


class Runner:
  """Checkpoint, restore and loop for a trainer with `config`, `state`, `rng`, `pipe` (data
  stream), `ckpt` (`checkpointing.Checkpointer`), `writer` (`metrics_writer.MetricsWriter`) and a
  `step(step_index) -> metrics` method. `vcoach sft` and `vcoach train` both are one. The
  schedule's length is the config's `schedule_key` (`run_length`)."""

  desc = "train"
  progress = True
  schedule_key = "optim.total_steps"
  plot_keys: tuple[str, ...] = ("loss",)  # curves drawn into metrics/curves.png at the end

  def save(self, step: int) -> None:
    self.ckpt.save(step, self.state, self.rng, config=self.config, data_save=self.pipe.save)

  def restore(self, mode: str = "latest", reschedule: bool = False) -> int:
    """Restores a checkpoint (params, optimizer, rng, data position) and returns its step, 0
    when there is none. `mode` "latest" refuses a latest step that fails its checks (one line
    naming the step and file); "latest-intact" falls back to the newest step that passes. A
    checkpoint of another schedule is refused unless `reschedule` (the command line set the
    schedule), which is then stated."""
    from vcoach_jax import checkpointing  # pylint: disable=g-import-not-at-top
    if self.ckpt.latest_step() is None:
      return 0
    if mode == checkpointing.LATEST_INTACT:
      restored = self.ckpt.restore_intact(self.state, data_restore=self.pipe.restore)
    else:
      try:
        restored = self.ckpt.restore(self.state, data_restore=self.pipe.restore)
      except checkpointing.CheckpointError as e:
        raise checkpointing.CheckpointError(
            f"{e}; resume from the newest intact step with --resume=latest-intact") from None
    note = run_length.check_resumed(restored.config, self.schedule_key, self.total_steps(),
                                    restored.step, str(self.ckpt.directory), reschedule)
    if note:
      print(note)
    self.state, self.rng = restored.state, restored.rng
    return restored.step

  def total_steps(self) -> int:
    """The schedule's length."""
    return int(config_lib.flatten(self.config)[self.schedule_key])

  def run(self, steps: int | None = None, *, resume: bool | str = False,
          reschedule: bool = False) -> LoopResult:
    """Runs until step `steps` (default: the schedule's end; never past it). `resume`: False (a
    fresh run over checkpoints is refused), True or "latest" (the latest step), or
    "latest-intact" (the newest step that passes its checks)."""
    steps = self.total_steps() if steps is None else steps
    run_length.check_stop(steps, self.total_steps(), self.schedule_key)
    if resume:
      start = self.restore("latest" if resume is True else resume, reschedule)
      self.writer.drop_from(start)  # rows of steps after the checkpoint are run again
    else:
      refuse_fresh_run_over(self.ckpt)
      start = 0
    try:
      return run(self.step, start=start, total=steps, save=self.save, write=self.writer.write,
                 save_every=self.config.checkpoint.every_steps,
                 max_nonfinite=self.config.rl.max_nonfinite_steps, desc=self.desc,
                 progress=self.progress)
    finally:
      self.writer.close()
      self.plot()

  def plot(self):
    """Draws `plot_keys` over the whole run (all sessions of the metrics file) to a PNG (the
    writing process only; None elsewhere)."""
    from vcoach_jax import metrics_writer  # pylint: disable=g-import-not-at-top
    if not self.writer.enabled:
      return None
    rows = metrics_writer.read_jsonl(self.writer.jsonl_path)
    series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
              for k in self.plot_keys}
    path = self.writer.logdir / "curves.png"
    metrics_writer.line_plot(series, path, title=self.desc)
    return path
