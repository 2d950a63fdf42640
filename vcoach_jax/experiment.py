"""The parts of a run, built from a config and a work folder: tokenizer, policy, data streams.

Every command that trains or samples (`sft`, `train`, `demo`, `eval`, `select`) starts here, so
they agree on where things live inside the work folder:

  WORKDIR/tokenizer/   the tiny tokenizer (built once) when `data.tokenizer_dir` is empty
  WORKDIR/data/        the synthetic world as TFDS (written once) when `data.tfds_dir` is empty
  WORKDIR/init/        the random starting policy, saved with `save_hf` (HF layout + tokenizer)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections

from vcoach_jax import storage


@dataclasses.dataclass
class Parts:
  """What a trainer needs, built once."""
  config: ml_collections.ConfigDict
  workdir: storage.Path  # local or remote (gs://...)
  tokenizer: Any
  model: Any  # vcoach_jax.model.Qwen2_5_VL
  mesh: Any  # jax.sharding.Mesh
  texts: Any  # data.chat.PromptTexts


def tokenizer(config: ml_collections.ConfigDict, workdir: str | os.PathLike):
  """`data.tokenizer_dir`, or the checkpoint's tokenizer, or the tiny one built in WORKDIR."""
  from vcoach_jax.data import tokenizer as tk  # pylint: disable=g-import-not-at-top
  if not config.data.tokenizer_dir and config.model.checkpoint and (
      storage.path(config.model.checkpoint) / "tokenizer.json").exists():
    return tk.load_tokenizer(config.model.checkpoint)
  return tk.from_config(config, os.fspath(storage.path(workdir) / "tokenizer"))


def policy(config: ml_collections.ConfigDict, tok, workdir: str | os.PathLike, seed: int = 0):
  """(model, mesh): the checkpoint of `model.checkpoint`, or a random model of `model.preset`
  matched to the tokenizer. A random tiny model goes through `save_hf`/`load_hf` (WORKDIR/init),
  so the embedded default exercises the same loading code as a real checkpoint."""
  from vcoach_jax.model import build  # pylint: disable=g-import-not-at-top
  if config.model.checkpoint or not config.model.preset.startswith("tiny"):
    return build.from_config(config, seed, tokenizer=tok)
  from vcoach_jax.model import hf_checkpoint  # pylint: disable=g-import-not-at-top
  from vcoach_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  init = storage.path(workdir) / "init"
  distributed.sync("policy: before checking WORKDIR/init")  # every process decides alike
  if not (init / "config.json").is_file():
    model, _ = build.from_config(config, seed, tokenizer=tok)
    hf_checkpoint.save_hf(model, init, tokenizer=tok)
  local = config.copy_and_resolve_references()
  local.model.checkpoint = os.fspath(init)
  return build.from_config(local, seed, tokenizer=tok)


def pipeline(config: ml_collections.ConfigDict, tok, workdir: str | os.PathLike,
             split: str | None = None, row_slice: tuple[int, int] | None = None, **overrides):
  """The tf.data stream of `split` (default `data.split`); the synthetic world is written to
  WORKDIR/data the first time when `data.tfds_dir` is empty. `row_slice`: this process's slice
  of each global batch (`Pipeline.from_config`)."""
  from vcoach_jax.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  local = config.copy_and_resolve_references()
  if split is not None:
    local.data.split = split
  for key, value in overrides.items():
    local.data[key] = value
  return pipeline_lib.Pipeline.from_config(local, tok, data_dir(local, workdir),
                                           row_slice=row_slice)


def data_dir(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> str:
  """`data.tfds_dir`, or WORKDIR/data (where the synthetic world is written)."""
  return config.data.tfds_dir or os.fspath(storage.path(workdir) / "data")


def split_size(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> int:
  """Examples in the `data.split` of the run's dataset (the synthetic world is written first
  when it is not yet; a prepared dataset's count comes from its metadata)."""
  from vcoach_jax.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  builder = pipeline_lib.dataset_builder(config, data_dir(config, workdir))
  return int(builder.info.splits[config.data.split].num_examples)


def build(config: ml_collections.ConfigDict, workdir: str | os.PathLike, seed: int = 0) -> Parts:
  """Tokenizer, policy and prompt texts of a run (the data stream is built by the caller, which
  knows the split and restores its position)."""
  from vcoach_jax.data import chat  # pylint: disable=g-import-not-at-top
  workdir = storage.path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tok = tokenizer(config, workdir)
  model, mesh = policy(config, tok, workdir, seed)
  return Parts(config, workdir, tok, model, mesh, chat.PromptTexts.from_config(config))
