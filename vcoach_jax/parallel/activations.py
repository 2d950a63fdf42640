"""Sharding constraints on activations, by logical axis names (the `shard(x, axes)` habit).

Weights are split over `fsdp` by their width; left alone, XLA's propagation lets activations
follow them (`[rows, T, width / n]` per device), and every projection then ends in an
all-reduce of activations. Constraining the activations to the batch axes at the model's entry
points and inside its blocks makes FSDP what it should be: each device runs its own rows (or,
when the rows do not divide, its own slice of the sequence, or of the image patches), the
weights are all-gathered before use and their gradients reduce-scattered.

A model carries its layout (mesh + rules) as a static attribute (`attach`); its entry points
open `use(layout)` while they trace, and the layers call `shard(x, axes)`, a no-op when no
layout is open or the mesh has one device. Axis names (mapped by `config.parallel.rules`):

  batch       rows of the text model
  act_length  tokens of a row; takes the batch axes the rows could not divide
  patches     image patches (and merged vision tokens) of the vision tower
  segments    attention segments of the vision tower (windows, frames)
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, NamedTuple, Sequence

import jax
from jax.sharding import Mesh

from vcoach_jax.parallel import mesh as mesh_lib

BATCH, LENGTH, PATCHES, SEGMENTS = "batch", "act_length", "patches", "segments"
# [rows, tokens, width] of the residual stream; [rows, tokens, heads, head_dim] of q / k / v.
RESIDUAL = (BATCH, LENGTH, None)
HEADS = (BATCH, LENGTH, "heads", None)


class Layout(NamedTuple):
  """Where a model's activations go: a mesh and the logical -> mesh-axis rules (hashable, so a
  model keeps it as a static attribute of its graph)."""
  mesh: Mesh
  rules: tuple[tuple[str, tuple[str, ...]], ...]


_CURRENT: contextvars.ContextVar[Layout | None] = contextvars.ContextVar("layout", default=None)


def attach(model, mesh: Mesh | None, rules: mesh_lib.Rules) -> None:
  """Records on `model` (its `layout` attribute) where its activations go; None: nowhere."""
  model.layout = None if mesh is None else Layout(mesh, mesh_lib.rules_from_config(rules))


@contextlib.contextmanager
def use(layout: Layout | None) -> Iterator[None]:
  """Activations traced inside are constrained by `layout` (None: left to XLA)."""
  token = _CURRENT.set(layout)
  try:
    yield
  finally:
    _CURRENT.reset(token)


def shard(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """`x` constrained to the logical `axes` (one per dimension) under the open layout."""
  layout = _CURRENT.get()
  if layout is None or layout.mesh.size == 1:
    return x
  if len(axes) != x.ndim:
    raise ValueError(f"shard: {len(axes)} axis names {tuple(axes)} for an array of shape "
                     f"{x.shape}")
  sharding = mesh_lib.named_sharding(axes, x.shape, layout.mesh, layout.rules)
  return jax.lax.with_sharding_constraint(x, sharding)
