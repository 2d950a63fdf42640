"""Orbax checkpoints of a run: train state (params + optimizer), rng, step, config, and the
data iterator's position, with keep-last-k.

  ckpt = Checkpointer(directory, keep=3)
  ckpt.save(step, state, rng, config=config, data_save=pipeline.save)
  restored = ckpt.restore(state)        # latest step; same shardings as `state`
  pipeline.restore(restored.data_path)

Layout of a step folder `<directory>/<step>/`: `state/` (orbax pytree: TrainState and the rng's
key data), `meta/` (json: step, rng kind, extra), `config/` (json). The data position (the TF checkpoint
prefix written by `data.pipeline.Pipeline.save`) goes to `<directory>_data_iter/<step>/ckpt`,
written before the orbax step commits and pruned with it. Saving is synchronous by default so a
SIGTERM handler can save and exit.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vcoach_jax.parallel import mesh as mesh_lib

DATA_DIR = "data_iter"


class Restored(NamedTuple):
  state: Any  # the train state, placed like the target
  rng: jax.Array  # the run's rng (typed key if a typed key was saved)
  step: int
  config: dict | None  # the saved config as a dict (None if none was saved)
  data_path: str | None  # prefix for `Pipeline.restore` (None if no data position was saved)
  extra: dict  # whatever json-able dict was passed to `save(extra=...)`


def _abstract(tree: Any) -> Any:
  """Shape/dtype/sharding-only copy of a pytree of arrays (the restore target)."""
  def one(x):
    x = jnp.asarray(x) if not isinstance(x, jax.Array) else x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return jax.tree.map(one, tree)


def _config_json(config) -> dict:
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config, default=str))


class Checkpointer:
  """keep-last-k orbax CheckpointManager for (state, rng, step, config, data position)."""

  def __init__(self, directory: str | pathlib.Path, keep: int = 3, async_save: bool = False):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  @classmethod
  def from_config(cls, config) -> Checkpointer | None:
    """From `config.checkpoint` (None when `checkpoint.dir` is empty)."""
    c = config.checkpoint
    return cls(c.dir, keep=c.keep) if c.dir else None

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def step_dir(self, step: int) -> pathlib.Path:
    return self.directory / str(step)

  def data_path(self, step: int) -> str:
    """Prefix of step `step`'s data position. It lives beside the orbax folder and is written
    *before* the orbax step commits, so a kill between the two never leaves a committed step
    without its data position."""
    return str(pathlib.Path(f"{self.directory}_{DATA_DIR}") / str(step) / "ckpt")

  def _prune_data(self) -> None:
    import shutil  # pylint: disable=g-import-not-at-top
    root = pathlib.Path(f"{self.directory}_{DATA_DIR}")
    keep = {str(s) for s in self.all_steps()}
    for d in root.iterdir() if root.is_dir() else ():
      if d.name not in keep:
        shutil.rmtree(d, ignore_errors=True)

  def save(self, step: int, state: Any, rng: jax.Array, *, config=None,
           data_save: Callable[[str], Any] | None = None, extra: dict | None = None) -> None:
    """Writes step `step`; `data_save(prefix)` (e.g. `Pipeline.save`) stores the data position
    under the step folder. Older steps beyond `keep` are deleted."""
    typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
    data = jax.random.key_data(rng) if typed else rng
    if jax.process_count() > 1:  # orbax writes global arrays only: the same key everywhere
      data = mesh_lib.put_global(np.asarray(data), _everywhere())
    meta = {"step": int(step), "rng_impl": str(jax.random.key_impl(rng)) if typed else None,
            "rng_shape": list(data.shape), "rng_dtype": str(data.dtype),
            "has_data": data_save is not None, "extra": extra or {}}
    items = {"state": ocp.args.StandardSave({"train": state, "rng": data}),
             "meta": ocp.args.JsonSave(meta)}
    if config is not None:
      items["config"] = ocp.args.JsonSave(_config_json(config))
    # Every process holds the same data position (each reads the global batch): process 0
    # writes it, before the step commits.
    if data_save is not None and jax.process_index() == 0:
      pathlib.Path(self.data_path(step)).parent.mkdir(parents=True, exist_ok=True)
      data_save(self.data_path(step))
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    self._manager.wait_until_finished()
    if data_save is not None and jax.process_index() == 0:
      self._prune_data()

  def restore(self, state_like: Any, step: int | None = None) -> Restored:
    """Restores `step` (default: latest) into the structure, dtypes and shardings of
    `state_like` (a concrete or abstract train state)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    if step not in self.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} "
                              f"(have {self.all_steps()})")
    meta = self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]
    typed = meta["rng_impl"] is not None
    rng_like = jax.ShapeDtypeStruct(tuple(meta["rng_shape"]), jnp.dtype(meta["rng_dtype"]),
                                    sharding=_everywhere() if jax.process_count() > 1 else None)
    target = {"train": _abstract(state_like), "rng": rng_like}
    items = {"state": ocp.args.StandardRestore(target)}
    has_config = (self.step_dir(step) / "config").exists()
    if has_config:
      items["config"] = ocp.args.JsonRestore()
    out = self._manager.restore(step, args=ocp.args.Composite(**items))
    rng = out["state"]["rng"]
    if jax.process_count() > 1:
      rng = jnp.asarray(np.asarray(rng))  # back to this process's own (replicated) copy
    if typed:
      rng = jax.random.wrap_key_data(rng, impl=meta["rng_impl"])
    return Restored(state=out["state"]["train"], rng=rng, step=int(meta["step"]),
                    config=out["config"] if has_config else None,
                    data_path=self.data_path(step) if meta["has_data"] else None,
                    extra=meta["extra"])

  def close(self) -> None:
    self._manager.close()


def _everywhere() -> jax.sharding.NamedSharding:
  """Replicated over every device of every process."""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("all",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
