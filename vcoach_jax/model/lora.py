"""LoRA adapters attached to the model's linear layers, without copying the model.

`apply_lora` attaches a `LoRAAdapter` (`x @ A @ B * alpha / rank`, B initialised to zero) to every
`layers.Linear` whose dotted path matches one of the target names; its weights are
`nnx.LoRAParam`s, so an optimizer can train only them (`nnx.LoRAParam` filter). `merge_lora`
folds the deltas into the kernels in place; `merged_params` yields merged weights without
touching the model (what `save_hf` writes).
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
from flax import nnx

from vcoach_jax.model import layers as lyr

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRAAdapter(nnx.Module):
  """The low-rank delta of one linear layer: [din] -> [dout]."""

  def __init__(self, din: int, dout: int, *, rank: int, alpha: float, axes: tuple[str, str],
               dtype, param_dtype, rngs: nnx.Rngs):
    self.a = nnx.LoRAParam(
        (jax.random.normal(rngs.params(), (din, rank)) / rank).astype(param_dtype),
        logical_axes=(axes[0], lyr.LORA_RANK))
    self.b = nnx.LoRAParam(jnp.zeros((rank, dout), param_dtype),
                           logical_axes=(lyr.LORA_RANK, axes[1]))
    self.scale = alpha / rank
    self.dtype = dtype

  @jax.named_scope("lora")
  def __call__(self, x: jax.Array) -> jax.Array:
    h = jnp.einsum("...i,ir->...r", x.astype(self.dtype), self.a[...].astype(self.dtype))
    return jnp.einsum("...r,ro->...o", h, self.b[...].astype(self.dtype)) * self.scale

  def delta(self) -> jax.Array:
    """[(layers,) din, dout] fp32: the update this adapter adds to the kernel."""
    return (self.a[...].astype(jnp.float32) @ self.b[...].astype(jnp.float32)) * self.scale


def _targets_match(path: tuple, targets: Iterable[str]) -> bool:
  dotted = ".".join(str(p) for p in path)
  return any(re.search(rf"(^|\.){t}$", dotted) for t in targets)


def lora_linears(model: nnx.Module) -> list[tuple[tuple, lyr.Linear]]:
  return [(tuple(p), n) for p, n in nnx.iter_graph(model)
          if isinstance(n, lyr.Linear) and n.lora is not None]


def apply_lora(model: nnx.Module, rank: int, alpha: float,
               targets: Iterable[str] = DEFAULT_TARGETS, rngs: nnx.Rngs | None = None) -> int:
  """Attaches adapters to the matching linear layers (in place); returns how many.

  Args:
    model: any module built from `layers.Linear`.
    rank, alpha: LoRA rank r and alpha (scale alpha / r).
    targets: names (regex) matched against the end of each linear's dotted path, e.g. `q_proj`
      or `model\\.layers\\.\\d+\\.self_attn\\.q_proj`.
    rngs: initialiser randomness for A.
  """
  rngs = rngs or nnx.Rngs(0)
  targets = tuple(targets)
  found = [(p, n) for p, n in nnx.iter_graph(model)
           if isinstance(n, lyr.Linear) and _targets_match(tuple(p), targets)]
  for _, linear in found:
    kernel = linear.kernel.get_value()
    axes = tuple(linear.kernel.get_metadata().get("logical_axes", (None,) * kernel.ndim))

    def adapter(linear=linear, kernel=kernel, axes=axes):
      return LoRAAdapter(*kernel.shape[-2:], rank=rank, alpha=alpha, axes=axes[-2:],
                         dtype=linear.dtype, param_dtype=kernel.dtype, rngs=rngs)
    # A stacked kernel [layers, din, dout] (scanned layers or blocks) gets stacked adapters, so
    # each layer's slice inside the scan carries its own A and B.
    linear.lora = (lyr.stack_modules([adapter() for _ in range(kernel.shape[0])])
                   if kernel.ndim == 3 else adapter())
  if not found:
    raise ValueError(f"no linear layer matches the LoRA targets {targets}")
  return len(found)


def merge_lora(model: nnx.Module) -> None:
  """Folds every adapter into its kernel and removes the adapters (in place)."""
  for _, linear in lora_linears(model):
    kernel = linear.kernel.get_value()
    linear.kernel.set_value((kernel.astype(jnp.float32) + linear.lora.delta()).astype(kernel.dtype))
    linear.lora = None


def merged_params(model: nnx.Module) -> Iterator[tuple[tuple, jax.Array]]:
  """(path, value) of every non-LoRA parameter, with adapter deltas added to their kernels."""
  deltas = {path: linear.lora for path, linear in lora_linears(model)}
  state = nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))
  for path, var in nnx.to_flat_state(state):
    path = tuple(path)
    value = var.get_value()
    if path[-1] == "kernel" and path[:-1] in deltas:
      value = (value.astype(jnp.float32) + deltas[path[:-1]].delta()).astype(value.dtype)
    yield path, value
