"""`vcoach demo`: the whole method on the embedded default, on a CPU, in minutes."""

from __future__ import annotations

import argparse

HELP = "run the whole method on the embedded default (tiny model, synthetic videos, CPU)"
DESCRIPTION = """\
End to end with nothing downloaded (docs/design.md §10): writes the synthetic grounded-video world
and a tiny tokenizer, builds a random tiny Qwen2.5-VL (saved and reloaded in the HF layout),
runs cold-start SFT on the grounded traces, builds VP-Selector labels with the SFT policy as
proxy reasoner and trains the selector, then runs VisionCoach RL (GSPO + visual-prompt coaching
+ self-distillation). Prints a before/after table of the rewards on held-out prompts (format,
answer accuracy, temporal and spatial grounding, total, fraction of hard prompts) and writes
TensorBoard logs and PNG curves into --workdir.

examples:
  vcoach demo                               # 12-15 minutes on 2 CPU cores
  vcoach demo --fast --workdir /tmp/demo    # a 1-2 minute smoke run
  vcoach demo --set sft.steps=500           # change any config field
  vcoach demo --seed 1 --workdir vcoach_demo_1   # another seed (model init, data order, rng)

The settings are configs/demo.py (--fast: its `fast` argument).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", default="vcoach_demo", metavar="DIR",
                      help="work folder (default: ./vcoach_demo)")
  parser.add_argument("--fast", action="store_true", help="a 1-2 minute smoke version")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE", help="override one config field (repeatable)")
  parser.add_argument("--seed", type=int, default=None,
                      help="seed of the random model, the data order (it replaces data.seed) "
                           "and both trainers' rngs (default: 0 and the config's data.seed); "
                           "the synthetic world and the held-out prompts stay the same: runs "
                           "with one seed print the same table")
  parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
  from vcoach_jax import demo  # pylint: disable=g-import-not-at-top
  config = demo.demo_config(args.fast, args.overrides)
  result = demo.run(config, args.workdir, progress=not args.no_progress, fast=args.fast,
                    seed=args.seed)
  print()
  print(result.table)
  print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()))
  print("plots: " + ", ".join(result.plots))
  return 0
