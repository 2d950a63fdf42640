"""PNG charts of training runs with matplotlib (Agg backend: no display needed).

  curves({"reward_total": [(step, value), ...], "frac_hard": [...]}, "curves.png", title="rl")
  bands({"gspo": {"reward_total": (steps, mean, lo, hi)}, ...}, "ablation.png")
  boxes_on_frame(frame, {"SFT": [box, ...], "RL": [...]}, "clip.png", truth=[box])

One panel per quantity (each with its own y axis and nice ticks); `curves` draws the raw values
faint with a moving average over them; `bands` draws each variant's mean with its confidence
band. Every function writes through `vcoach_jax.storage` and returns the path, but
`contact_sheet`, which returns the grid of images as one uint8 array.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from vcoach_jax import storage

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
  """Trailing mean over the last `window` values (fewer at the start); NaNs are skipped."""
  v = np.asarray(values, np.float64)
  out = np.full(v.shape, np.nan)
  for i in range(len(v)):
    chunk = v[max(0, i - window + 1):i + 1]
    chunk = chunk[np.isfinite(chunk)]
    if chunk.size:
      out[i] = chunk.mean()
  return out


def _window(n: int) -> int:
  """Smoothing window for n points: about a tenth of the run, at least 1."""
  return max(1, n // 10)


def _grid(n: int, plt, panel=(3.6, 2.6)):
  cols = min(3, max(1, n))
  rows = max(1, math.ceil(n / cols))
  fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False)
  for ax in axes.flat[n:]:
    ax.set_visible(False)
  return fig, list(axes.flat[:n])


def _style(ax, name: str):
  from matplotlib.ticker import MaxNLocator  # pylint: disable=g-import-not-at-top
  ax.set_title(name, fontsize=9)
  ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
  ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
  ax.grid(True, color="#e6e6e6", linewidth=0.6)
  ax.tick_params(labelsize=8)
  ax.set_xlabel("step", fontsize=8)


def _save(fig, path, plt) -> str:
  fig.tight_layout()
  with storage.atomic_open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=110)
  plt.close(fig)
  return str(path)


def curves(series: Mapping[str, Sequence[tuple[float, float]]], path, *, title: str = "",
           window: int | None = None) -> str:
  """One panel per series: raw values faint, their trailing moving average solid."""
  plt = _pyplot()
  fig, axes = _grid(len(series), plt)
  for i, (ax, (name, points)) in enumerate(zip(axes, series.items())):
    color = COLORS[i % len(COLORS)]
    pts = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
    if pts:
      xs, ys = map(np.asarray, zip(*pts))
      ax.plot(xs, ys, color=color, alpha=0.3, linewidth=1, marker="." if len(xs) < 30 else None)
      avg = moving_average(ys, window or _window(len(ys)))
      ax.plot(xs, avg, color=color, linewidth=2)
    else:
      ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    _style(ax, name)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path, plt)


def bands(variants: Mapping[str, Mapping[str, tuple]], path, *, title: str = "") -> str:
  """One panel per quantity; in it each variant's mean over seeds with its band.

  Args:
    variants: variant name -> quantity -> (steps, mean, low, high), four equal-length arrays.
  """
  plt = _pyplot()
  names = list(dict.fromkeys(q for per in variants.values() for q in per))
  fig, axes = _grid(len(names), plt, panel=(4.0, 2.8))
  for ax, name in zip(axes, names):
    for i, (variant, per) in enumerate(variants.items()):
      if name not in per:
        continue
      steps, mean, lo, hi = (np.asarray(x, np.float64) for x in per[name])
      color = COLORS[i % len(COLORS)]
      ax.fill_between(steps, lo, hi, color=color, alpha=0.18, linewidth=0)
      ax.plot(steps, mean, color=color, linewidth=1.8, label=variant)
    _style(ax, name)
  if axes:
    axes[0].legend(fontsize=7, frameon=False, loc="best")
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path, plt)


def boxes_on_frame(frame: np.ndarray, boxes: Mapping[str, Sequence[Sequence[float]]], path, *,
                   truth: Sequence[Sequence[float]] = (), title: str = "") -> str:
  """A frame (uint8 [H, W, 3]) with pixel boxes [x1, y1, x2, y2] of each labelled source drawn
  on it (the ground truth dashed white), a legend beside it."""
  from matplotlib.patches import Rectangle  # pylint: disable=g-import-not-at-top
  plt = _pyplot()
  h, w = frame.shape[:2]
  scale = 5.0 / max(h, w)
  fig, ax = plt.subplots(figsize=(w * scale + 2.2, h * scale + 0.6))
  ax.imshow(frame, interpolation="nearest")
  handles = []
  for b in truth:
    handles.append(ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1],
                                          fill=False, edgecolor="white", linestyle="--",
                                          linewidth=1.5, label="ground truth")))
  for i, (label, bs) in enumerate(boxes.items()):
    color = COLORS[(i + 1) % len(COLORS)]
    for k, b in enumerate(bs):
      handles.append(ax.add_patch(Rectangle(
          (b[0] - 0.5, b[1] - 0.5), b[2] - b[0], b[3] - b[1], fill=False, edgecolor=color,
          linewidth=2, label=label if k == 0 else None)))
  ax.set_xlim(-0.5, w - 0.5)
  ax.set_ylim(h - 0.5, -0.5)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.legend(handles=[x for x in handles if not x.get_label().startswith("_")], fontsize=8,
            loc="upper left", bbox_to_anchor=(1.01, 1.0), facecolor="#303030",
            labelcolor="white")  # a dark legend: the ground truth is drawn white
  if title:
    ax.set_title(title, fontsize=9)
  return _save(fig, path, plt)


def contact_sheet(rows: list[list], gap: int = 4):
  """uint8 [H, W, 3] grid of equally sized images (rows x columns), white gaps between."""
  h, w = rows[0][0].shape[:2]
  n_rows, n_cols = len(rows), max(len(r) for r in rows)
  sheet = np.full((n_rows * (h + gap) - gap, n_cols * (w + gap) - gap, 3), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, image in enumerate(row):
      sheet[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = image
  return sheet
