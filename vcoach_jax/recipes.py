"""The `--config FILE.py:ARG` argument of the shipped configs (big_vision's convention): a
comma-separated list of `name=value` or bare `name` (true). Every shipped config takes

  runlocal        the recipe on this machine, with the tiny model and the synthetic world
  method=NAME     the method variant (`config.rl.method`: a name of vcoach_jax/rl/methods.py)

and some take more (configs/demo.py: `variant=demo|ablate`, `fast`). A config file reads them so:

  def get_config(arg=None):
    arg = recipes.arguments(arg)                   # or recipes.arguments(arg, fast=False, ...)
    config = ...                                   # the recipe
    return recipes.finish(config, arg)             # method, then runlocal

`vcoach train --config configs/visioncoach_7b.py:runlocal --steps 2` swaps the model for the
tiny one and the data for the synthetic world (with the data shapes that world needs) and keeps
every other setting: scanned layers, chunked attention, remat, bf16, gradient accumulation,
timestamps, batch size, the optimiser. A recipe that cannot run then fails in a minute on a CPU,
not after a pod has started.
"""

from __future__ import annotations

from typing import Any

import ml_collections

# Paths of the real run: the tiny model and the synthetic world have none (a `--set` after the
# config still gives one, e.g. the runlocal SFT's policy as model.checkpoint).
LOCAL_EMPTY = ("model.checkpoint", "data.tfds_dir", "data.tokenizer_dir", "selector.backbone",
               "selector.data", "selector.cache", "selector.checkpoint_dir", "eval.data",
               "eval.video_dir")
# The world's data shapes (the embedded default's: what the synthetic clips need).
LOCAL_FROM_DEFAULT = ("data.max_patches", "data.max_images", "data.max_target_length",
                      "data.max_prompt_length", "data.prompt_buckets")
LOCAL_SET = {
    "model.preset": "tiny",
    "data.source": "synthetic",
    "eval.benchmark": "synthetic",
    # The synthetic benchmark is read from the prepared world, with no native video for a
    # reference protocol to sample: items are shown as in training.
    "eval.protocol": "training",
    "selector.reasoners": (),  # proxy reasoners: the policy of `model.*`
    "synthetic.num_train": 32,  # a small world: written in seconds
    "synthetic.num_eval": 8,
    "sampling.max_new_tokens": 96,  # the world's traces need at most 80 tokens
    "selector.max_new_tokens": 96,
}

_TRUE, _FALSE = ("true", "1", "yes", ""), ("false", "0", "no")


def _convert(name: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    if text.lower() not in _TRUE + _FALSE:
      raise ValueError(f"config argument {name}={text!r}: expected true or false")
    return text.lower() in _TRUE
  try:
    return type(default)(text)
  except ValueError as e:
    raise ValueError(f"config argument {name}={text!r}: expected {type(default).__name__}") from e


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """`"name=value,flag"` -> a ConfigDict holding every name of `spec` (its default unless the
  argument gives it). A bare name is True; a value takes the type of its default. A name not in
  `spec` is refused, naming the known ones."""
  out = dict(spec)
  for item in filter(None, (arg or "").split(",")):
    name, _, text = item.partition("=")
    name = name.strip()
    if name not in spec:
      raise ValueError(f"unknown config argument {name!r} (in {arg!r}); known: {sorted(spec)}")
    out[name] = _convert(name, text.strip(), spec[name])
  return ml_collections.ConfigDict(out)


def arguments(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """`parse_arg` with the arguments every shipped config takes (`runlocal`, `method`) and
  `spec`'s."""
  return parse_arg(arg, runlocal=False, method="", **spec)


def set_method(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """`config.rl.method = name`, refusing a name that is not a method (vcoach_jax/rl/methods.py)."""
  from vcoach_jax.rl import methods  # pylint: disable=g-import-not-at-top
  if name not in methods.METHODS:
    raise ValueError(f"config argument method={name!r}: expected one of {tuple(methods.METHODS)}")
  config.rl.method = name
  return config


def finish(config: ml_collections.ConfigDict, arg: ml_collections.ConfigDict
           ) -> ml_collections.ConfigDict:
  """Applies the common arguments of `arguments` to a recipe: `method`, then `runlocal`."""
  if arg.method:
    set_method(config, arg.method)
  return runlocal(config) if arg.runlocal else config


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  *parents, leaf = key.split(".")
  node = config
  for name in parents:
    node = node[name]
  node[leaf] = value


def runlocal(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` on the tiny model and the synthetic world (in place; returned)."""
  from vcoach_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  default = config_lib.flatten(config_lib.default_config())
  for key in LOCAL_EMPTY:
    _set(config, key, "")
  for key in LOCAL_FROM_DEFAULT:
    _set(config, key, default[key])
  for key, value in LOCAL_SET.items():
    _set(config, key, value)
  return config
