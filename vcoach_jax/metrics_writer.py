"""Per-step metrics to JSONL and TensorBoard, and PNG line plots of chosen curves.

  writer = MetricsWriter(logdir)
  writer.write(step, {"reward/total": 1.3, "loss": 0.2})   # every step
  writer.plot(["reward/total", "reward/format"], "rewards.png")   # at the end
  writer.close()

`metrics.jsonl` holds one `{"step": s, **metrics}` object per line (floats; arrays are reduced
by the caller). TensorBoard scalars go through `tf.summary.write` (TensorFlow is a dependency of the
data pipeline; the tensorboard package is not needed to write them); the plots are
matplotlib's (`vcoach_jax.plots`).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np
from vcoach_jax import storage

TB_SYNC_SECONDS = 60.0  # a remote logdir gets the TensorBoard files at most this stale


def _scalar(value: Any) -> float:
  return float(np.asarray(value).reshape(()))


class MetricsWriter:
  """Appends metrics to `<logdir>/metrics.jsonl` and (optionally) TensorBoard event files.

  `logdir` may be remote (`gs://...`): the JSONL is then rewritten whole at each step
  (`storage.Appender`: object stores do not append); TensorFlow writes the event files into
  a local temporary folder copied into `logdir/tensorboard` at most every TB_SYNC_SECONDS and at
  `close` (`storage.LocalMirror`). In a multi-process run only process 0 writes (`enabled`
  defaults to that); the others still return the values and keep the history."""

  def __init__(self, logdir: storage.PathLike, tensorboard: bool = True,
               enabled: bool | None = None):
    if enabled is None:
      import jax  # pylint: disable=g-import-not-at-top
      enabled = jax.process_index() == 0
    self.enabled = enabled
    self.logdir = storage.path(logdir)
    self.jsonl_path = self.logdir / "metrics.jsonl"
    self._history: dict[str, list[tuple[int, float]]] = {}
    self._jsonl = self._tb = self._mirror = None
    self._tensorboard = tensorboard
    self._synced = 0.0

  def _open(self) -> None:
    """Opens the outputs at the first write (so `drop_from` can rewrite the file before)."""
    if self._jsonl is not None:
      return
    self.logdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = storage.Appender(self.jsonl_path)  # kept open for the run
    if self._tensorboard:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      self._tf = tf
      # `tf.summary.scalar` lives in the tensorboard package (not a dependency); the core
      # `tf.summary.write` op with the scalars plugin's metadata writes the same records.
      self._scalar_meta = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
      self._mirror = storage.LocalMirror(self.logdir / "tensorboard")
      self._tb = tf.summary.create_file_writer(self._mirror.local)

  def drop_from(self, step: int) -> int:
    """Removes the rows of steps >= `step` from metrics.jsonl (a resume runs them again), by
    rewriting the file atomically; returns how many were dropped."""
    if not self.enabled or not self.jsonl_path.exists():
      return 0
    if self._jsonl is not None:
      raise RuntimeError("drop_from must run before the first write")
    lines = self.jsonl_path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if not line.strip() or _row_step(line) < step]
    if len(kept) != len(lines):
      storage.write_text(self.jsonl_path, "".join(kept))
    return len(lines) - len(kept)

  def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Records scalars (jax/numpy scalars or python numbers) for `step`; returns them as floats."""
    values = {k: _scalar(v) for k, v in metrics.items()}
    record = {"step": int(step)}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
    for k, v in values.items():
      self._history.setdefault(k, []).append((int(step), v))
    if not self.enabled:
      return values
    self._open()
    self._jsonl.write(json.dumps(record) + "\n")
    if self._tb is not None:
      with self._tb.as_default():
        for k, v in values.items():
          self._tf.summary.write(k, self._tf.constant(v, self._tf.float32), step=int(step),
                                 metadata=self._scalar_meta)
      self._tb.flush()
      if time.monotonic() - self._synced > TB_SYNC_SECONDS:
        self._mirror.sync()
        self._synced = time.monotonic()
    return values

  def history(self, key: str) -> list[tuple[int, float]]:
    return list(self._history.get(key, []))

  def plot(self, keys: Sequence[str], path: storage.PathLike, title: str = "") -> storage.Path:
    """Draws the recorded curves of `keys` into one PNG, a panel each (relative paths go under
    logdir)."""
    p = os.fspath(path)
    path = storage.path(p) if storage.is_remote(p) or os.path.isabs(p) else self.logdir / p
    series = {k: self.history(k) for k in keys}
    line_plot(series, path, title=title)
    return path

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
      self._mirror.close()
    self._jsonl = self._tb = self._mirror = None


def _row_step(line: str) -> int:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return -1  # an unreadable row is kept as it is


def read_jsonl(path: storage.PathLike) -> list[dict[str, Any]]:
  text = storage.read_text(path)
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def line_plot(series: Mapping[str, Sequence[tuple[float, float]]], path: storage.PathLike, *,
              title: str = "") -> None:
  """One panel per series (`plots.curves`: raw values faint, a moving average over them)."""
  from vcoach_jax import plots  # pylint: disable=g-import-not-at-top
  plots.curves(series, path, title=title)
