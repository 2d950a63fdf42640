"""`vcoach demo` end to end on a shrunk embedded default: SFT -> VP-Selector -> VisionCoach RL.

This is the test of the whole trainer (sampling, rewards, coaching, the jitted update, the
checkpoints, metrics and plots); the colab quickstart runs the same code. It runs the command
itself (`vcoach demo --fast`) and checks what it claims: the printed before/after table is the
probe of each policy; SFT lowered its loss; RL moved the SFT policy by no more than two AdamW
steps of the scheduled sizes; the curves are the metrics written; the key-frame figure shows the
ground truth and each policy.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pathlib
import re

os.environ.setdefault("USE_TF", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from vcoach_jax import cli  # noqa: E402
from vcoach_jax import demo  # noqa: E402
from vcoach_jax import metrics_writer  # noqa: E402
from vcoach_jax import plots  # noqa: E402
from vcoach_jax import rewards as rewards_lib  # noqa: E402
from vcoach_jax.rl import probe  # noqa: E402

SFT_STEPS = 12
SEED = 1  # `vcoach demo --seed`: the random model's init, the data order, the trainers' rngs
RL_LR = 2e-4  # the demo's optim.lr: cosine to 0 over the 2 RL steps (2e-4, then 1e-4)
SHRINK = (f"sft.steps={SFT_STEPS}", "data.batch_size=4", "sampling.num_samples=2",
          "synthetic.num_train=24", "synthetic.num_eval=8", "data.tiny_vocab_size=500",
          "sampling.max_new_tokens=16", "selector.max_new_tokens=16",  # short decode loops
          "optim.total_steps=2", "rl.k1=100.0")  # every prompt hard: the coaching branch runs
# Rewards that do not score the demo's only task (spatio-temporal questions): always 0.
UNSCORED = ("ans_tiou", "ans_viou", "thk_temporal_segment")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  """(workdir, DemoResult, stdout, {png path: curve series}, key-frame figure call) of
  `vcoach demo --fast` on SHRINK; the plotting calls are recorded on their way through."""
  workdir = tmp_path_factory.mktemp("demo")
  results, curves, figures = [], {}, []
  real_run, real_curves, real_boxes = demo.run, plots.curves, plots.boxes_on_frame

  def run(*args, **kwargs):
    results.append(real_run(*args, **kwargs))
    return results[-1]

  def draw_curves(series, path, **kwargs):
    curves[str(path)] = {k: list(v) for k, v in series.items()}
    return real_curves(series, path, **kwargs)

  def draw_boxes(frame, boxes, path, **kwargs):
    figures.append(dict(frame=frame, boxes=boxes, path=str(path), **kwargs))
    return real_boxes(frame, boxes, path, **kwargs)

  argv = ["demo", "--fast", "--workdir", str(workdir), "--no-progress", "--seed", str(SEED)]
  argv += [a for s in SHRINK for a in ("--set", s)]
  out = io.StringIO()
  with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
    mp.setattr(demo, "run", run)
    mp.setattr(plots, "curves", draw_curves)
    mp.setattr(plots, "boxes_on_frame", draw_boxes)
    assert cli.main(argv) == 0
  assert len(results) == 1 and len(figures) == 1
  return workdir, results[0], out.getvalue(), curves, figures[0]


def _cells(line: str, label: str) -> list[float]:
  assert line.startswith(label), line
  return [float(v) for v in line[len(label):].split()]


def _png(path) -> np.ndarray:
  with Image.open(path) as im:
    assert im.format == "PNG"
    return np.asarray(im.convert("RGB"))


def _has_color(img: np.ndarray, hex_color: str) -> bool:
  rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)], np.uint8)
  return bool((img == rgb).all(-1).any())


def test_printed_table_is_the_probe_of_each_policy(result):
  _, r, stdout, _, _ = result
  assert r.table in stdout  # the command prints the table it computed
  lines = r.table.splitlines()
  assert lines[0].split() == " ".join(probe.HEADERS[c] for c in probe.COLUMNS).split()
  assert len(lines) == 3
  for line, label, values in ((lines[1], "SFT (before RL)", r.before),
                              (lines[2], "VisionCoach RL", r.after)):
    np.testing.assert_allclose(_cells(line, label), [values[c] for c in probe.COLUMNS],
                               atol=5e-4)  # printed with 3 decimals
    # The total is the plain sum of the seven rewards (each a mean over the same rollouts).
    assert values["total"] == pytest.approx(
        sum(values[n] for n in rewards_lib.REWARD_NAMES), abs=1e-5)
    assert all(0.0 <= values[n] <= 1.0 for n in rewards_lib.REWARD_NAMES), values
    assert all(values[n] == 0.0 for n in UNSCORED), values
    assert values["frac_hard"] == 1.0  # k1 = 100
  assert set(r.seconds) == {"sft", "selector", "rl"} and min(r.seconds.values()) > 0
  assert re.search(r"^time: sft \d+s, selector \d+s, rl \d+s$", stdout, re.M)
  assert f"plots: {', '.join(r.plots)}" in stdout


def test_seed_makes_the_random_model(result):
  """`--seed 1` reached the random model the SFT started from (WORKDIR/sft/init): it is the
  preset built with seed 1, not with the default seed 0."""
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import build  # pylint: disable=g-import-not-at-top
  workdir = result[0]
  config = demo.demo_config(True, SHRINK)
  tok = experiment.tokenizer(config.copy_and_resolve_references(), workdir)
  saved, _ = build.from_config(
      demo.demo_config(True, SHRINK + (f"model.checkpoint={workdir / 'sft' / 'init'}",)), 0,
      tokenizer=tok)
  weight = lambda m: np.asarray(m.model.embed_tokens[...])  # noqa: E731
  np.testing.assert_array_equal(weight(saved), weight(build.from_config(config, SEED,
                                                                        tokenizer=tok)[0]))
  assert not np.array_equal(weight(saved), weight(build.from_config(config, 0, tokenizer=tok)[0]))


def test_sft_lowered_its_loss(result):
  workdir, _, _, _, _ = result
  rows = metrics_writer.read_jsonl(workdir / "sft" / "metrics" / "metrics.jsonl")
  assert [r["step"] for r in rows] == list(range(SFT_STEPS))
  nll = [r["nll"] for r in rows]
  assert all(math.isfinite(v) for v in nll)
  # From a random model (about ln(vocab) per token) the teacher-forced loss falls clearly.
  assert np.mean(nll[-3:]) < 0.8 * np.mean(nll[:3]), nll


def test_rl_metrics_every_step(result):
  workdir, _, _, _, _ = result
  rows = metrics_writer.read_jsonl(workdir / "rl" / "metrics" / "metrics.jsonl")
  assert [r["step"] for r in rows] == [0, 1]
  want = {f"reward_{n}" for n in rewards_lib.REWARD_NAMES} | {
      "reward_total", "frac_hard", "frac_candidates", "nll", "kl", "gspo", "grad_norm", "lr",
      "tokens_per_second", "seconds_sampling", "seconds_rewards", "seconds_train", "skipped"}
  for row in rows:
    assert want <= set(row)
    assert row["frac_hard"] == 1.0 and row["skipped"] == 0.0
    assert row["reward_total"] == pytest.approx(
        sum(row[f"reward_{n}"] for n in rewards_lib.REWARD_NAMES), abs=1e-5)
    assert all(row[f"reward_{n}"] == 0.0 for n in UNSCORED)
  # Cosine from optim.lr to 0 over 2 steps.
  assert rows[0]["lr"] == pytest.approx(RL_LR) and rows[1]["lr"] == pytest.approx(RL_LR / 2)


def _tensors(folder: pathlib.Path) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  out = {}
  for f in sorted(folder.glob("*.safetensors")):
    out.update(load_file(str(f)))
  assert out, f"no safetensors in {folder}"
  return out


def test_rl_took_two_adamw_steps_from_the_sft_policy(result):
  """The exported RL policy is the SFT policy moved by two Adam steps of the scheduled sizes:
  Adam moves a weight by at most about lr per step (bias-corrected |m| / sqrt(v) <= ~1.001 over
  two steps), so no weight moves more than lr_0 + lr_1; SFT (lr 0.01) moved them far more."""
  workdir, _, _, _, _ = result
  sft, rl = _tensors(workdir / "sft" / "policy"), _tensors(workdir / "rl" / "policy")
  init = _tensors(workdir / "sft" / "init")
  assert sorted(sft) == sorted(rl) == sorted(init)
  rl_moved = max(float(np.abs(rl[n] - sft[n]).max()) for n in sft)
  assert 0.0 < rl_moved <= 1.01 * (RL_LR + RL_LR / 2), rl_moved
  sft_moved = max(float(np.abs(sft[n] - init[n]).max()) for n in sft)
  assert sft_moved > 10 * (RL_LR + RL_LR / 2), sft_moved
  assert (workdir / "rl" / "checkpoints").is_dir()
  labels = json.loads((workdir / "selector" / "cache.json").read_text())
  assert len(labels) == 24 and set(labels.values()) <= {"raw", "darken"}


def test_curves_are_the_metrics_written(result):
  """One curves PNG per phase; each panel is one metric of metrics.jsonl, every step of it, drawn
  in its own colour."""
  workdir, r, _, curves, _ = result
  for phase, png in zip(("sft", "rl"), r.plots[:2]):
    assert pathlib.Path(png) == workdir / phase / "metrics" / "curves.png"
    series = curves[png]
    rows = metrics_writer.read_jsonl(workdir / phase / "metrics" / "metrics.jsonl")
    assert series, phase
    for key, points in series.items():
      assert points == [(row["step"], row[key]) for row in rows], (phase, key)
    img = _png(png)
    assert img.shape[1] > 300 and img.std() > 0
    for i in range(min(len(series), len(plots.COLORS))):
      assert _has_color(img, plots.COLORS[i]), (phase, i)  # each panel's curve in full colour
  assert list(curves[r.plots[0]]) == ["nll"]
  assert {"reward_total", "frac_hard"} <= set(curves[r.plots[1]])


def test_key_frame_figure_shows_truth_and_both_policies(result):
  workdir, r, _, _, figure = result
  assert len(r.plots) == 3 and r.plots[2] == figure["path"] == str(workdir / "key_frame.png")
  assert list(figure["boxes"]) == ["SFT", "VisionCoach RL"]
  frame = figure["frame"]
  assert frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 0  # a real key frame
  h, w = frame.shape[:2]
  assert figure["truth"], "the held-out clip's key frame has ground-truth boxes"
  for x1, y1, x2, y2 in figure["truth"]:  # pixel boxes inside the frame
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
  img = _png(figure["path"])
  assert img.shape[0] > 100 and img.shape[1] > 100
  colors, counts = np.unique(frame.reshape(-1, 3), axis=0, return_counts=True)
  background = "#" + "".join(f"{int(c):02x}" for c in colors[counts.argmax()])
  assert _has_color(img, background)  # the frame itself is drawn (nearest-neighbour scaling)


def test_readme_demo_table_has_the_shape_the_demo_prints(result):
  """The README's demo table is `vcoach demo`'s output: same header, same rows, a number in
  every cell (the figures themselves come from running the README's command)."""
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  block = readme[readme.index("The demo's table"):]
  printed = re.search(r"```\n(.*?)\n```", block, re.DOTALL).group(1).splitlines()
  _, r, _, _, _ = result
  lines = r.table.splitlines()
  assert printed[0] == lines[0]
  for shown, ours in zip(printed[1:len(lines)], lines[1:]):
    label = ours[:ours.index("  ")]
    assert shown.startswith(label)
    assert len(shown.split()) == len(ours.split())
    assert all(re.fullmatch(r"-?\d+\.\d{3}", v) for v in shown[len(label):].split())
