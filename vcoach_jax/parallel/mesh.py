"""Mesh construction and the logical-axis -> mesh-axis rules.

Layers name their parameter dimensions with logical axes (`embed`, `mlp`, `heads`, ...; see
`vcoach_jax.model.layers`), stored in each `nnx.Param`'s `logical_axes` metadata. A rule table
(`config.parallel.rules`) maps each logical name to a tuple of mesh axes. A dimension whose size
does not divide by its mesh axes, or whose mesh axis an earlier dimension already took, stays
replicated, so tiny test models shard without special cases. Activations are named the same
way inside the model (`vcoach_jax.parallel.activations`).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from vcoach_jax.parallel.rules import DEFAULT_RULES, MESH_AXES  # pylint: disable=g-importing-member

Rules = Sequence[tuple[str, Sequence[str]]]


def make_mesh(shape: Mapping[str, int] | Iterable[tuple[str, int]] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A mesh over `devices` (default: all) with axes `data`, `fsdp`, `tensor`.

  Args:
    shape: sizes per axis name; one axis may be -1 (the remaining devices). Missing axes get 1.
      Default: everything on `fsdp`.
    devices: the devices to use.

  Returns:
    A `Mesh` with Auto axis types (plain jit sharding propagation).
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = dict(shape or {"fsdp": -1})
  unknown = set(sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; allowed: {MESH_AXES}")
  dims = [int(sizes.get(a, 1)) for a in MESH_AXES]
  if dims.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {sizes}")
  known = int(np.prod([d for d in dims if d != -1]))
  if -1 in dims:
    dims[dims.index(-1)] = len(devices) // known
  if int(np.prod(dims)) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, dims))} needs {int(np.prod(dims))} devices, "
                     f"have {len(devices)}")
  return Mesh(np.asarray(devices).reshape(dims), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_to_spec(axes: Sequence[str | None], rules: Rules = DEFAULT_RULES,
                    shape: Sequence[int] | None = None, mesh: Mesh | None = None) -> PartitionSpec:
  """PartitionSpec for a tensor whose dims have the logical names `axes`.

  With `shape` and `mesh`, a dim takes its mesh axes in order, each one only while the product
  so far still divides its size (rows 2 on data=2 x fsdp=4 go over `data` alone); a mesh axis is
  used by at most one dim (a later dim may take the axes an earlier one could not).
  """
  table = {name: tuple(mesh_axes) for name, mesh_axes in rules}
  used: set[str] = set()
  spec: list[Any] = []
  for i, name in enumerate(axes):
    mesh_axes = tuple(a for a in table.get(name, ()) if a not in used)
    if mesh is not None:
      mesh_axes = tuple(a for a in mesh_axes if mesh.shape[a] > 1)
      if shape is not None:  # each axis in turn while the dim still divides
        kept, size = [], 1
        for a in mesh_axes:
          if shape[i] % (size * mesh.shape[a]) == 0:
            kept.append(a)
            size *= mesh.shape[a]
        mesh_axes = tuple(kept)
    used.update(mesh_axes)
    spec.append(None if not mesh_axes else mesh_axes[0] if len(mesh_axes) == 1 else mesh_axes)
  return PartitionSpec(*spec)


def named_sharding(axes: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh,
                   rules: Rules = DEFAULT_RULES) -> NamedSharding:
  if axes is None:
    return NamedSharding(mesh, PartitionSpec())
  return NamedSharding(mesh, logical_to_spec(axes, rules, shape, mesh))


def variable_sharding(var: nnx.Variable, mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """The NamedSharding of one (possibly abstract) variable from its `logical_axes` metadata."""
  axes = var.get_metadata().get("logical_axes")
  return named_sharding(axes, var.get_value().shape, mesh, rules)


def state_shardings(state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """A tree of NamedShardings shaped like `state` (for jit in/out shardings and device_put):
  an nnx Variable by its logical axes (optimizer moments inherit their parameter's), any other
  leaf (a step counter, an rng key, a plain array) replicated."""
  rep = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(lambda v: variable_sharding(v, mesh, rules) if _is_var(v) else rep, state,
                      is_leaf=_is_var)


def shard_model(model: nnx.Module, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> nnx.Module:
  """Moves every parameter of `model` to its sharding on `mesh` (in place), and records the mesh
  as where the model's activations go when it has a `layout` (`parallel.activations`); returns
  the model."""
  state = nnx.state(model)
  shardings = state_shardings(state, mesh, rules)
  values = jax.tree.map(lambda v: v.get_value(), state, is_leaf=_is_var)
  nnx.update(model, jax.device_put(values, shardings))
  if hasattr(model, "layout"):
    from vcoach_jax.parallel import activations  # pylint: disable=g-import-not-at-top
    activations.attach(model, mesh, rules)
  return model


def put_global(tree: Any, shardings: Any) -> Any:
  """Host (numpy) leaves that hold the same value on every process -> global jax.Arrays with
  the matching `shardings` (a tree of the same structure or a prefix of it); each
  process places only its own devices' slices. jax.Array leaves pass through. Multi-host jit
  refuses sharded numpy arguments, so every host batch goes through here."""
  def one(x, sharding):
    if x is None or isinstance(x, jax.Array):
      return x
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  def subtree(sharding, sub):  # `shardings` may be a prefix of `tree` (one for a subtree)
    return None if sub is None else jax.tree.map(lambda x: one(x, sharding), sub)
  return jax.tree.map(subtree, shardings, tree, is_leaf=lambda s: s is None)


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


def rules_from_config(rules: Iterable[Sequence[Any]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
  """Normalises `config.parallel.rules` ((logical, mesh_axes) pairs) to the rules tuple."""
  out = []
  for name, mesh_axes in rules:
    mesh_axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
    bad = set(mesh_axes) - set(MESH_AXES)
    if bad:
      raise ValueError(f"sharding rule for {name!r} names unknown mesh axes {sorted(bad)}")
    out.append((str(name), mesh_axes))
  return tuple(out)
