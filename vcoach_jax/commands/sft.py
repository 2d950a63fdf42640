"""`vcoach sft`: cold-start supervised fine-tuning on the grounded reasoning traces."""

from __future__ import annotations

import argparse

from vcoach_jax import run_length
from vcoach_jax.commands import training_flags
from vcoach_jax.parallel import distributed

HELP = "cold-start SFT on grounded reasoning traces (docs/design.md §8.8)"
DESCRIPTION = """\
Supervised fine-tuning before RL: token cross-entropy on the assistant turn
(<think>...</think><answer>...</answer><|im_end|>) of each record's grounded trace, with the
same sharded update, checkpoints and metrics as `vcoach train`. Steps and learning rate come
from `sft.steps` / `sft.lr`; the rest of the optimiser from `optim.*`. Boxes in the trace are
converted to pixels of the model's input first; `sft.loss_on=sequence` puts the loss on every
non-pad, non-image token as the released SFT does (docs/prompts.md).

Writes into --workdir: checkpoints/ (orbax: params, optimizer, rng, data position, step),
metrics/ (JSONL + TensorBoard) and, at the end, policy/ (HF layout + tokenizer), which
`vcoach train --set model.checkpoint=WORKDIR/policy` starts from. SIGTERM/SIGINT save a
checkpoint and exit; --resume continues from the latest one exactly.

examples:
  vcoach sft --workdir runs/sft                        # the embedded default (tiny, synthetic)
  vcoach sft --config configs/sft_coldstart.py --workdir gs://bucket/sft --resume
  vcoach sft --config configs/sft_coldstart.py:runlocal --steps 2 --workdir /tmp/sft
                        # the recipe on a CPU: tiny model, synthetic world, all else kept
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  training_flags.add(parser, run_length.SFT_KEYS)


def run(args: argparse.Namespace) -> int:
  distributed.initialize(args)
  from vcoach_jax.sft import train as sft_train  # pylint: disable=g-import-not-at-top
  config, stop, explicit = training_flags.start(args, run_length.SFT_KEYS)
  run_, result = sft_train.train(config, args.workdir, seed=args.seed, steps=stop,
                                 resume=args.resume, reschedule=explicit,
                                 progress=not args.no_progress)
  return training_flags.finish(run_, result, args.workdir, "SFT")
