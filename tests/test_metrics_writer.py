"""Metrics go to JSONL (one object per step) and TensorBoard; the PNG plot is written, decodes
and has the curves' colours in it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vcoach_jax import plots
from vcoach_jax.metrics_writer import MetricsWriter, read_jsonl


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
  assert img.shape[0] > 200 and img.shape[1] > 400  # two panels side by side
  colors = {tuple(c) for c in img.reshape(-1, 3)}
  for hex_color in plots.COLORS[:2]:  # each panel's moving average in full colour
    assert tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5)) in colors


def test_resume_drops_rows_past_the_restored_step(tmp_path):
  """A kill between checkpoints: steps 0..4 were logged, the checkpoint holds 3 steps; the
  resumed run logs steps 3.. again, and no step appears twice."""
  w = MetricsWriter(tmp_path, tensorboard=False, enabled=True)
  for step in range(5):
    w.write(step, {"loss": float(step)})
  w.close()
  resumed = MetricsWriter(tmp_path, tensorboard=False, enabled=True)
  assert resumed.drop_from(3) == 2
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temporary left
  for step in range(3, 6):
    resumed.write(step, {"loss": 10.0 + step})
  resumed.close()
  rows = read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5]
  assert [r["loss"] for r in rows] == [0.0, 1.0, 2.0, 13.0, 14.0, 15.0]
  assert MetricsWriter(tmp_path, tensorboard=False, enabled=True).drop_from(6) == 0


def test_moving_average_is_trailing_and_skips_nans():
  np.testing.assert_allclose(plots.moving_average([1, 3, 5, 7], 2), [1, 2, 4, 6])
  np.testing.assert_allclose(plots.moving_average([1, float("nan"), 5], 3), [1, 1, 3])


def test_bands_and_boxes_pngs(tmp_path):
  steps = np.arange(5)
  per = {"reward_total": (steps, steps * 0.1, steps * 0.1 - 0.05, steps * 0.1 + 0.05)}
  png = plots.bands({"gspo": per, "full": per}, tmp_path / "bands.png", title="t")
  assert Image.open(png).size[0] > 300
  frame = np.zeros((56, 84, 3), np.uint8)
  png = plots.boxes_on_frame(frame, {"SFT": [[10, 10, 30, 30]], "RL": [[12, 11, 31, 29]]},
                             tmp_path / "clip.png", truth=[[11, 10, 30, 30]])
  img = np.asarray(Image.open(png).convert("RGB"))
  colors = {tuple(c) for c in img.reshape(-1, 3)}
  for hex_color in plots.COLORS[1:3]:  # the two sources' box colours
    assert tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5)) in colors
