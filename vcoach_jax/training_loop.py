"""The outer loop shared by `vcoach sft` and `vcoach train`: steps, progress bar, metrics,
periodic checkpoints, a clean stop on SIGTERM/SIGINT, and the non-finite guard's stop rule.

The step itself (sampling, rewards, the jitted update) is the caller's `step_fn`; this module
only decides when to save, when to stop and what to report, so both trainers behave the same
under interruption (docs/design.md §12). A trainer holds a `Session` (its train state, rng,
data stream, checkpointer, metrics writer) and calls `fit(session, step_fn, steps, resume=...)`;
`train(setup_fn, step_fn, config, workdir, ...)` is a trainer's whole run (its `setup`, then `fit`
of its `step`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
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


@dataclasses.dataclass
class Session:
  """What the shared loop checkpoints, restores and reports for a trainer (RL, SFT): its train
  state and rng (the trainer's step replaces them), its data stream (`save`/`restore` of its
  position), the checkpointer and the metrics writer. The schedule's length is the config's
  `schedule_key` (`run_length`)."""
  config: Any  # ml_collections.ConfigDict
  state: Any  # rl.update.TrainState
  rng: Any  # jax.random key
  pipe: Any  # data.pipeline.Pipeline
  ckpt: Any  # checkpointing.Checkpointer
  writer: Any  # metrics_writer.MetricsWriter
  schedule_key: str = "optim.total_steps"
  desc: str = "train"  # progress-bar label, plot title
  plot_keys: tuple[str, ...] = ("loss",)  # curves drawn into metrics/curves.png at the end
  progress: bool = True


def open_session(config, workdir, *, state, rng, pipe, **kw) -> Session:
  """A `Session` with the run's checkpointer (`checkpoint_dir`) and metrics writer
  (WORKDIR/metrics)."""
  from vcoach_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from vcoach_jax import metrics_writer  # pylint: disable=g-import-not-at-top
  ckpt = checkpointing.Checkpointer(checkpoint_dir(config, workdir), keep=config.checkpoint.keep)
  writer = metrics_writer.MetricsWriter(storage.path(workdir) / "metrics")
  return Session(config, state, rng, pipe, ckpt, writer, **kw)


def total_steps(s: Session) -> int:
  """The schedule's length."""
  return int(config_lib.flatten(s.config)[s.schedule_key])


def save(s: Session, step: int) -> None:
  s.ckpt.save(step, s.state, s.rng, config=s.config, data_save=s.pipe.save)


def restore(s: Session, mode: str = "latest", reschedule: bool = False) -> int:
  """Restores a checkpoint (params, optimizer, rng, data position) into `s` and returns its
  step, 0 when there is none. `mode` "latest" refuses a latest step that fails its checks (one
  line naming the step and file); "latest-intact" falls back to the newest step that passes. A
  checkpoint of another schedule is refused unless `reschedule` (the command line set the
  schedule), which is then stated."""
  from vcoach_jax import checkpointing  # pylint: disable=g-import-not-at-top
  if s.ckpt.latest_step() is None:
    return 0
  if mode == checkpointing.LATEST_INTACT:
    restored = s.ckpt.restore_intact(s.state, data_restore=s.pipe.restore)
  else:
    try:
      restored = s.ckpt.restore(s.state, data_restore=s.pipe.restore)
    except checkpointing.CheckpointError as e:
      raise checkpointing.CheckpointError(
          f"{e}; resume from the newest intact step with --resume=latest-intact") from None
  note = run_length.check_resumed(restored.config, s.schedule_key, total_steps(s),
                                  restored.step, str(s.ckpt.directory), reschedule)
  if note:
    print(note)
  s.state, s.rng = restored.state, restored.rng
  return restored.step


def fit(s: Session, step_fn: Callable[[int], Mapping[str, Any]], steps: int | None = None, *,
        resume: bool | str = False, reschedule: bool = False) -> LoopResult:
  """Restores (or refuses a fresh run over checkpoints), then `run`s `step_fn` until step
  `steps` (default: the schedule's end; never past it). `resume`: False, True or "latest" (the
  latest step), or "latest-intact" (the newest step that passes its checks)."""
  steps = total_steps(s) if steps is None else steps
  run_length.check_stop(steps, total_steps(s), s.schedule_key)
  if resume:
    start = restore(s, "latest" if resume is True else resume, reschedule)
    s.writer.drop_from(start)  # rows of steps after the checkpoint are run again
  else:
    refuse_fresh_run_over(s.ckpt)
    start = 0
  try:
    return run(step_fn, start=start, total=steps, save=lambda step: save(s, step),
               write=s.writer.write, save_every=s.config.checkpoint.every_steps,
               max_nonfinite=s.config.rl.max_nonfinite_steps, desc=s.desc, progress=s.progress)
  finally:
    s.writer.close()
    plot(s)


def train(setup_fn: Callable[..., Any], step_fn: Callable[[Any, int], Mapping[str, Any]], config,
          workdir: str, *, seed: int = 0, steps: int | None = None, resume: bool | str = False,
          reschedule: bool = False, progress: bool = True) -> tuple[Any, LoopResult]:
  """A trainer's whole run: `run = setup_fn(config, workdir, seed=, progress=)` (a run with a
  `session`), then `fit` of `step_fn(run, step)` (see `fit` for `steps`, `resume`,
  `reschedule`). Returns the run (its final policy) and how it ended."""
  run_ = setup_fn(config, workdir, seed=seed, progress=progress)
  return run_, fit(run_.session, functools.partial(step_fn, run_), steps, resume=resume,
                   reschedule=reschedule)


def plot(s: Session):
  """Draws `plot_keys` over the whole run (all sessions of the metrics file) to a PNG (the
  writing process only; None elsewhere)."""
  from vcoach_jax import metrics_writer  # pylint: disable=g-import-not-at-top
  if not s.writer.enabled:
    return None
  rows = metrics_writer.read_jsonl(s.writer.jsonl_path)
  series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
            for k in s.plot_keys}
  path = s.writer.logdir / "curves.png"
  metrics_writer.line_plot(series, path, title=s.desc)
  return path
