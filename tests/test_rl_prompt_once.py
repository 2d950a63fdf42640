"""Each prompt computed once in the train loss: the dot FLOPs of the loss's value and gradient
(counted in the compiled HLO with `parallel.hlo_stats`) drop, against the joint forward of
prompt + completion over the same B*G rows, by exactly the decoder work of the G-1 prompt
copies, computed here from the token counts and the model's widths."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

import rl_testutil as ru
from vcoach_jax.model import prepare_inputs
from vcoach_jax.model.batching import repeat_rows
from vcoach_jax.parallel import hlo_stats
from vcoach_jax.rl.logprobs import completion_logprobs

B, G, N = 2, 4, 8


def _video_prompts(cfg, seed=0):
  """B left-padded prompts, each a 2-frame 4x4-patch video (8 video tokens) and text."""
  rng = np.random.default_rng(seed)
  video = [cfg.vision_start_token_id] + [cfg.video_token_id] * 8 + [cfg.vision_end_token_id]
  rows = [rng.integers(1, 400, 20).tolist() + video + rng.integers(1, 400, 30 + 4 * i).tolist()
          for i in range(B)]
  t = max(map(len, rows))
  ids, mask = np.zeros((B, t), np.int32), np.zeros((B, t), np.int32)
  for i, r in enumerate(rows):
    ids[i, t - len(r):], mask[i, t - len(r):] = r, 1
  return prepare_inputs(cfg, {
      "input_ids": ids, "attention_mask": mask, "video_grid_thw": np.asarray([(2, 4, 4)] * B),
      "second_per_grid_ts": np.asarray([1.0] * B),
      "pixel_values_videos": rng.standard_normal((32 * B, cfg.vision.patch_dim)).astype(
          np.float32)})


def _loss_flops(model, prompt, tokens, mask, group_size) -> int:
  graphdef, params = nnx.split(model)

  def loss(p):
    lp = completion_logprobs(nnx.merge(graphdef, p), prompt, tokens, mask, group_size)
    return (lp * mask).sum()
  hlo = jax.jit(jax.value_and_grad(loss)).lower(params).compile().as_text()
  return hlo_stats.program_stats(hlo).flops


def _decoder_flops(cfg, rows: int, queries: int, slots: int) -> int:
  """Forward dot FLOPs of the decoder layers: `rows` rows of `queries` tokens attending
  `slots` key slots each (the attention computes every query x slot score)."""
  d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
  q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
  per_token = 2 * d * (2 * q + 2 * kv) + 3 * 2 * d * f  # q, o, k, v projections; SwiGLU MLP
  per_score = 2 * 2 * q  # q.k and p.v per (query, slot)
  return cfg.num_hidden_layers * rows * (queries * per_token + queries * slots * per_score)


def test_prompt_once_drops_the_prompt_copies_flops():
  model = ru.tiny_model(seed=4)
  cfg = model.config
  prompt = _video_prompts(cfg)
  t = prompt.input_ids.shape[1]
  rng = np.random.default_rng(1)
  tokens = rng.integers(1, 400, (B * G, N)).astype(np.int32)
  mask = (np.arange(N)[None] < rng.integers(2, N + 1, (B * G, 1))).astype(np.int32)
  once = _loss_flops(model, prompt, tokens, mask, G)
  joint = _loss_flops(model, repeat_rows(prompt, G), tokens, mask, 1)  # G=1: rows joint
  # Forward + backward of every decoder dot: 3x its forward FLOPs (the vision tower runs once
  # per prompt on both paths, the LM head on the N completion positions).
  expected = 3 * (_decoder_flops(cfg, B * G, t + N, t + N)
                  - _decoder_flops(cfg, B, t, t) - _decoder_flops(cfg, B * G, N, t + N))
  share = (G - 1) * t / (G * (t + N))  # decoder tokens of the joint path that copy a prompt
  print(f"loss FLOPs: joint {joint:,}, prompt once {once:,} ({once / joint:.3f}); drop "
        f"{joint - once:,}, expected {expected:,}; prompt-copy share of decoder tokens "
        f"{share:.3f}")
  assert abs((joint - once) - expected) <= 0.01 * expected, (joint, once, expected)
  assert once < joint * (1 - 0.5 * share)
