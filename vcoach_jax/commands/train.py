"""`vcoach train`: VisionCoach RL (GSPO + visual-prompt coaching + self-distillation)."""

from __future__ import annotations

import argparse

from vcoach_jax import config as config_lib
from vcoach_jax.parallel import distributed

HELP = "VisionCoach RL: GSPO + visual-prompt coaching + self-distillation (DESIGN.md §8)"
DESCRIPTION = """\
Algorithm 1 of the paper: for each batch, G raw rollouts per prompt are sampled and scored with
the seven rewards; hard prompts (mean reward < rl.k1) get a visual prompt (the VP-Selector's
cached choice, selector.cache, else `raw`) drawn on their key frames plus a hint, and G prompted
rollouts; the best prompted rollouts are distilled (NLL, weight rl.alpha) while the raw rollouts
get the GSPO loss with a KL to the frozen starting policy (weight rl.beta). One jitted, sharded
update per step (optim.*: AdamW, cosine, clip 5).

Start from a checkpoint with --set model.checkpoint=DIR (e.g. `vcoach sft`'s WORKDIR/policy).
Writes checkpoints/ (orbax, keep-last-k), metrics/ (JSONL, TensorBoard, PNG reward curves) and
policy/ (HF layout) into --workdir. SIGTERM/SIGINT save and exit; --resume continues exactly.
A non-finite loss or gradient skips the update; rl.max_nonfinite_steps in a row stop the run
with the step and batch ids.

examples:
  vcoach train --workdir runs/rl --set model.checkpoint=runs/sft/policy
  vcoach train --config configs/visioncoach_7b.py --workdir gs://bucket/vc7b --resume
  vcoach train --workdir runs/gspo --no-coach                # the GSPO-only baseline
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="folder for checkpoints, metrics and the exported policy")
  parser.add_argument("--steps", type=int, default=None, help="override optim.total_steps")
  parser.add_argument("--resume", action="store_true",
                      help="continue from the latest checkpoint in --workdir")
  parser.add_argument("--no-coach", action="store_true",
                      help="plain GSPO: no prompted rollouts, no self-distillation")
  parser.add_argument("--no-distill", action="store_true",
                      help="prompted rollouts but no self-distillation (alpha = 0)")
  parser.add_argument("--seed", type=int, default=0, help="sampling and initialisation seed")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  config_lib.add_config_flags(parser)
  distributed.add_flags(parser)


def run(args: argparse.Namespace) -> int:
  distributed.initialize(args)
  from vcoach_jax.rl import trainer as rl_trainer  # pylint: disable=g-import-not-at-top
  config = config_lib.load(args.config, args.overrides)
  steps = args.steps or config.optim.total_steps
  trainer = rl_trainer.Trainer(config, args.workdir, seed=args.seed, coach=not args.no_coach,
                               distill=not args.no_distill, progress=not args.no_progress)
  result = trainer.run(steps, resume=args.resume)
  if result.interrupted:
    print(f"interrupted at step {result.last_step}; resume with --resume")
    return 130
  path = trainer.export(f"{args.workdir}/policy")
  print(f"training done ({result.last_step} steps, {result.skipped} skipped); policy: {path}")
  return 0
