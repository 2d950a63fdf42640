"""Tiny policies and rollout batches for the train-step tests."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vcoach_jax import config as config_lib
from vcoach_jax.model import ModelConfig, Qwen2_5_VL, prepare_inputs
from vcoach_jax.rl.advantages import group_advantages
from vcoach_jax.rl.train_step import RolloutBatch

G, N = 2, 6  # rollouts per prompt, completion length


def tiny_model(seed: int = 0, **kw) -> Qwen2_5_VL:
  return Qwen2_5_VL(ModelConfig.tiny(**kw), rngs=nnx.Rngs(seed))


def test_config(**overrides):
  cfg = config_lib.default_config()
  cfg.optim.lr = 1e-2
  cfg.optim.total_steps = 100
  for key, value in overrides.items():
    section, leaf = key.split(".")
    cfg[section][leaf] = value
  return cfg


def prompt_inputs(cfg: ModelConfig, b: int, vision: bool, seed: int = 0, repeat_first: int = 0):
  """B left-padded prompts of different lengths; with `vision`, one 4x4-patch image each
  (no torch import: the processor-like dict is built here); `repeat_first` more rows copy row 0
  (the layout of a prompted batch's padding)."""
  rng = np.random.default_rng(seed)
  grid = (1, 4, 4)
  image = [cfg.vision_start_token_id] + [cfg.image_token_id] * 4 + [cfg.vision_end_token_id]
  rows = [rng.integers(1, 400, 2).tolist() + (image if vision else [])
          + rng.integers(1, 400, 1 + 2 * i).tolist() for i in range(b)]
  pixels = rng.standard_normal((16 * b, cfg.vision.patch_dim)).astype(np.float32)
  rows += [rows[0]] * repeat_first
  pixels = np.concatenate([pixels] + [pixels[:16]] * repeat_first)
  b += repeat_first
  t = max(map(len, rows))
  ids, mask = np.zeros((b, t), np.int32), np.zeros((b, t), np.int32)
  for i, r in enumerate(rows):
    ids[i, t - len(r):], mask[i, t - len(r):] = r, 1
  raw = {"input_ids": ids, "attention_mask": mask}
  if vision:
    raw["image_grid_thw"] = np.asarray([grid] * b)
    raw["pixel_values"] = pixels
  return prepare_inputs(cfg, raw)


def rollout_batch(cfg: ModelConfig, b: int, *, vision: bool = False, seed: int = 0,
                  prompted: bool = False) -> RolloutBatch:
  """B prompts x G completions with random tokens, ragged masks, advantages from random
  rewards and (prompted) positive weights on the first row of every prompt."""
  rng = np.random.default_rng(seed + 1)
  tokens = rng.integers(1, 400, size=(b * G, N)).astype(np.int32)
  lengths = rng.integers(2, N + 1, size=(b * G,))
  mask = (np.arange(N)[None] < lengths[:, None]).astype(np.int32)
  rewards = rng.uniform(0, 4, size=(b * G,)).astype(np.float32)
  adv = np.asarray(group_advantages(jnp.asarray(rewards), G))
  weights = np.where(np.arange(b * G) % G == 0, 1.0, 0.0).astype(np.float32) if prompted else \
      np.zeros((b * G,), np.float32)
  old = rng.normal(-5.0, 0.1, size=(b * G, N)).astype(np.float32)
  return RolloutBatch(prompt_inputs(cfg, b, vision, seed), tokens, mask, old, adv, weights)
