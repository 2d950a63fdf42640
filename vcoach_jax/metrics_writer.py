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
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np


def _scalar(value: Any) -> float:
  return float(np.asarray(value).reshape(()))


class MetricsWriter:
  """Appends metrics to `<logdir>/metrics.jsonl` and (optionally) TensorBoard event files.

  In a multi-process run only process 0 writes (`enabled` defaults to that); the others still
  return the values and keep the history."""

  def __init__(self, logdir: str | pathlib.Path, tensorboard: bool = True,
               enabled: bool | None = None):
    if enabled is None:
      import jax  # pylint: disable=g-import-not-at-top
      enabled = jax.process_index() == 0
    self.enabled = enabled
    self.logdir = pathlib.Path(logdir)
    self.jsonl_path = self.logdir / "metrics.jsonl"
    self._history: dict[str, list[tuple[int, float]]] = {}
    self._jsonl = self._tb = None
    if not enabled:
      return
    self.logdir.mkdir(parents=True, exist_ok=True)
    # Kept open for the run (closed by `close`).
    self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")  # pylint: disable=R1732
    if tensorboard:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      self._tf = tf
      # `tf.summary.scalar` lives in the tensorboard package (not a dependency); the core
      # `tf.summary.write` op with the scalars plugin's metadata writes the same records.
      self._scalar_meta = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
      self._tb = tf.summary.create_file_writer(str(self.logdir / "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Records scalars (jax/numpy scalars or python numbers) for `step`; returns them as floats."""
    values = {k: _scalar(v) for k, v in metrics.items()}
    record = {"step": int(step)}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
    for k, v in values.items():
      self._history.setdefault(k, []).append((int(step), v))
    if self._jsonl is None:
      return values
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      with self._tb.as_default():
        for k, v in values.items():
          self._tf.summary.write(k, self._tf.constant(v, self._tf.float32), step=int(step),
                                 metadata=self._scalar_meta)
      self._tb.flush()
    return values

  def history(self, key: str) -> list[tuple[int, float]]:
    return list(self._history.get(key, []))

  def plot(self, keys: Sequence[str], path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """Draws the recorded curves of `keys` into one PNG, a panel each (relative paths go under
    logdir)."""
    path = pathlib.Path(path)
    if not path.is_absolute():
      path = self.logdir / path
    series = {k: self.history(k) for k in keys}
    line_plot(series, path, title=title)
    return path

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def read_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def line_plot(series: Mapping[str, Sequence[tuple[float, float]]], path: str | pathlib.Path, *,
              title: str = "") -> None:
  """One panel per series (`plots.curves`: raw values faint, a moving average over them)."""
  from vcoach_jax import plots  # pylint: disable=g-import-not-at-top
  plots.curves(series, path, title=title)
