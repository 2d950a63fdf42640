"""How one RL step's prompt batch reaches the devices: its pixels once, kept there.

The vision patches (`ModelInputs.pixels`, `[B * max_patches, D]` float32) are nearly all of a
prompt batch's bytes (the 7B recipe: 617 MB; the token and index tables: under 1%). The step
places them once (`Sampler.place_pixels`, each process placing its own devices' slices) and hands
the same device array to the sampler and to the update; only the small tables travel from the
host again, in the layout each program wants.

  inputs = sampler.place_pixels(batching.batch_inputs(cfg, host.arrays))   # upload, once
  rollouts = sampler.generate(inputs, ...)          # pads the patches on the devices if needed
  placed = place_batch(step.program(prompted), StepBatch(raw, prompted))   # no pixel upload

`place_batch` cuts the host fields into micro-batches (`update.split_rows`) and places them on
the update's shardings; a placed pixel array is cut into the micro-batches and moved to the
update's pixel sharding by a small program on the devices (a gather among them, or nothing when
the layouts agree). Nothing is copied back to the host.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from vcoach_jax.parallel import mesh as mesh_lib
from vcoach_jax.rl import update


def _host_part(batch):
  """(batch with placed pixels replaced by zero-width host stand-ins, {branch: placed pixels})."""
  placed, branches = {}, {}
  for name in batch._fields:
    branch = getattr(batch, name)
    if branch is not None and isinstance(branch.prompt.pixels, jax.Array):
      px = branch.prompt.pixels
      placed[name] = px
      branch = branch._replace(prompt=branch.prompt._replace(
          pixels=np.zeros((px.shape[0], 0), np.float32)))
    branches[name] = branch
  return batch._replace(**branches), placed


def _micro(pixels: jax.Array, k: int) -> jax.Array:
  """`[N, D]` -> `[k, N / k, D]`: micro-batch j holds the patches of its own rows (the
  per-row blocks of `batching.batch_inputs`, which `split_inputs` cuts the same way)."""
  n, d = pixels.shape
  return pixels if k == 1 else pixels.reshape(k, n // k, d)


@functools.lru_cache(maxsize=None)
def _relayout(k: int, sharding):
  """A program that cuts placed pixels into k micro-batches on `sharding`: the devices move
  the patches among themselves (a gather, or nothing), never through the host."""
  return jax.jit(lambda x: _micro(x, k), out_shardings=sharding)


def place_batch(jitted: update.Jitted, batch) -> Any:
  """A `StepBatch` (host arrays; prompt pixels may be placed jax.Arrays) -> the arguments of
  `jitted.fn`: cut into `jitted.grad_accum` micro-batches, on `jitted.batch_shardings`."""
  host, placed = _host_part(batch)
  k = jitted.grad_accum
  if k > 1:
    host = update.split_rows(host, k)
  strip = {name: getattr(host, name)._replace(prompt=getattr(host, name).prompt._replace(
      pixels=None)) for name in placed}
  host = host._replace(**strip)
  out = host if jitted.batch_shardings is None else mesh_lib.put_global(
      host, jitted.batch_shardings)
  for name, px in placed.items():
    if jitted.batch_shardings is None:
      px = _micro(px, k)
    else:
      target = getattr(jitted.batch_shardings, name).prompt.pixels
      if k > 1 or px.sharding != target:
        px = _relayout(k, target)(px)
    branch = getattr(out, name)
    out = out._replace(**{name: branch._replace(prompt=branch.prompt._replace(pixels=px))})
  return out
