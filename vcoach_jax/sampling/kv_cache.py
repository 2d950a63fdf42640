"""The sampler's KV cache: one prefill per prompt, copied into G decode rows, sharded by rules.

The cache itself is the model's `KVCache` (`k`, `v`: [layers, rows, slots, kv_heads, head_dim],
`valid` [rows, slots], `index`, `rope_deltas` [rows]). A prompt is prefilled once (its vision
tower and text forward run once); `expand` then repeats each row G times and appends the empty
slots the completion will fill, so row b*G+j is sample j of prompt b.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding

from vcoach_jax.model.qwen2_5_vl import KVCache
from vcoach_jax.parallel import mesh as mesh_lib

# Logical axis names of the cache arrays (mapped to mesh axes by the parallel rules).
KV_AXES = (None, "batch", None, "kv_heads", None)  # [L, R, S, K, H]
VALID_AXES = ("batch", None)  # [R, S]


def expand(cache: KVCache, copies: int, max_len: int) -> KVCache:
  """[L, B, T, K, H] prompt cache -> [L, B*copies, max_len, K, H]; new slots are empty."""
  extra = max_len - cache.valid.shape[1]

  def grow(x, axis):
    x = jnp.repeat(x, copies, axis=axis) if copies > 1 else x
    pad = [(0, 0)] * x.ndim
    pad[axis + 1] = (0, extra)
    return jnp.pad(x, pad)

  return cache.replace(k=grow(cache.k, 1), v=grow(cache.v, 1), valid=grow(cache.valid, 0),
                       rope_deltas=jnp.repeat(cache.rope_deltas, copies))


def constrain(cache: KVCache, mesh: Mesh | None, rules: mesh_lib.Rules) -> KVCache:
  """Pins the cache's layout inside jit: rows over the batch axes, kv heads over `tensor`."""
  if mesh is None:
    return cache

  def pin(x, axes):
    return jax.lax.with_sharding_constraint(x, mesh_lib.named_sharding(axes, x.shape, mesh, rules))

  return cache.replace(k=pin(cache.k, KV_AXES), v=pin(cache.v, KV_AXES),
                       valid=pin(cache.valid, VALID_AXES),
                       rope_deltas=pin(cache.rope_deltas, ("batch",)),
                       index=jax.lax.with_sharding_constraint(
                           cache.index, NamedSharding(mesh, jax.sharding.PartitionSpec())))
