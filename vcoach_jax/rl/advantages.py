"""Group-normalised advantages (docs/design.md §8.3): A_i = (R_i - mean) / (std_unbiased + 1e-4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

ADV_EPS = 1e-4


def group_advantages(rewards: jax.Array, group_size: int, eps: float = ADV_EPS) -> jax.Array:
  """Advantages of rollouts grouped by prompt.

  Args:
    rewards: [B*G] total rewards; rows b*G .. b*G+G-1 are prompt b's rollouts.
    group_size: G (>= 2: the unbiased std needs two samples).
    eps: added to the std so a group of equal rewards gives A = 0, not 0/0.

  Returns:
    [B*G] float32 advantages.
  """
  if group_size < 2:
    raise ValueError(f"group advantages need group_size >= 2, got {group_size}")
  r = jnp.asarray(rewards, jnp.float32).reshape(-1, group_size)
  mean = r.mean(axis=1, keepdims=True)
  std = jnp.sqrt(((r - mean) ** 2).sum(axis=1, keepdims=True) / (group_size - 1))
  return ((r - mean) / (std + eps)).reshape(-1)
