"""`vcoach ablate`: the method's ablation in miniature on the embedded default."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from vcoach_jax import storage

HELP = "ablate the method on the synthetic world: GSPO vs + coaching vs + self-distillation"
DESCRIPTION = """\
The ablation in miniature (docs/design.md §10): cold-start SFT once (plus the VP-Selector), then three
RL variants from the same start and the same data order, for --seeds seeds each:

  gspo   GSPO with the grounding rewards only, no coaching
  coach  + visual-prompt coaching, no self-distillation: the prompted rollouts of hard prompts
         also enter the GSPO loss as their own groups (advantages normalised within each
         prompted group, under the prompted input), no NLL (rl.method=coach)
  full   + self-distillation (the method: alpha * NLL on the positives of prompted rollouts)

Each run is evaluated on the held-out synthetic split: the probe's per-reward means (sampled
rollouts) and the V-STAR-style metrics of `vcoach eval` (greedy). Writes WORKDIR/ablation.md and
ablation.json (mean ± std over seeds) and WORKDIR/reward_total.png (reward curves per variant,
mean over seeds). A rerun with the same --workdir reuses the SFT start and finished runs.

examples:
  vcoach ablate                                   # 3 seeds; ~17 minutes on 2 CPU cores
  vcoach ablate --fast --workdir /tmp/ablate      # a ~2 minute smoke run (1 seed)
  vcoach ablate --seeds 2 --steps 6 --set synthetic.occlusion=0.5

The settings are configs/demo.py:variant=ablate (--fast: its `fast` argument).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", default="vcoach_ablate", metavar="DIR",
                      help="work folder (default: ./vcoach_ablate)")
  parser.add_argument("--fast", action="store_true", help="a ~2 minute smoke version")
  parser.add_argument("--seeds", type=int, default=None, metavar="S",
                      help="seeds per variant (default: 3; --fast: 1)")
  parser.add_argument("--steps", type=int, default=None, metavar="N",
                      help="RL steps per run (default: optim.total_steps)")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE", help="override one config field (repeatable)")
  parser.add_argument("--compile-cache", default=None, metavar="DIR",
                      help="JAX persistent compilation cache shared by the runs "
                           "(default: WORKDIR/jax_cache; 'none' = off)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  from vcoach_jax import ablate  # pylint: disable=g-import-not-at-top
  seeds = args.seeds if args.seeds is not None else 1 if args.fast else 3
  if seeds < 1 or (args.steps is not None and args.steps < 1):
    raise ValueError(f"--seeds ({seeds}) and --steps ({args.steps}) must be positive")
  cache = args.compile_cache or os.fspath(storage.path(args.workdir) / "jax_cache")
  if cache != "none":
    # Nine runs compile the same sampler and train-step programs: compile them once.
    jax.config.update("jax_compilation_cache_dir", os.fspath(storage.path(cache)))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  config = ablate.ablate_config(args.fast, args.overrides)
  command = "vcoach " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == [
      "ablate"] else ""
  result = ablate.run(config, args.workdir, seeds=seeds, steps=args.steps,
                      progress=not args.no_progress, fast=args.fast, command=command)
  print()
  print(result.markdown)
  print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items()))
  print(f"table: {storage.path(args.workdir) / 'ablation.md'}, plot: {result.plot}")
  return 0
