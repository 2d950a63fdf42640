"""How one RL step's prompt batch reaches the devices: its pixels once, kept there.

The vision patches (`ModelInputs.pixels`, `[B * max_patches, D]` float32) are nearly all of a
prompt batch's bytes (the 7B recipe: 617 MB; the token and index tables: under 1%). The step
places them once (`Sampler.place_pixels`, each process placing its own devices' slices, or
`place_local` from each process's own rows) and hands the same device array to the sampler and
to the update. The sampler's rollouts (tokens, mask, log-probs) stay on the devices too
(`Rollouts.placed`): the host reads a copy to decode and score them, and the update takes the
device arrays. Only the small tables travel from the host again, in the layout each program
wants.

  inputs = sampler.place_pixels(batching.batch_inputs(cfg, host.arrays))   # upload, once
  rollouts = sampler.generate(inputs, ...)          # pads the patches on the devices if needed
  raw = RolloutBatch(inputs, *rollouts.placed, ...)
  placed = place_batch(step.program(prompted), StepBatch(raw, prompted))   # no pixel upload

`place_batch` (a `StepBatch`, or an `SFTBatch`) cuts the host fields into micro-batches
(`update.split_rows`) and places them on the update's shardings; a device array is cut into the
micro-batches and moved to the update's sharding by a small program on the devices (a gather
among them, or nothing when the layouts agree). Nothing is copied back to the host.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import numpy as np

from vcoach_jax.parallel import mesh as mesh_lib
from vcoach_jax.rl import update


def place_local(local: np.ndarray, sharding, shape: tuple[int, ...]) -> jax.Array:
  """A global array of `shape`, split over processes along its first axis by `sharding`, from
  this process's own block of rows (`local`). Each process's devices must hold exactly its own
  block (the mesh's batch axes laid out by process, as `make_mesh` does); ValueError otherwise."""
  per, p, rows = local.shape[0], jax.process_index(), shape[0]
  held = {(i[0].start or 0, rows if i[0].stop is None else i[0].stop)
          for d, i in sharding.devices_indices_map(shape).items() if d.process_index == p}
  if min(lo for lo, _ in held) != p * per or max(hi for _, hi in held) != (p + 1) * per:
    raise ValueError(f"process {p}'s devices hold rows {sorted(held)} of {rows}, not its own "
                     f"block {p * per}..{(p + 1) * per - 1}: per-process data needs the batch "
                     "rows split over processes in process order (parallel.mesh)")
  return jax.make_array_from_process_local_data(sharding, local, shape)


@dataclasses.dataclass(frozen=True)
class Placer:
  """Places a global batch's prompt patches from each process's own rows, split like the rows
  over the mesh's batch axes: for the SFT update, and behind `Sampler.place_local_pixels`."""
  mesh: Any
  rules: Any

  def place_local_pixels(self, local: np.ndarray, rows: int) -> jax.Array:
    local = np.asarray(local, np.float32)
    shape = (rows, local.shape[1])
    if self.mesh is None:
      return jax.device_put(local)
    sharding = mesh_lib.named_sharding(("batch", None), shape, self.mesh, self.rules)
    if jax.process_count() == 1:
      return mesh_lib.put_global(local, sharding)
    return place_local(local, sharding, shape)


def _branches(batch) -> list[str]:
  """The fields of `batch` that hold a prompt (a `StepBatch`: raw, prompted), or [""] when the
  batch holds one itself (an `SFTBatch`)."""
  return [""] if "prompt" in batch._fields else list(batch._fields)


def _get(batch, name: str):
  return batch if not name else getattr(batch, name)


def _set(batch, name: str, branch):
  return branch if not name else batch._replace(**{name: branch})


def _with_pixels(branch, pixels):
  return branch._replace(prompt=branch.prompt._replace(pixels=pixels))


def _host_part(batch):
  """(batch with its device arrays replaced by zero-width host stand-ins, {(branch, field):
  device array}): placed prompt pixels, and rollout arrays kept from the sampler."""
  placed = {}
  for name in _branches(batch):
    branch = _get(batch, name)
    if branch is None:
      continue
    if isinstance(branch.prompt.pixels, jax.Array):
      px = placed[name, "pixels"] = branch.prompt.pixels
      branch = _with_pixels(branch, np.zeros((px.shape[0], 0), np.float32))
    for field in branch._fields:
      x = getattr(branch, field)
      if field != "prompt" and isinstance(x, jax.Array):
        placed[name, field] = x
        branch = branch._replace(**{field: np.zeros((x.shape[0], 0), x.dtype)})
    batch = _set(batch, name, branch)
  return batch, placed


def _field(branch, field: str):
  return branch.prompt.pixels if field == "pixels" else getattr(branch, field)


def _with_field(branch, field: str, x):
  return _with_pixels(branch, x) if field == "pixels" else branch._replace(**{field: x})


def _micro(x: jax.Array, k: int) -> jax.Array:
  """`[N, ...]` -> `[k, N / k, ...]`: micro-batch j holds its own rows (for pixels: the
  per-row blocks of `batching.batch_inputs`, which `split_inputs` cuts the same way)."""
  return x if k == 1 else x.reshape(k, x.shape[0] // k, *x.shape[1:])


@functools.lru_cache(maxsize=None)
def _relayout(k: int, sharding):
  """A program that cuts placed pixels into k micro-batches on `sharding`: the devices move
  the patches among themselves (a gather, or nothing), never through the host."""
  return jax.jit(lambda x: _micro(x, k), out_shardings=sharding)


def place_batch(jitted: update.Jitted, batch) -> Any:
  """A `StepBatch` or `SFTBatch` (host arrays; prompt pixels and rollout arrays may be device
  arrays already) -> the arguments of `jitted.fn`: cut into `jitted.grad_accum` micro-batches,
  on `jitted.batch_shardings`. Device arrays are cut and moved there by programs on the
  devices, never through the host."""
  host, placed = _host_part(batch)
  k = jitted.grad_accum
  if k > 1:
    host = update.split_rows(host, k)
  for name, field in placed:
    host = _set(host, name, _with_field(_get(host, name), field, None))
  out = host if jitted.batch_shardings is None else mesh_lib.put_global(
      host, jitted.batch_shardings)
  for (name, field), x in placed.items():
    if jitted.batch_shardings is None:
      x = _micro(x, k)
    else:
      target = _field(_get(jitted.batch_shardings, name), field)
      if k > 1 or x.sharding != target:
        x = _relayout(k, target)(x)
    out = _set(out, name, _with_field(_get(out, name), field, x))
  return out
