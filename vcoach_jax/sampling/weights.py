"""The weights the sampler decodes from: a copy of the policy in the compute dtype, laid out for
decoding, made once per `generate` call.

The trainer keeps fp32 master weights sharded over `fsdp` (the model width split across the
batch devices). Decoding from them would make XLA gather every layer's weights again at every
token of the decode loop. Instead the sampler casts the floating weights to the model's compute
dtype (every layer casts its weights to that dtype before use, so the values are the same) and
places them once per call in one of these layouts (`config.sampling.weights_layout`):

  replicated  every device holds all the weights; decoding moves no weights at all.
  tensor      weights split over the mesh's `tensor` axis only (heads, mlp, vocab, by the
              parallel rules); no fsdp split, so decoding gathers none of them (the tensor
              axis all-reduces activations instead).
  as_trained  the state as passed (the master weights, their dtype and sharding).
  auto        replicated when the compute-dtype weights take at most `FIT_FRACTION` of one
              device's memory (or the device does not report its memory, as on CPU),
              tensor otherwise.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vcoach_jax.parallel import mesh as mesh_lib

LAYOUTS = ("auto", "replicated", "tensor", "as_trained")
# `auto` replicates when the weights take at most this share of one device's memory (the rest
# is left for the KV cache and the activations).
FIT_FRACTION = 0.5


def tensor_rules(rules: mesh_lib.Rules) -> mesh_lib.Rules:
  """The parallel rules with every mesh axis but `tensor` removed (weights split by heads, mlp
  and vocab only)."""
  return tuple((name, tuple(a for a in axes if a == "tensor")) for name, axes in rules)


def compute_bytes(state: nnx.State, dtype) -> int:
  """Bytes of `state` with its floating leaves in `dtype`."""
  size = jnp.dtype(dtype).itemsize
  return sum(int(np.prod(x.shape)) * (size if jnp.issubdtype(x.dtype, jnp.floating)
                                      else x.dtype.itemsize)
             for x in jax.tree.leaves(state))


def device_memory(mesh: Mesh | None) -> int | None:
  """Bytes of memory of one device of `mesh` (None when the backend does not say, e.g. CPU)."""
  device = jax.devices()[0] if mesh is None else mesh.devices.flat[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  # backends without memory stats
    return None
  return None if not stats else stats.get("bytes_limit")


def resolve(layout: str, weight_bytes: int, memory: int | None) -> str:
  """`auto` -> `replicated` or `tensor`; other layouts unchanged."""
  if layout not in LAYOUTS:
    raise ValueError(f"sampling weights_layout must be one of {LAYOUTS}, got {layout!r}")
  if layout != "auto":
    return layout
  fits = memory is None or weight_bytes <= FIT_FRACTION * memory
  return "replicated" if fits else "tensor"


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


def shardings(state: nnx.State, layout: str, mesh: Mesh, rules: mesh_lib.Rules) -> Any:
  """A state-shaped tree (prefix) of NamedShardings for `layout` (`replicated` or `tensor`)."""
  if layout == "replicated":
    return NamedSharding(mesh, PartitionSpec())
  if layout == "tensor":
    return mesh_lib.state_shardings(state, mesh, tensor_rules(rules))
  raise ValueError(f"no placement for layout {layout!r}")


def _cast(state: nnx.State, dtype) -> nnx.State:
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)


class Placer:
  """Makes the decoding copy of a state; one jitted cast-and-place program per (layout, state
  structure), reused by every call."""

  def __init__(self, mesh: Mesh | None, rules: mesh_lib.Rules, dtype):
    self.mesh, self.rules, self.dtype = mesh, rules, dtype
    self._programs: dict[Any, Any] = {}
    self.last_layout = None  # the layout `auto` resolved to at the last call

  def __call__(self, state: nnx.State, layout: str) -> nnx.State:
    layout = resolve(layout, compute_bytes(state, self.dtype), device_memory(self.mesh))
    self.last_layout = layout
    if layout == "as_trained":
      return state
    key = (layout, jax.tree.structure(state))
    if key not in self._programs:
      out = None if self.mesh is None else shardings(state, layout, self.mesh, self.rules)
      self._programs[key] = jax.jit(lambda s: _cast(s, self.dtype), out_shardings=out)
    if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state)):
      return jax.eval_shape(self._programs[key], state)  # an AOT plan: shapes and placement
    return self._programs[key](state)
