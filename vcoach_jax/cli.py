"""The `vcoach` command line.

Each subcommand lives in its own module under `vcoach_jax/commands/`, exposing `HELP` (one line),
`DESCRIPTION` (the --help text), `add_arguments(parser)` and `run(args) -> int`. Command modules
import heavy libraries (JAX, TensorFlow) inside `run`, so `vcoach --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
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


# TensorFlow only moves data here (tf.data, TFDS, TensorBoard summaries), so its start-up lines are
# noise to a `vcoach` user. Set before TensorFlow's first import (a value already set is kept):
# no INFO lines from its C++ logging (the CPU-feature notice; warnings and errors still print),
# and TensorFlow's own kernels instead of oneDNN's (whose start-up notice about float round-off
# concerns TensorFlow math, which vcoach_jax does not do: the model runs in JAX).
TF_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "1", "TF_ENABLE_ONEDNN_OPTS": "0"}
# TFDS warns about its own internal use of a deprecated field while decoding examples (through
# absl logging, once per feature): nothing a user can change. Only these lines are dropped.
_TFDS_DEPRECATION = re.compile(r"`(FeatureConnector|TensorInfo)\.dtype` is deprecated")


class _DropTfdsDeprecation(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return not _TFDS_DEPRECATION.match(record.getMessage())


def quiet_tensorflow() -> None:
  """Silences TensorFlow's start-up lines and TFDS's deprecation notices (see TF_QUIET_ENV);
  other log lines, warnings and errors pass."""
  for key, value in TF_QUIET_ENV.items():
    os.environ.setdefault(key, value)
  absl = logging.getLogger("absl")
  if not any(isinstance(f, _DropTfdsDeprecation) for f in absl.filters):
    absl.addFilter(_DropTfdsDeprecation())


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
  quiet_tensorflow()
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
