"""Metrics go to JSONL (one object per step) and TensorBoard; the PNG plot is written, decodes
and has the curves' colours in it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vcoach_jax.metrics_writer import COLORS, MetricsWriter, read_jsonl


def test_jsonl_tensorboard_and_png(tmp_path):
  w = MetricsWriter(tmp_path / "logs")
  for step in range(5):
    w.write(step, {"reward/total": np.float32(0.5 * step), "loss": 1.0 / (step + 1),
                   "grad_norm": float("nan") if step == 2 else 1.0})
  png = w.plot(["reward/total", "loss"], "rewards.png", title="rewards")
  w.close()
  rows = read_jsonl(tmp_path / "logs" / "metrics.jsonl")
  assert [r["step"] for r in rows] == list(range(5))
  assert rows[4]["reward/total"] == 2.0 and rows[1]["loss"] == 0.5
  assert rows[2]["grad_norm"] == "nan"  # JSON stays valid
  events = list((tmp_path / "logs" / "tensorboard").glob("events.out.tfevents.*"))
  assert len(events) == 1
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scalars = {}
  for record in tf.compat.v1.train.summary_iterator(str(events[0])):
    for v in record.summary.value:
      assert v.metadata.plugin_data.plugin_name == "scalars"
      scalars[(v.tag, record.step)] = float(tf.make_ndarray(v.tensor))
  assert scalars[("reward/total", 3)] == 1.5 and scalars[("loss", 0)] == 1.0
  img = np.asarray(Image.open(png).convert("RGB"))
  assert img.shape == (440, 720, 3)
  colors = {tuple(c) for c in img.reshape(-1, 3)}
  assert COLORS[0] in colors and COLORS[1] in colors
