"""The `vcoach` command line.

Each subcommand lives in its own module under `vcoach_jax/commands/`, exposing `HELP` (one line),
`DESCRIPTION` (the --help text), `add_arguments(parser)` and `run(args) -> int`. Command modules
import heavy libraries (JAX, TensorFlow) inside `run`, so `vcoach --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# Subcommand name -> module. Add a line here when a command lands.
COMMANDS: dict[str, str] = {
    "demo": "vcoach_jax.commands.demo",
    "rewards": "vcoach_jax.commands.rewards",
    "prepare": "vcoach_jax.commands.prepare",
    "sft": "vcoach_jax.commands.sft",
    "train": "vcoach_jax.commands.train",
    "select": "vcoach_jax.commands.select",
    "render": "vcoach_jax.commands.render",
    "generate": "vcoach_jax.commands.generate",
    "eval": "vcoach_jax.commands.evaluate",
    "ablate": "vcoach_jax.commands.ablate",
    "plan": "vcoach_jax.commands.plan",
}

_EPILOG = """\
Every subcommand has its own --help. Configs are ml_collections Python files with get_config();
without --config the embedded default (tiny model, synthetic data, CPU) is used, and
--set KEY=VALUE changes one field (unknown keys and wrong types are refused).
"""


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="vcoach",
      description="VisionCoach in JAX: grounded video reasoning RL with visual-prompt coaching.",
      epilog=_EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  from vcoach_jax import __version__  # pylint: disable=g-import-not-at-top
  parser.add_argument("--version", action="version", version=f"vcoach_jax {__version__}")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, module_name in COMMANDS.items():
    module = importlib.import_module(module_name)
    command = sub.add_parser(
        name, help=module.HELP, description=module.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(command)
    command.set_defaults(_run=module.run)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not getattr(args, "_run", None):
    parser.print_help()
    return 2
  try:
    return int(args._run(args) or 0)  # pylint: disable=protected-access
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  except (ValueError, FileNotFoundError) as e:
    # Bad input (config, file, record): one clear line, no traceback.
    print(f"vcoach {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
