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
