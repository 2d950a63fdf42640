"""Orbax checkpoints of a run: train state (params + optimizer), rng, step, config, and the
data iterator's position, with keep-last-k and integrity checks.

  ckpt = Checkpointer(directory, keep=3)          # local folder or gs://bucket/run/checkpoints
  ckpt.save(step, state, rng, config=config, data_save=pipeline.save)
  restored = ckpt.restore(state, data_restore=pipeline.restore)       # latest step
  restored = ckpt.restore_intact(state, data_restore=pipeline.restore)  # newest intact step

Layout of a step folder `<directory>/<step>/`: `state/` (orbax pytree: TrainState and the rng's
key data), `meta/` (json: step, rng kind, extra), `config/` (json), `manifest/` (json: array
checksums and the data position's file hashes) and `files.json` (the step's files and sizes).
The data position (the TF checkpoint written by `data.pipeline.Pipeline.save`) goes to
`<directory>_data_iter/<step>/ckpt`, written before the orbax step commits and pruned with it.
Every path goes through `storage` (a remote directory works as a local one). Saving is
synchronous so a SIGTERM handler can save and exit. See docs/checkpoints.md.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vcoach_jax import checkpoint_integrity as integrity
from vcoach_jax import storage
from vcoach_jax.checkpoint_integrity import CheckpointError, first_line
from vcoach_jax.parallel import distributed
from vcoach_jax.parallel import mesh as mesh_lib

DATA_DIR = "data_iter"
LATEST_INTACT = "latest-intact"


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


def _quietly(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
  """Runs `fn()` and returns (its value, None) or (None, the exception it raised), silencing the
  reports a failed read or write produces: orbax's and TensorStore's per-array log lines,
  asyncio's unretrieved future errors (the futures are collected before the loggers are
  restored), and 'Event loop is closed' tracebacks (see `_closed_loop_filter`). The caller
  turns the failure into one line."""
  loggers = [logging.getLogger(n) for n in ("absl", "asyncio", "orbax", "jax")]
  levels = [lg.level for lg in loggers]
  for lg in loggers:
    lg.setLevel(logging.CRITICAL)
  hooks = sys.excepthook, sys.unraisablehook
  sys.excepthook, sys.unraisablehook = _closed_loop_filter(hooks)
  failed = True
  try:
    try:
      value = fn()
      failed = False
      return value, None
    except Exception as e:  # pylint: disable=broad-except
      return None, e
  finally:
    gc.collect()
    for lg, level in zip(loggers, levels):
      lg.setLevel(level)
    if not failed:
      sys.excepthook, sys.unraisablehook = hooks


def _closed_loop_filter(hooks):
  """(excepthook, unraisablehook) that drop 'RuntimeError: Event loop is closed' and pass the
  rest on. When one array's write fails, orbax closes its event loop while TensorStore's other
  writes are still running on their own threads; each then reports, through these hooks, that
  it could not post its result. After a failure the filter stays installed, since those threads
  may finish after the caller has moved on."""
  excepthook, unraisablehook = hooks

  def closed(value) -> bool:
    return isinstance(value, RuntimeError) and str(value) == "Event loop is closed"

  def on_except(kind, value, tb):
    if not closed(value):
      excepthook(kind, value, tb)

  def on_unraisable(info):
    if not closed(info.exc_value):
      unraisablehook(info)
  return on_except, on_unraisable


class Checkpointer:
  """keep-last-k orbax CheckpointManager for (state, rng, step, config, data position)."""

  def __init__(self, directory: storage.PathLike, keep: int = 3, async_save: bool = False):
    self.directory = storage.path(directory)
    self.data_root = storage.path(f"{os.fspath(self.directory)}_{DATA_DIR}")
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

  def step_dir(self, step: int) -> storage.Path:
    return self.directory / str(step)

  def _where(self, step: int) -> str:
    return f"checkpoint step {step} in {os.fspath(self.directory)}"

  def data_path(self, step: int) -> str:
    """Prefix of step `step`'s data position. It lives beside the orbax folder and is written
    *before* the orbax step commits, so a kill between the two never leaves a committed step
    without its data position."""
    return os.fspath(self.data_root / str(step) / "ckpt")

  def _prune_data(self) -> None:
    keep = {str(s) for s in self.all_steps()}
    for d in self.data_root.iterdir() if self.data_root.is_dir() else ():
      if d.name not in keep:
        with contextlib.suppress(OSError):
          d.rmtree()

  def _remove_failed(self, step: int) -> None:
    """Removes what a failed save of `step` left: orbax's temporary folder, the step folder if it
    has no commit, the data position written for it."""
    for p in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
      with contextlib.suppress(OSError):
        p.rmtree() if p.is_dir() else p.unlink()
    if step not in self._manager.all_steps():
      for p in (self.step_dir(step), self.data_root / str(step)):
        with contextlib.suppress(OSError):
          if p.exists():
            p.rmtree()

  def save(self, step: int, state: Any, rng: jax.Array, *, config=None,
           data_save: Callable[[str], Any] | None = None, extra: dict | None = None) -> None:
    """Writes step `step`; `data_save(prefix)` (e.g. `Pipeline.save`) stores the data position
    under the step folder. Older steps beyond `keep` are deleted. A failed write removes its
    temporary folder and raises CheckpointError with the reason in one line."""
    typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
    data = jax.random.key_data(rng) if typed else rng
    if jax.process_count() > 1:  # orbax writes global arrays only: the same key everywhere
      data = mesh_lib.put_global(np.asarray(data), _everywhere())
    tree = {"train": state, "rng": data}
    meta = {"step": int(step), "rng_impl": str(jax.random.key_impl(rng)) if typed else None,
            "rng_shape": list(data.shape), "rng_dtype": str(data.dtype),
            "has_data": data_save is not None, "extra": extra or {}}
    def write():
      manifest = {"arrays": integrity.checksums(tree), "data_files": {}}
      # Each process writes the position of the data it reads (`Pipeline.save`: its own read
      # parts), before the step commits; process 0 lists every file once all are written.
      if data_save is not None:
        folder = self.data_root / str(step)
        with storage.local_dir_for(folder) as local:
          data_save(os.path.join(local, "ckpt"))
        distributed.sync(f"data position {step}")
        if jax.process_index() == 0:
          manifest["data_files"] = integrity.data_files(folder)
      items = {"state": ocp.args.StandardSave(tree), "meta": ocp.args.JsonSave(meta),
               "manifest": ocp.args.JsonSave(manifest)}
      if config is not None:
        items["config"] = ocp.args.JsonSave(_config_json(config))
      self._manager.save(step, args=ocp.args.Composite(**items), force=True)
      self._manager.wait_until_finished()
      if jax.process_index() == 0:
        integrity.write_file_list(self.step_dir(step))

    _, error = _quietly(write)
    if error is not None:
      reason = first_line(error)
      del error  # its traceback holds the failed writes' futures
      self._remove_failed(step)
      raise CheckpointError(f"saving {self._where(step)} failed: {reason}; its temporary "
                            "files were removed")
    if data_save is not None and jax.process_index() == 0:
      self._prune_data()

  def restore(self, state_like: Any, step: int | None = None, *,
              data_restore: Callable[[str], Any] | None = None) -> Restored:
    """Restores `step` (default: latest) into the structure, dtypes and shardings of
    `state_like` (a concrete or abstract train state), after checking it against its manifest;
    `data_restore(prefix)` (e.g. `Pipeline.restore`) then reads the data position. A missing,
    truncated or corrupt file, an unreadable step or non-finite parameters raise
    CheckpointError naming the step and the file or array."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {os.fspath(self.directory)}")
    if step not in self.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {os.fspath(self.directory)} "
                              f"(have {self.all_steps()})")
    where = self._where(step)
    integrity.check_file_list(self.step_dir(step), where)
    read, error = _quietly(lambda: self._read(state_like, step))
    if error is not None:
      reason = integrity.describe_read_error(error)
      del error  # its traceback holds the failed reads' futures
      raise CheckpointError(f"{where} is unreadable: {reason}")
    out, meta = read
    manifest = out.get("manifest")
    tree = {"train": out["state"]["train"], "rng": out["state"]["rng"]}
    integrity.check_arrays(tree, manifest["arrays"] if manifest else None, where)
    rng = tree["rng"]
    if jax.process_count() > 1:
      rng = jnp.asarray(np.asarray(rng))  # back to this process's own (replicated) copy
    if meta["rng_impl"] is not None:
      rng = jax.random.wrap_key_data(rng, impl=meta["rng_impl"])
    data_path = self.data_path(step) if meta["has_data"] else None
    if data_path is not None:
      if manifest:
        integrity.check_data_files(self.data_root / str(step), manifest["data_files"], where)
      if data_restore is not None:
        self._restore_data(data_path, data_restore, where)
    return Restored(state=tree["train"], rng=rng, step=int(meta["step"]),
                    config=out.get("config"), data_path=data_path, extra=meta["extra"])

  def _read(self, state_like: Any, step: int) -> tuple[dict, dict]:
    meta = self._manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]
    rng_like = jax.ShapeDtypeStruct(tuple(meta["rng_shape"]), jnp.dtype(meta["rng_dtype"]),
                                    sharding=_everywhere() if jax.process_count() > 1 else None)
    target = {"train": _abstract(state_like), "rng": rng_like}
    items = {"state": ocp.args.StandardRestore(target)}
    for name in ("config", "manifest"):
      if (self.step_dir(step) / name).exists():
        items[name] = ocp.args.JsonRestore()
    return dict(self._manager.restore(step, args=ocp.args.Composite(**items))), meta

  @staticmethod
  def _restore_data(data_path: str, data_restore: Callable[[str], Any], where: str) -> None:
    folder = storage.path(data_path).parent
    try:
      with storage.local_copy(folder) as local:
        data_restore(os.path.join(local, "ckpt"))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"{where}: the data position {data_path} is unreadable "
                            f"({first_line(e)})") from None

  def restore_intact(self, state_like: Any, *, data_restore: Callable[[str], Any] | None = None,
                     report: Callable[[str], Any] = print) -> Restored:
    """Restores the newest step that passes every check, reporting (one line each) the newer
    steps skipped and the step used."""
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {os.fspath(self.directory)}")
    for step in reversed(steps):
      try:
        restored = self.restore(state_like, step, data_restore=data_restore)
      except CheckpointError as e:
        report(f"skipping {e}")
        continue
      if step != steps[-1]:
        report(f"resuming from the newest intact checkpoint, step {step}")
      return restored
    raise CheckpointError(f"no intact checkpoint in {os.fspath(self.directory)} "
                          f"(steps {steps} all failed their checks)")

  def close(self) -> None:
    self._manager.close()


def _everywhere() -> jax.sharding.NamedSharding:
  """Replicated over every device of every process."""
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("all",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
