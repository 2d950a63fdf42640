"""`vcoach demo` end to end on a shrunk embedded default: SFT -> VP-Selector -> VisionCoach RL.

This is the test of the whole trainer (sampling, rewards, coaching, the jitted update, the
checkpoints, metrics and plots); the colab quickstart runs the same code.
"""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402
from PIL import Image  # noqa: E402

from vcoach_jax import demo  # noqa: E402
from vcoach_jax import metrics_writer  # noqa: E402
from vcoach_jax import rewards as rewards_lib  # noqa: E402
from vcoach_jax.model import load_hf  # noqa: E402
from vcoach_jax.rl import probe  # noqa: E402

SHRINK = ("sft.steps=12", "data.batch_size=4", "sampling.num_samples=2",
          "synthetic.num_train=24", "synthetic.num_eval=8", "data.tiny_vocab_size=500",
          "optim.total_steps=2", "rl.k1=100.0")  # every prompt hard: the coaching branch runs


@pytest.fixture(scope="module")
def result(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("demo")
  config = demo.demo_config(fast=True, overrides=SHRINK)
  return workdir, demo.run(config, str(workdir), progress=False, fast=True)


def test_table_and_probes(result):
  _, r = result
  lines = r.table.splitlines()
  assert len(lines) == 3 and lines[1].startswith("SFT (before RL)")
  for values in (r.before, r.after):
    assert set(probe.COLUMNS) <= set(values)
    assert all(math.isfinite(v) and v >= 0 for v in values.values())
    assert values["frac_hard"] == 1.0  # k1 = 100
    assert values["total"] <= 4.0


def test_rl_metrics_every_step(result):
  workdir, _ = result
  rows = metrics_writer.read_jsonl(workdir / "rl" / "metrics" / "metrics.jsonl")
  assert [r["step"] for r in rows] == [0, 1]
  want = {f"reward_{n}" for n in rewards_lib.REWARD_NAMES} | {
      "reward_total", "frac_hard", "frac_candidates", "nll", "kl", "gspo", "grad_norm", "lr",
      "tokens_per_second", "seconds_sampling", "seconds_rewards", "seconds_train", "skipped"}
  assert want <= set(rows[0])
  assert rows[0]["frac_hard"] == 1.0 and rows[0]["skipped"] == 0.0
  # Cosine from optim.lr to 0 over 2 steps.
  assert rows[0]["lr"] == pytest.approx(2e-4) and rows[1]["lr"] == pytest.approx(1e-4)


def test_outputs_on_disk(result):
  workdir, r = result
  for png in r.plots:
    with Image.open(png) as im:
      assert im.size[0] > 100 and np.asarray(im).std() > 0
  cache = json.loads((workdir / "selector" / "cache.json").read_text())
  assert len(cache) == 24 and set(cache.values()) <= {"raw", "darken"}
  rl_policy = load_hf(str(workdir / "rl" / "policy"))
  sft_policy = load_hf(str(workdir / "sft" / "policy"))
  assert rl_policy.config == sft_policy.config
  changed = [not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
             zip(jax.tree.leaves(nnx.state(rl_policy)), jax.tree.leaves(nnx.state(sft_policy)))]
  assert any(changed)  # RL moved the policy
  assert (workdir / "rl" / "checkpoints").is_dir()


def test_readme_demo_table_has_the_shape_the_demo_prints(result):
  """The README's demo table is `vcoach demo`'s output: same header, same rows, a number in
  every cell (the figures themselves come from running the README's command)."""
  import pathlib  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  block = readme[readme.index("The demo's table"):]
  printed = re.search(r"```\n(.*?)\n```", block, re.DOTALL).group(1).splitlines()
  _, r = result
  lines = r.table.splitlines()
  assert printed[0] == lines[0]
  for shown, ours in zip(printed[1:len(lines)], lines[1:]):
    label = ours[:ours.index("  ")]
    assert shown.startswith(label)
    assert len(shown.split()) == len(ours.split())
    assert all(re.fullmatch(r"-?\d+\.\d{3}", v) for v in shown[len(label):].split())
