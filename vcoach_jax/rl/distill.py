"""Self-distillation NLL on the positives of hard prompts, and the combined loss (docs/design.md §8.4).

Per positive sequence: masked token mean of -log p of the completion (end token included) under
the *prompted* input. Per prompt: the mean over its positives. The host turns "hard prompt with k
positives" into per-row weights 1/k (0 elsewhere, `coaching.positive_weights`), so the batch term
is sum_rows(w * nll_row) / num_prompts: the mean over prompts of 1[hard] * mean-over-positives NLL.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vcoach_jax.rl.gspo import masked_mean


def nll_loss(logprobs: jax.Array, mask: jax.Array, weights: jax.Array, num_prompts: int):
  """Weighted NLL of positive rollouts.

  Args:
    logprobs: [S, N] completion token log-probs under the prompted input.
    mask: [S, N] completion mask.
    weights: [S] 1/num_positives on each positive row of a hard prompt, else 0.
    num_prompts: prompts the batch term is averaged over (the raw batch's B).

  Returns:
    (loss scalar, metrics: nll, nll_nonfinite (rows with a non-finite NLL, counted as 0),
    num_positives).
  """
  seq_nll = -masked_mean(logprobs, mask)  # [S]
  w = weights.astype(jnp.float32)
  used = w > 0
  finite = jnp.isfinite(seq_nll)
  contrib = jnp.where(used & finite, w * jnp.where(finite, seq_nll, 0.0), 0.0)
  loss = contrib.sum() / num_prompts
  metrics = {
      "nll": loss,
      "nll_nonfinite": jnp.sum((used & ~finite).astype(jnp.float32)),
      "num_positives": jnp.sum(used.astype(jnp.float32)),
  }
  return loss, metrics


def combine(gspo: jax.Array, nll: jax.Array, alpha: float) -> jax.Array:
  """L = L_GSPO + alpha * L_NLL; hard-ness is already in the NLL's weights; a non-finite NLL
  counts as zero."""
  return gspo + alpha * jnp.where(jnp.isfinite(nll), nll, 0.0)
