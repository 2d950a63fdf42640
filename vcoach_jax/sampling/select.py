"""Next-token selection from logits: greedy, or temperature -> top-k -> top-p -> sample.

The order and the kept sets are those of transformers' warpers (temperature, then the k largest,
then the smallest prefix of the sorted distribution whose mass reaches p; the most likely token
is always kept). The log-prob the RL loss needs is *not* taken from this truncated distribution:
see `token_logprobs`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MIN_TEMPERATURE = 1e-6  # temperature 0 means (numerically) greedy


def next_tokens(logits: jax.Array, rng: jax.Array, temperature: jax.Array, top_p: jax.Array, *,
                top_k: int, greedy: bool) -> jax.Array:
  """Samples one token per row.

  Args:
    logits: [R, V] fp32 raw logits.
    rng: a PRNG key (one draw for all rows).
    temperature: scalar > 0 (values below MIN_TEMPERATURE are clamped).
    top_p: scalar in (0, 1]; 1 disables the nucleus cut.
    top_k: static; 0 (or >= V) disables the top-k cut.
    greedy: static; argmax, ignoring the rest.

  Returns:
    [R] int32 token ids.
  """
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  v = logits.shape[-1]
  k = v if top_k <= 0 else min(top_k, v)
  x = logits / jnp.maximum(temperature, MIN_TEMPERATURE)
  vals, idx = jax.lax.top_k(x, k)  # [R, k] sorted descending
  probs = jax.nn.softmax(vals, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = (mass_before < top_p) | (top_p >= 1.0)
  keep = keep.at[:, 0].set(True)
  choice = jax.random.categorical(rng, jnp.where(keep, vals, -jnp.inf), axis=-1)
  return jnp.take_along_axis(idx, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log softmax(raw logits)[token]: the policy's log-prob at temperature 1, before any top-k /
  top-p truncation. This is what GSPO's ratio and the KL term compare against a teacher-forced
  forward of the same policy (`vcoach_jax.model.logits`), so it must not depend on the sampling
  settings. [R, V], [R] -> [R] fp32."""
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(lp, tokens[:, None], axis=-1)[:, 0]


# --- repetition penalty --------------------------------------------------------------------------
# transformers' convention (RepetitionPenaltyLogitsProcessor): every id already in the sequence
# has its logit divided by the penalty when positive and multiplied by it when negative, before
# temperature / top-k / top-p or argmax. The sequence here is the row's prompt without its left
# padding plus the tokens sampled so far. (transformers gathers over `input_ids` as given, so in
# a left-padded batch it also penalises the pad id on the padded rows; leaving padding out makes
# a row's completion independent of its batch mates and equal to transformers on that prompt
# alone, which is how the released evaluation runs: one prompt per call.)


def prompt_seen(input_ids: jax.Array, attention_mask: jax.Array, vocab: int) -> jax.Array:
  """[B, T] ids and mask -> [B, vocab] bool: the ids present where the mask is 1."""
  b = input_ids.shape[0]
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], input_ids.shape)
  ids = jnp.clip(input_ids, 0, vocab - 1)
  return jnp.zeros((b, vocab), bool).at[rows, ids].max(attention_mask.astype(bool))


def mark_seen(seen: jax.Array, tokens: jax.Array) -> jax.Array:
  """[R, V] seen, [R] new tokens -> the seen set with the tokens added."""
  return seen.at[jnp.arange(seen.shape[0]), tokens].set(True)


def repetition_penalty(logits: jax.Array, seen: jax.Array, penalty: jax.Array) -> jax.Array:
  """Logits with the seen ids' values divided (>= 0) or multiplied (< 0) by `penalty`."""
  penalised = jnp.where(logits < 0, logits * penalty, logits / penalty)
  return jnp.where(seen, penalised, logits)
