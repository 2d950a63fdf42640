"""Flags and the start and finish shared by the training commands (`vcoach sft`, `vcoach train`).

Run length (`vcoach_jax/run_length.py`): `--steps N` alone sets both the schedule's length and
where the command stops; with the schedule also set on the command line it only says where to
stop (N at most the schedule); a resumed run keeps its checkpoint's schedule.
"""

from __future__ import annotations

import argparse

from vcoach_jax import config as config_lib
from vcoach_jax import run_length
from vcoach_jax.parallel import distributed


def _positive(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be a positive number of steps, got {text!r}")
  return value


def add(parser: argparse.ArgumentParser, keys: tuple[str, ...]) -> None:
  """--workdir, --steps, --resume, --seed, --no-progress, config and multi-host flags; `keys`
  are the config fields of the command's schedule (`run_length.RL_KEYS` / `SFT_KEYS`)."""
  schedule = " / ".join(keys)
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="folder for checkpoints, metrics and the exported policy")
  parser.add_argument(
      "--steps", type=_positive, default=None, metavar="N",
      help=f"stop after step N. Alone, N is also the schedule's length (the cosine and the "
      f"curriculum span N steps, replacing {schedule}); when {schedule} is also set with --set, "
      "the schedule is that and N may not exceed it (stop early, --resume later). Default: the "
      "schedule's length")
  parser.add_argument("--resume", nargs="?", const="latest", default=None,
                      choices=("latest", "latest-intact"),
                      help="continue from the latest checkpoint in --workdir, on its schedule "
                      "(another one only when set with --set); refused, naming the file, if that "
                      "step fails its integrity checks; --resume=latest-intact falls back to the "
                      "newest step that passes them, saying so (docs/checkpoints.md). Without it "
                      "a work folder that holds checkpoints is refused")
  parser.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  config_lib.add_config_flags(parser)
  distributed.add_flags(parser)


def start(args: argparse.Namespace, keys: tuple[str, ...]):
  """(config, step to stop at, whether the command line set the schedule), after refusing a
  fresh run over a work folder that holds checkpoints (before anything is built or written)."""
  from vcoach_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from vcoach_jax import training_loop  # pylint: disable=g-import-not-at-top
  config = config_lib.load(args.config, args.overrides)
  if not args.resume:
    ckpt = checkpointing.Checkpointer(training_loop.checkpoint_dir(config, args.workdir))
    try:
      training_loop.refuse_fresh_run_over(ckpt)
    finally:
      ckpt.close()
  return run_length.plan(config, keys, args.steps, args.overrides, args.workdir)


def finish(trainer, result, workdir: str, what: str) -> int:
  """Exports the policy after a completed run; an interrupted one asks for --resume (130)."""
  if result.interrupted:
    print(f"interrupted at step {result.last_step}; resume with --resume")
    return 130
  path = trainer.export(f"{workdir}/policy")
  print(f"{what} done ({result.last_step} steps, {result.skipped} skipped); policy: {path}")
  return 0
