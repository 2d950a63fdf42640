"""Flags and the finish shared by the training commands (`vcoach sft`, `vcoach train`)."""

from __future__ import annotations

import argparse

from vcoach_jax import config as config_lib
from vcoach_jax.parallel import distributed


def add(parser: argparse.ArgumentParser, steps_key: str) -> None:
  """--workdir, --steps, --resume, --seed, --no-progress, config and multi-host flags."""
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="folder for checkpoints, metrics and the exported policy")
  parser.add_argument("--steps", type=int, default=None, help=f"override {steps_key}")
  parser.add_argument("--resume", nargs="?", const="latest", default=None,
                      choices=("latest", "latest-intact"),
                      help="continue from the latest checkpoint in --workdir (refused, naming "
                      "the file, if it fails its integrity checks); --resume=latest-intact "
                      "falls back to the newest step that passes them, saying so "
                      "(docs/checkpoints.md)")
  parser.add_argument("--seed", type=int, default=0, help="initialisation and sampling seed")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  config_lib.add_config_flags(parser)
  distributed.add_flags(parser)


def finish(trainer, result, workdir: str, what: str) -> int:
  """Exports the policy after a completed run; an interrupted one asks for --resume (130)."""
  if result.interrupted:
    print(f"interrupted at step {result.last_step}; resume with --resume")
    return 130
  path = trainer.export(f"{workdir}/policy")
  print(f"{what} done ({result.last_step} steps, {result.skipped} skipped); policy: {path}")
  return 0
