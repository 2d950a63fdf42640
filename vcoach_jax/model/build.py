"""The model a run config asks for: `config.model` (checkpoint or preset, dtype, attention,
remat, LoRA) placed on the mesh of `config.parallel`."""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections
from flax import nnx

from vcoach_jax.model import lora
from vcoach_jax.model.config import PRESETS, ModelConfig
from vcoach_jax.model.hf_checkpoint import load_hf
from vcoach_jax.model.qwen2_5_vl import Qwen2_5_VL
from vcoach_jax.parallel import activations, mesh as mesh_lib

# Params and compute dtypes (`config.model.dtype`): name -> jnp dtype.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def preset_config(preset: str, tokenizer=None, **runtime) -> ModelConfig:
  """The `ModelConfig` of a preset; with a tokenizer, its vocabulary size (rounded up to a
  multiple of 128) and the ids of its Qwen special tokens replace the preset's (the tiny local
  tokenizer puts them at other ids than Qwen's)."""
  if preset not in PRESETS:
    raise ValueError(f"config key 'model.preset' must be one of {tuple(PRESETS)}, got "
                     f"{preset!r}")
  cfg = PRESETS[preset]().replace(**runtime)
  if tokenizer is None:
    return cfg
  from vcoach_jax.data.tokenizer import special_ids  # pylint: disable=g-import-not-at-top
  ids = special_ids(tokenizer)
  vocab = max(0 if preset.startswith("tiny") else cfg.vocab_size, -(-len(tokenizer) // 128) * 128)
  return cfg.replace(vocab_size=vocab, image_token_id=ids["<|image_pad|>"],
                     video_token_id=ids["<|video_pad|>"],
                     vision_start_token_id=ids["<|vision_start|>"],
                     vision_end_token_id=ids["<|vision_end|>"], bos_token_id=ids["<|endoftext|>"],
                     eos_token_id=ids["<|im_end|>"])


def from_config(config: ml_collections.ConfigDict, seed: int = 0, tokenizer=None):
  """Returns (model, mesh) for a run config.

  With `config.model.checkpoint` set, the weights are read with `load_hf`; otherwise a random
  model of `config.model.preset` is built (matched to `tokenizer`'s vocabulary and special ids
  when one is given). LoRA adapters are attached when `lora_rank > 0`.
  """
  m = config.model
  if m.dtype not in DTYPES:
    raise ValueError(f"config key 'model.dtype' must be one of {tuple(DTYPES)}, got {m.dtype!r}")
  dtype = DTYPES[m.dtype]
  mesh = mesh_lib.make_mesh(dict(config.parallel.mesh))
  rules = mesh_lib.rules_from_config(config.parallel.rules)
  runtime = ModelConfig.runtime_options(m)
  if m.checkpoint:
    model = load_hf(m.checkpoint, dtype=dtype, mesh=mesh, rules=rules, **runtime)
  else:
    cfg = preset_config(m.preset, tokenizer, **runtime)
    model = Qwen2_5_VL(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(seed))
    mesh_lib.shard_model(model, mesh, rules)
  if m.lora_rank > 0:
    lora.apply_lora(model, rank=m.lora_rank, alpha=m.lora_alpha, targets=tuple(m.lora_targets),
                    rngs=nnx.Rngs(seed + 1))
    mesh_lib.shard_model(model, mesh, rules)
  activations.attach(model, mesh, rules)
  return model, mesh
