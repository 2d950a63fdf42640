"""How long a training run is: the length of its schedule, and where one command stops.

The schedule (the cosine's length, the curriculum's `step_percent` denominator) spans

  vcoach train   `optim.total_steps`; with `optim.epochs` > 0, ceil(epochs x examples in
                 `data.split` / `data.batch_size`) instead (counted from the dataset)
  vcoach sft     `sft.steps`

`--steps N` alone decides both: the schedule spans N steps and the command stops after N. When
the same command line also sets the schedule (`--set optim.total_steps=M`, `optim.epochs=E`,
`sft.steps=M`; a length set there replaces the config file's epochs), the schedule is that and
the command stops after N <= M steps (`--resume` goes on later). Stopping past the schedule is refused: the cosine's learning rate is 0 there.
A resumed run keeps its checkpoint's schedule: `training_loop.restore` refuses another one unless the
command line set it, and then says so.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Sequence

import ml_collections

from vcoach_jax import config as config_lib

RL_KEYS = ("optim.total_steps", "optim.epochs")  # the first names the schedule's length
SFT_KEYS = ("sft.steps",)


class RunLengthError(ValueError):
  """A run length or schedule the command refuses; the message says what to change."""


def epoch_steps(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> int:
  """ceil(optim.epochs x examples in data.split / data.batch_size)."""
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  size = experiment.split_size(config, workdir)
  if size < 1:
    raise RunLengthError(f"optim.epochs = {config.optim.epochs}: split {config.data.split!r} "
                         "of the dataset is empty")
  return max(1, math.ceil(config.optim.epochs * size / config.data.batch_size))


def with_epochs(config: ml_collections.ConfigDict,
                workdir: str | os.PathLike) -> ml_collections.ConfigDict:
  """`config` with `optim.total_steps` counted from `optim.epochs` when that is > 0 (else
  `config` itself)."""
  if config.optim.epochs <= 0:
    return config
  return config_lib.with_overrides(config, [f"optim.total_steps={epoch_steps(config, workdir)}"])


def sets_schedule(overrides: Iterable[str], keys: Sequence[str]) -> bool:
  """Whether `--set` overrides name one of the schedule's `keys`."""
  return any(o.partition("=")[0].strip() in keys for o in overrides)


def plan(config: ml_collections.ConfigDict, keys: Sequence[str], steps: int | None,
         overrides: Iterable[str], workdir: str | os.PathLike):
  """(config with the schedule resolved, the step to stop at, whether the command line set the
  schedule) for `--steps` = `steps` (None: not given) and the `--set` `overrides`."""
  overrides = list(overrides)
  explicit = sets_schedule(overrides, keys)
  if steps is not None and steps < 1:
    raise RunLengthError(f"--steps must be a positive number of steps, got {steps}")
  if steps is not None and not explicit:
    config = config_lib.with_overrides(
        config, [f"{keys[0]}={steps}"] + [f"{k}=0.0" for k in keys[1:]])
  elif sets_schedule(overrides, keys[:1]) and not sets_schedule(overrides, keys[1:]):
    # A length set on the command line replaces the config file's epochs.
    config = config_lib.with_overrides(config, [f"{k}=0.0" for k in keys[1:]])
  if "optim.epochs" in keys:
    config = with_epochs(config, workdir)
  schedule = config_lib.flatten(config)[keys[0]]
  stop = schedule if steps is None else steps
  check_stop(stop, schedule, keys[0])
  return config, stop, explicit


def check_stop(stop: int, schedule: int, key: str) -> None:
  """Refuses a stop outside 1 .. the schedule's length."""
  if stop < 1:
    raise RunLengthError(f"a run needs at least one step, got {stop}")
  if stop > schedule:
    raise RunLengthError(
        f"--steps {stop} goes past the end of the schedule ({key} = {schedule}): its learning "
        f"rate is 0 from step {schedule} on; set {key} to at least {stop} or stop earlier")


def check_resumed(saved: dict | None, key: str, schedule: int, step: int, where: str,
                  explicit: bool) -> str | None:
  """Compares the schedule of a checkpoint's saved config with this run's. Equal (or no saved
  config): None. Different: refused, unless the command line set it (`explicit`): then the
  sentence stating the change is returned."""
  node = saved
  for part in key.split("."):
    node = node.get(part) if isinstance(node, dict) else None
  if node is None or int(node) == schedule:
    return None
  what = (f"the checkpoint at step {step} in {where} belongs to a {node}-step schedule "
          f"({key}); this run's has {schedule}")
  if not explicit:
    raise RunLengthError(f"{what}: pass --set {key}={node} to continue it, or set {key} on the "
                         "command line to change it")
  return f"{what}: continuing on the new schedule from step {step}"
