"""Teacher-forced log-probs of completion tokens: prompt + completion through the policy.

With G > 1 completions per prompt the prompt runs once per prompt, not once per completion:
the prompt's forward fills a KV cache ([B] rows, its vision features encoded once), the cache
rows are repeated G times (`kv_cache.expand`) and the [B*G, N] completions run against it,
their positions continuing the prompt's (`slot + rope_deltas`, as in decoding). Every token
attends exactly what it attends in one forward over prompt + completion (`sequence_inputs`,
the G = 1 path and the reference of the tests), so the log-probs are the same up to float
rounding, and gradients flow through the cache into the prompt's forward. This is what makes
the RL step cheap: the [B*G, T+N]^2 attention of the joint forward becomes [B, T]^2 plus
[B*G, N] x [T+N]. Only the completion positions go through the LM head.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vcoach_jax.model.batching import append_tokens, repeat_rows
from vcoach_jax.model.qwen2_5_vl import KVCache, ModelInputs, Qwen2_5_VL, init_cache
from vcoach_jax.sampling import kv_cache


def sequence_inputs(prompt: ModelInputs, tokens: jax.Array, mask: jax.Array,
                    group_size: int) -> ModelInputs:
  """[B] prompts + [B*G, N] completions -> [B*G, T+N] model inputs."""
  return append_tokens(repeat_rows(prompt, group_size), tokens, mask)


def _picked(model: Qwen2_5_VL, h: jax.Array, tokens: jax.Array) -> jax.Array:
  logits = model.head(h)
  picked = jnp.take_along_axis(logits, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def completion_logprobs(model: Qwen2_5_VL, prompt: ModelInputs, tokens: jax.Array,
                        mask: jax.Array, group_size: int) -> jax.Array:
  """[B*G, N] fp32 log p(token_t | prompt, tokens_<t) under `model`.

  Args:
    model: the policy (or reference), merged from its state inside the jit.
    prompt: [B] left-padded prompts.
    tokens: [B*G, N] completion ids (rows b*G.. belong to prompt b).
    mask: [B*G, N] completion mask (tokens after the end are not attended to).
    group_size: G.
  """
  t, n = prompt.input_ids.shape[1], tokens.shape[1]
  if group_size == 1:
    h = model.hidden_states(sequence_inputs(prompt, tokens, mask, 1))
    return _picked(model, h[:, t - 1:t + n - 1], tokens)  # position t-1+j predicts token j
  return states_logprobs(model, prompt, prompt_states(model, prompt), tokens, mask, group_size)


class PromptStates(NamedTuple):
  """What the completions of B prompts read from the prompts' forward (all differentiable):
  the keys and values of every layer and the last position's hidden state."""
  last: jax.Array  # [B, D] final-norm hidden state of the last prompt position (predicts token 0)
  k: jax.Array  # [L, B, T, K, H]
  v: jax.Array  # [L, B, T, K, H]


def prompt_states(model: Qwen2_5_VL, prompt: ModelInputs) -> PromptStates:
  """The prompts' forward (vision tower included), once per prompt."""
  b, t = prompt.input_ids.shape
  h, cache = model.hidden_states_cached(prompt, init_cache(model.config, b, t, model.dtype))
  return PromptStates(h[:, -1], cache.k, cache.v)


def states_logprobs(model: Qwen2_5_VL, prompt: ModelInputs, states: PromptStates,
                    tokens: jax.Array, mask: jax.Array, group_size: int) -> jax.Array:
  """`completion_logprobs` from the prompts' `states` (`prompt_states`): the [B*G, N]
  completions run against the prompt cache repeated G times. Only the prompt's attention mask
  and rope deltas are read from `prompt`."""
  t, n = prompt.input_ids.shape[1], tokens.shape[1]
  cache = KVCache(k=states.k, v=states.v, valid=prompt.attention_mask.astype(bool),
                  index=jnp.asarray(t, jnp.int32), rope_deltas=prompt.rope_deltas)
  cache = kv_cache.expand(cache, group_size, t + n)
  deltas = cache.rope_deltas  # [B*G]
  pos = (t + jnp.arange(n, dtype=jnp.int32))[None, :] + deltas[:, None]
  completion = ModelInputs(input_ids=tokens.astype(jnp.int32), attention_mask=mask.astype(bool),
                           positions=jnp.broadcast_to(pos[None], (3,) + pos.shape),
                           rope_deltas=deltas)
  h_completion, _ = model.hidden_states_cached(completion, cache)
  last = jnp.repeat(states.last[:, None], group_size, axis=0)  # predicts token 0
  h = jnp.concatenate([last, h_completion[:, :n - 1]], axis=1)
  return _picked(model, h, tokens)
