"""`vcoach train`: VisionCoach RL (GSPO + visual-prompt coaching + self-distillation)."""

from __future__ import annotations

import argparse

from vcoach_jax import run_length
from vcoach_jax.commands import training_flags
from vcoach_jax.parallel import distributed

HELP = "VisionCoach RL: GSPO + visual-prompt coaching + self-distillation (docs/design.md §8)"
DESCRIPTION = """\
Algorithm 1 of the paper: for each batch, G raw rollouts per prompt are sampled and scored with
the seven rewards; hard prompts (mean reward < rl.k1) get a visual prompt (the VP-Selector's
cached choice, selector.cache, else `raw`) drawn on their key frames plus a hint, and G prompted
rollouts; the best prompted rollouts are distilled (NLL, weight rl.alpha) while the raw rollouts
get the GSPO loss with a KL to the frozen starting policy (weight rl.beta). One jitted, sharded
update per step (optim.*: AdamW, cosine, clip 5) over optim.total_steps steps, or with
optim.epochs > 0 that many passes over data.split (the 7B recipe: one).

Start from a checkpoint with --set model.checkpoint=DIR (e.g. `vcoach sft`'s WORKDIR/policy).
Writes checkpoints/ (orbax, keep-last-k), metrics/ (JSONL, TensorBoard, PNG reward curves) and
policy/ (HF layout) into --workdir. SIGTERM/SIGINT save and exit; --resume continues exactly.
A non-finite loss or gradient skips the update; rl.max_nonfinite_steps in a row stop the run
with the step and batch ids.

examples:
  vcoach train --workdir runs/rl --set model.checkpoint=runs/sft/policy
  vcoach train --config configs/visioncoach_7b.py --workdir gs://bucket/vc7b --resume
  vcoach train --workdir runs/gspo --set rl.method=gspo      # the GSPO-only baseline
  vcoach train --config configs/visioncoach_7b.py:runlocal --steps 2 --workdir /tmp/vc7b
                        # the 7B recipe on a CPU: tiny model, synthetic world, all else kept
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  training_flags.add(parser, run_length.RL_KEYS)
  parser.add_argument("--no-coach", action="store_true",
                      help="plain GSPO, no prompted rollouts (the same as --set rl.method=gspo)")
  parser.add_argument("--no-distill", action="store_true",
                      help="coaching without self-distillation: prompted rollouts as their own "
                      "GSPO groups, no NLL (the same as --set rl.method=coach)")


def run(args: argparse.Namespace) -> int:
  distributed.initialize(args)
  from vcoach_jax.rl import train as rl_train  # pylint: disable=g-import-not-at-top
  if args.no_coach or args.no_distill:
    method = "gspo" if args.no_coach else "coach"
    args.overrides = list(args.overrides or []) + [f"rl.method={method}"]
  config, stop, explicit = training_flags.start(args, run_length.RL_KEYS)
  run_, result = rl_train.train(config, args.workdir, seed=args.seed, steps=stop,
                                resume=args.resume, reschedule=explicit,
                                progress=not args.no_progress)
  return training_flags.finish(run_, result, args.workdir, "training")
