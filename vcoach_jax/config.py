"""Loading, overriding and validating ml_collections configs.

Configs are Python files with `get_config(arg=None)` (big_vision style). The embedded default,
`configs/default.py` (installed as `vcoach_jax.configs.default`), is also the schema: every other
config is checked against it at start, so an unknown key or a value of the wrong type stops the
run with the key's dotted name instead of failing deep inside training.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pathlib
import re
import traceback
from typing import Any, Callable, Iterable, Mapping

import ml_collections

ConfigDict = ml_collections.ConfigDict

# Fields whose value must be a name of a registry owned by the module that implements the choice:
# "module:NAME" (a dict keyed by the names, or a tuple of them) or "module:NAME[key]" (the entry
# `key` of such a dict of tables). Validation reads the module's registry, so a new choice is one
# edit, in its module; a new field is one line here.
CHOICES: dict[str, str] = {
    "rewards.spatial_iou_mode": "vcoach_jax.rewards.targets:OPTION_CHOICES[spatial_iou_mode]",
    "rewards.identity_match_mode":
        "vcoach_jax.rewards.targets:OPTION_CHOICES[identity_match_mode]",
    "rewards.spatial_norm_mode": "vcoach_jax.rewards.targets:OPTION_CHOICES[spatial_norm_mode]",
    "model.preset": "vcoach_jax.model.config:PRESETS",
    "model.dtype": "vcoach_jax.model.build:DTYPES",
    "model.attention_impl": "vcoach_jax.model.layers:ATTENTION",
    "model.remat_policy": "vcoach_jax.model.layers:REMAT_POLICIES",
    "data.source": "vcoach_jax.data.pipeline:SOURCES",
    "synthetic.background": "vcoach_jax.data.synthetic:BACKGROUNDS",
    "video.timestamps": "vcoach_jax.data.frame_times:TIMESTAMPS",
    "sft.loss_on": "vcoach_jax.sft.sequence:LOSS_ON",
    "prompting.draw_on": "vcoach_jax.prompting.hints:DRAW_ON",
    "selector.mode": "vcoach_jax.prompting.selector:MODES",
    "eval.benchmark": "vcoach_jax.evaluation.items:BENCHMARKS",
    "eval.split": "vcoach_jax.data.tfds_stgr:SYNTHETIC_SPLITS",
    "eval.protocol": "vcoach_jax.evaluation.protocols:REGISTRY",
    "sampling.weights_layout": "vcoach_jax.sampling.weights:LAYOUTS",
    "rl.method": "vcoach_jax.rl.methods:METHODS",
    "rl.candidate_rule": "vcoach_jax.rl.coaching:CANDIDATE_RULES",
    "rl.prompt_selector": "vcoach_jax.prompting.selector:PROMPT_SELECTORS",
    "optim.schedule": "vcoach_jax.rl.optim:SCHEDULES",
}
_REGISTRY_REF = re.compile(r"^([\w.]+):(\w+)(?:\[(\w+)\])?$")


def choices(key: str) -> tuple[Any, ...]:
  """The names config key `key` may take: the keys of its module's registry (see CHOICES)."""
  module, name, entry = _REGISTRY_REF.match(CHOICES[key]).groups()
  registry = getattr(importlib.import_module(module), name)
  return tuple(registry[entry] if entry else registry)


# Fields that must be positive integers.
POSITIVE_INTS: tuple[str, ...] = (
    "model.attention_chunk",
    "rewards.max_times",
    "rewards.max_claims",
    "rewards.max_boxes",
    "rewards.max_key_frames",
    "rewards.max_objects",
    "rewards.max_gt_boxes",
    "video.min_frames",
    "video.max_frames",
    "video.frame_factor",
    "video.pixels_factor",
    "data.batch_size",
    "data.max_prompt_length",
    "data.max_target_length",
    "data.max_images",
    "data.max_patches",
    "sampling.max_new_tokens",
    "sampling.num_samples",
    "synthetic.height",
    "synthetic.width",
    "prompting.darken_pad",
    "selector.lora_rank",
    "selector.steps",
    "selector.batch_size",
    "selector.max_length",
    "selector.max_new_tokens",
    "eval.batch_size",
    "eval.correct_score",
    "rl.num_positives",
    "rl.mu",
    "rl.minibatches",
    "rl.max_nonfinite_steps",
    "optim.total_steps",
    "optim.grad_accum",
    "checkpoint.every_steps",
    "checkpoint.keep",
    "sft.steps",
)

# Fields with a range check: (key, predicate, what is expected). Validated after types.
RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("sampling.temperature", lambda v: v >= 0, ">= 0"),
    ("sampling.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("sampling.top_k", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("sampling.repetition_penalty", lambda v: v > 0, "> 0 (1 = off)"),
    ("sampling.batch_buckets",
     lambda v: len(v) > 0 and all(isinstance(b, int) and b > 0 for b in v),
     "a non-empty tuple of positive integers"),
)

# Fields that must be >= 0 (floats or ints).
NON_NEGATIVE: tuple[str, ...] = (
    "rl.alpha", "rl.beta", "rl.eps_low", "rl.eps_high", "optim.warmup_steps", "optim.epochs",
    "optim.weight_decay", "optim.clip_norm", "optim.eps", "data.read_parts",
)

# Fields that must be > 0 (floats).
POSITIVE_FLOATS: tuple[str, ...] = ("optim.lr", "sft.lr", "sft.box_weight")


class ConfigError(ValueError):
  """A config that cannot be used; the message names the key."""


def default_config() -> ConfigDict:
  """The embedded default config (also the schema)."""
  from vcoach_jax.configs import default  # pylint: disable=g-import-not-at-top
  return default.get_config()


def _load_module(path: str):
  """Imports a config given as a file path or a dotted module name."""
  file = pathlib.Path(path)
  if file.suffix == ".py" or file.exists():
    if not file.exists():
      raise ConfigError(f"config file {path!r} does not exist")
    if file.is_dir():
      raise ConfigError(f"config {path!r} is a folder; pass a config file such as "
                        f"{os.path.join(path, 'default.py')!r}")
    spec = importlib.util.spec_from_file_location(f"_vcoach_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
      spec.loader.exec_module(module)
    except SyntaxError as e:
      raise ConfigError(f"config file {path}, line {e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigError(f"config file {path}{_line_in(e, file)}: {type(e).__name__}: {e}"
                        ) from None
    return module
  try:
    return importlib.import_module(path)
  except ImportError as e:
    raise ConfigError(f"config {path!r} is neither a file nor an importable module: {e}") from e


def _line_in(error: BaseException, file: pathlib.Path) -> str:
  """', line N' of the deepest traceback frame inside `file` ('' if none)."""
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(f.filename) == os.path.abspath(file)]
  return f", line {frames[-1].lineno}" if frames else ""


def load(spec: str | None = None, overrides: Iterable[str] = ()) -> ConfigDict:
  """Loads `path.py[:arg]` (default: the embedded default), applies `key=value` overrides,
  validates against the default schema and returns a locked ConfigDict."""
  if spec is None:
    config = default_config()
  else:
    path, _, arg = spec.partition(":")
    module = _load_module(path)
    if not hasattr(module, "get_config"):
      raise ConfigError(f"config {path!r} has no get_config()")
    try:
      config = module.get_config(arg or None)
    except (TypeError, AttributeError, KeyError, ValueError) as e:
      # ml_collections refuses a wrong type or a new key on a locked section inside the file.
      raise ConfigError(f"config {path!r}: {e}") from e
  for override in overrides:
    apply_override(config, override)
  validate(config)
  config.lock()
  return config


def apply_override(config: ConfigDict, override: str) -> None:
  """Applies one `dotted.key=value` override; the value is a Python literal or a bare string."""
  key, sep, raw = override.partition("=")
  key = key.strip()
  if not sep or not key:
    raise ConfigError(f"override {override!r} is not of the form key=value")
  *parents, leaf = key.split(".")
  node = config
  for i, name in enumerate(parents):
    if name not in node or not isinstance(node[name], ConfigDict):
      raise ConfigError(f"unknown config key {'.'.join(parents[:i + 1])!r} (in override {override!r})")
    node = node[name]
  if leaf not in node:
    raise ConfigError(f"unknown config key {key!r} (in override {override!r})")
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw
  current = node[leaf]
  if isinstance(current, str) and not isinstance(value, str):
    value = raw  # `--set name=123` on a string field means the string "123".
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  _check_type(key, current, value)
  with node.unlocked():
    node[leaf] = value


def _type_name(value: Any) -> str:
  return type(value).__name__


def _check_type(key: str, expected: Any, value: Any) -> None:
  if expected is None or value is None:
    return  # None marks an optional field (e.g. a path); any value may replace it.
  if isinstance(expected, bool) or isinstance(value, bool):
    ok = isinstance(expected, bool) and isinstance(value, bool)
  elif isinstance(expected, float):
    ok = isinstance(value, (int, float))
  elif isinstance(expected, (list, tuple)):
    ok = isinstance(value, (list, tuple))
  else:
    ok = isinstance(value, type(expected))
  if not ok:
    raise ConfigError(
        f"config key {key!r} must be of type {_type_name(expected)}, got {value!r} "
        f"({_type_name(value)})")


def validate(config: ConfigDict, schema: ConfigDict | None = None) -> None:
  """Raises ConfigError naming the first unknown key, wrong type or out-of-range value."""
  schema = default_config() if schema is None else schema
  _validate_tree(config, schema, prefix="")
  flat = flatten(config)
  for key in CHOICES:
    if key in flat and flat[key] not in (allowed := choices(key)):
      raise ConfigError(f"config key {key!r} must be one of {allowed}, got {flat[key]!r}")
  for key in POSITIVE_INTS:
    if key in flat and flat[key] <= 0:
      raise ConfigError(f"config key {key!r} must be a positive integer, got {flat[key]!r}")
  _validate_prompting(flat)
  if flat.get("data.batch_size", 1) % flat.get("optim.grad_accum", 1):
    raise ConfigError(f"config key 'optim.grad_accum' = {flat['optim.grad_accum']} must divide "
                      f"data.batch_size = {flat['data.batch_size']} (each step's batch is cut "
                      "into that many equal micro-batches)")
  for key in NON_NEGATIVE:
    if key in flat and flat[key] < 0:
      raise ConfigError(f"config key {key!r} must be >= 0, got {flat[key]!r}")
  for key in POSITIVE_FLOATS:
    if key in flat and flat[key] <= 0:
      raise ConfigError(f"config key {key!r} must be > 0, got {flat[key]!r}")
  for key in ("optim.b1", "optim.b2"):
    if key in flat and not 0 <= flat[key] < 1:
      raise ConfigError(f"config key {key!r} must be in [0, 1), got {flat[key]!r}")
  _check_k1_per_task(flat.get("rl.k1_per_task", ()))
  if flat.get("model.lora_rank", 0) < 0:
    raise ConfigError(f"config key 'model.lora_rank' must be >= 0, got {flat['model.lora_rank']}")
  for key, ok, expected in RANGES:
    if key in flat and not ok(flat[key]):
      raise ConfigError(f"config key {key!r} must be {expected}, got {flat[key]!r}")
  _validate_eval(flat)


def _validate_eval(flat: Mapping[str, Any]) -> None:
  """The eval section's judge spec, thresholds and length buckets."""
  judge = flat.get("eval.judge", "rouge")
  try:
    importlib.import_module("vcoach_jax.evaluation.judge").parse_spec(judge)
  except ValueError as e:
    raise ConfigError(f"config key 'eval.judge' must be 'exact', 'rouge' or 'model:DIR', got "
                      f"{judge!r}") from e
  for key in ("eval.rouge_thresholds", "eval.recall_thresholds", "eval.map_thresholds",
              "eval.length_bounds"):
    values = flat.get(key)
    if values is None:
      continue
    seconds = key == "eval.length_bounds"
    numbers = bool(values) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    in_range = numbers and (values[0] > 0 if seconds else 0 <= values[0] and values[-1] <= 1)
    if not (numbers and in_range and list(values) == sorted(values)):
      what = "positive seconds" if seconds else "numbers in [0, 1]"
      raise ConfigError(f"config key {key!r} must be increasing {what}, got {values!r}")
  if "eval.rouge_thresholds" in flat and len(flat["eval.rouge_thresholds"]) != 3:
    raise ConfigError("config key 'eval.rouge_thresholds' must hold 3 numbers (scores 1, 2, 3), "
                      f"got {flat['eval.rouge_thresholds']!r}")
  if flat.get("eval.correct_score", 2) > 3:
    raise ConfigError(f"config key 'eval.correct_score' must be 1..3, got {flat['eval.correct_score']}")
  for key in ("eval.joint_tiou", "eval.joint_miou"):
    if key in flat and not 0 <= flat[key] <= 1:
      raise ConfigError(f"config key {key!r} must be in [0, 1], got {flat[key]!r}")
  if "eval.lgm_eps" in flat and not 0 < flat["eval.lgm_eps"] < 1:
    raise ConfigError(f"config key 'eval.lgm_eps' must be in (0, 1), got {flat['eval.lgm_eps']!r}")
  if flat.get("eval.limit", 0) < 0:
    raise ConfigError(f"config key 'eval.limit' must be >= 0, got {flat['eval.limit']}")


def _validate_prompting(flat: Mapping[str, Any]) -> None:
  """Visual-prompt and selector values that the tables above cannot state."""
  factor = flat.get("prompting.darken_factor", 0.3)
  if not 0 <= factor <= 1:
    raise ConfigError(f"config key 'prompting.darken_factor' must be in [0, 1], got {factor!r}")
  types = tuple(flat.get("selector.types", ("raw", "darken")))
  from vcoach_jax.prompting import visual_prompts  # pylint: disable=g-import-not-at-top
  known = visual_prompts.PROMPT_TYPES
  if len(types) < 2 or len(set(types)) != len(types) or types[0] != "raw" or any(
      t not in known for t in types):
    raise ConfigError(f"config key 'selector.types' must be distinct prompt types from "
                      f"{known}, at least two, starting with 'raw'; got {types!r}")
  for key in ("selector.lr",):
    if key in flat and not flat[key] > 0:
      raise ConfigError(f"config key {key!r} must be positive, got {flat[key]!r}")


def _check_k1_per_task(pairs) -> None:
  for pair in pairs:
    ok = (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], str)
          and isinstance(pair[1], (int, float)) and not isinstance(pair[1], bool))
    if not ok:
      raise ConfigError(f"config key 'rl.k1_per_task' must hold (task name, k1) pairs, got "
                        f"{pair!r}")


def k1_per_task(config: ConfigDict) -> dict[str, float]:
  """`config.rl.k1_per_task` as {task: k1}."""
  return {str(task): float(k1) for task, k1 in config.rl.k1_per_task}


def _validate_tree(config: Mapping[str, Any], schema: Mapping[str, Any], prefix: str) -> None:
  for key in config.keys():
    dotted = f"{prefix}{key}"
    if key not in schema:
      raise ConfigError(f"unknown config key {dotted!r}; known keys here: {sorted(schema.keys())}")
    value, expected = config[key], schema[key]
    if isinstance(expected, ConfigDict):
      if not isinstance(value, (ConfigDict, dict)):
        raise ConfigError(f"config key {dotted!r} must be a section (ConfigDict), got {value!r}")
      _validate_tree(value, expected, prefix=dotted + ".")
    else:
      _check_type(dotted, expected, value)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a.b': value} view of a nested config."""
  out = {}
  for key, value in config.items():
    if isinstance(value, (ConfigDict, dict)):
      out.update(flatten(value, prefix=f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def reward_options(config: ConfigDict) -> dict[str, Any]:
  """The four reward options of `vcoach_jax.rewards.compute` from a config."""
  r = config.rewards
  return {
      "spatial_iou_mode": r.spatial_iou_mode,
      "identity_match_mode": r.identity_match_mode,
      "spatial_norm_mode": r.spatial_norm_mode,
      "correct_tempgate": r.correct_tempgate,
  }


def add_config_flags(parser, *, help_default: str = "the embedded default") -> Callable:
  """Adds --config / --set to an argparse parser; returns a loader for the parsed args."""
  parser.add_argument(
      "--config", default=None, metavar="FILE.py[:ARG]",
      help=f"ml_collections config file with get_config() (default: {help_default}).")
  parser.add_argument(
      "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
      help="override one config field, e.g. --set rewards.spatial_iou_mode=max (repeatable).")
  return lambda args: load(args.config, args.overrides)


def with_overrides(config: ConfigDict, overrides: Iterable[str]) -> ConfigDict:
  """A validated, locked copy of `config` with `key=value` overrides applied (the original is
  unchanged): how a command derives the config of one phase (e.g. SFT's learning rate)."""
  new = ConfigDict(config.to_dict())
  for override in overrides:
    apply_override(new, override)
  validate(new)
  new.lock()
  return new
