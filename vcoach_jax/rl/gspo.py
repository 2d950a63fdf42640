"""GSPO loss with the k3 KL to a frozen reference (docs/design.md §8.3).

Per sequence i with completion mask m: s_i = masked mean over t of (lp - lp_old), clamped to
<= 10 before exp; r_i = exp(s_i); objective min(r_i A_i, clip(r_i, 1-eps_low, 1+eps_high) A_i).
The per-token loss is -objective_i + beta * kl_t with kl_t = exp(x) - x - 1, x = clamp(lp_ref -
lp, -10, 10); it is averaged over the sequence's tokens, then over sequences.

With one optimisation pass per rollout batch (mu = 1, the reference) pass `old_logprobs=None`:
lp_old = stop_gradient(lp), so r = 1 in value and the gradient of the GSPO term is
-A_i * mean_t grad lp. With mu > 1 pass the stored log-probs of the sampling policy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOG_RATIO_MAX = 10.0  # clamp on the sequence log-ratio before exp
KL_LOG_CLAMP = 10.0  # clamp on lp_ref - lp in the k3 estimator


def masked_mean(x: jax.Array, mask: jax.Array, axis: int = -1) -> jax.Array:
  """Mean of `x` over `axis` where `mask` is set; masked entries never leak (even NaN/inf), and
  an all-masked row gives 0."""
  m = mask.astype(jnp.float32)
  total = jnp.sum(jnp.where(m > 0, x, 0.0), axis=axis)
  return total / jnp.maximum(m.sum(axis=axis), 1.0)


def k3_kl(logprobs: jax.Array, ref_logprobs: jax.Array) -> jax.Array:
  """Per-token k3 estimate of KL(policy || reference), with lp_ref - lp clamped to [-10, 10]."""
  x = jnp.clip(ref_logprobs - logprobs, -KL_LOG_CLAMP, KL_LOG_CLAMP)
  return jnp.exp(x) - x - 1.0


def gspo_loss(logprobs: jax.Array, old_logprobs: jax.Array | None,
              ref_logprobs: jax.Array | None, mask: jax.Array, advantages: jax.Array, *,
              eps_low: float, eps_high: float, beta: float):
  """GSPO + beta * KL, aggregated token-mean per sequence then mean over sequences.

  Args:
    logprobs: [S, N] log-probs of the completion tokens under the policy being trained.
    old_logprobs: [S, N] log-probs under the sampling policy (mu > 1), or None for mu = 1.
    ref_logprobs: [S, N] log-probs under the frozen reference, or None (no KL term).
    mask: [S, N] completion mask (1 up to and including the end token).
    advantages: [S] group advantages.
    eps_low, eps_high: clip band [1 - eps_low, 1 + eps_high] of the sequence ratio.
    beta: KL weight.

  Returns:
    (loss scalar, metrics dict: gspo, kl, clip_frac, ratio_mean).
  """
  m = mask.astype(jnp.float32)
  if old_logprobs is None:
    old_logprobs = jax.lax.stop_gradient(logprobs)
  log_ratio = masked_mean(logprobs - old_logprobs, m)
  ratio = jnp.exp(jnp.minimum(log_ratio, LOG_RATIO_MAX))
  adv = advantages.astype(jnp.float32)
  clipped_ratio = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
  objective = jnp.minimum(ratio * adv, clipped_ratio * adv)  # [S]
  # The sequence term is constant over t, so its token mean is itself.
  per_seq = -objective
  kl_seq = jnp.zeros_like(per_seq)
  if ref_logprobs is not None and beta:
    kl_seq = masked_mean(k3_kl(logprobs, ref_logprobs), m)
    per_seq = per_seq + beta * kl_seq
  clipped = ((adv > 0) & (ratio > 1.0 + eps_high)) | ((adv < 0) & (ratio < 1.0 - eps_low))
  metrics = {
      "gspo": jnp.mean(-objective),
      "kl": jnp.mean(kl_seq),
      "clip_frac": jnp.mean(clipped.astype(jnp.float32)),
      "ratio_mean": jnp.mean(ratio),
  }
  return jnp.mean(per_seq), metrics
