"""Teacher-forced log-probs of completion tokens: prompt + completion through the policy.

The prompt's vision features are encoded once per prompt and scattered into its G rows
(`batching.repeat_rows`); the completion continues the prompt's positions
(`batching.append_tokens`). Only the completion positions go through the LM head: at 7B with
long video prompts the full [S, T, vocab] logits would dominate the step's memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vcoach_jax.model.batching import append_tokens, repeat_rows
from vcoach_jax.model.qwen2_5_vl import ModelInputs, Qwen2_5_VL


def sequence_inputs(prompt: ModelInputs, tokens: jax.Array, mask: jax.Array,
                    group_size: int) -> ModelInputs:
  """[B] prompts + [B*G, N] completions -> [B*G, T+N] model inputs."""
  return append_tokens(repeat_rows(prompt, group_size), tokens, mask)


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
  h = model.hidden_states(sequence_inputs(prompt, tokens, mask, group_size))
  logits = model.head(h[:, t - 1:t + n - 1])  # position t-1+j predicts completion token j
  picked = jnp.take_along_axis(logits, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)
