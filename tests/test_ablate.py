"""`vcoach ablate --fast` end to end on a shrunk world: SFT once, the three variants, their
evaluation (probe + V-STAR-style metrics), the table (markdown + JSON) and the reward plot."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("USE_TF", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from vcoach_jax import ablate  # noqa: E402
from vcoach_jax import cli  # noqa: E402
from vcoach_jax import metrics_writer  # noqa: E402

# The sizes and schedules of tests/test_demo.py's run (batch 4, G = 2, vocabulary 500, 16 new
# tokens, greedy rows 4, 12 SFT steps, 2 RL steps from lr 2e-4): its SFT step, sampler and the
# `full` variant's update are the same programs, which the suite's compilation cache compiles
# once for both tests.
SHRINK = ("sft.steps=12", "optim.lr=0.0002", "data.batch_size=4", "sampling.num_samples=2",
          "synthetic.num_train=12", "synthetic.num_eval=4", "data.tiny_vocab_size=500",
          "sampling.max_new_tokens=16", "selector.max_new_tokens=16", "selector.steps=1",
          "selector.batch_size=2", "eval.batch_size=4",
          "rl.prompt_selector=off",  # no selector phase: hard prompts get `raw` (hint only)
          "rl.k1=100.0")  # every prompt hard: the coaching branches run


@pytest.fixture
def suite_cache(tmp_path):
  """The suite's compilation cache folder (tests/conftest.py) for `--compile-cache`, not one of
  this test's: JAX keeps the first folder a process uses, so a folder of this test's would be
  every later test's in this worker, shared with no other process. The command's smallest
  compile time to cache is put back afterwards."""
  import jax  # pylint: disable=g-import-not-at-top
  key = "jax_persistent_cache_min_compile_time_secs"
  saved = getattr(jax.config, key)
  yield os.environ.get("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "cache"))
  jax.config.update(key, saved)


def test_ablate_fast_end_to_end(tmp_path, suite_cache):
  workdir = tmp_path / "ablate"
  argv = ["ablate", "--fast", "--seeds", "1", "--steps", "2", "--no-progress",
          "--workdir", str(workdir), "--compile-cache", suite_cache]
  for s in SHRINK:
    argv += ["--set", s]
  assert cli.main(argv) == 0

  summary = json.loads((workdir / "ablation.json").read_text())
  stats = summary["metrics"]
  assert set(stats) == set(ablate.VARIANTS) | {ablate.START}
  for name, per in stats.items():
    assert set(per) == set(ablate.COLUMNS), name
    for key, s in per.items():
      assert len(s["values"]) == 1 and s["std"] == 0.0, (name, key)
      assert math.isfinite(s["mean"]), (name, key)
    assert per["probe/frac_hard"]["mean"] == 1.0  # k1 = 100
    assert 0.0 <= per["eval/acc"]["mean"] <= 1.0 and per["probe/total"]["mean"] <= 4.0

  table = (workdir / "ablation.md").read_text()
  rows = [line for line in table.splitlines() if line.startswith("| ")]
  names = [r.split("|")[1].strip() for r in rows]
  pairs = ["", "full - gspo", "coach - gspo", "full - coach"]  # paired differences with CIs
  per_variant = ["", "gspo", "coach", "full"]  # each variant's mean with its CI
  order = ["variant", ablate.START, "gspo", "coach", "full"]
  assert names == pairs + per_variant + order * 2  # then the probe and V-STAR-style tables
  assert sum(r.count("±") for r in rows) == len(ablate.COLUMNS) * 4
  assert summary["paired_differences"]["full - gspo"]["probe/total"]["values"] == [
      stats["full"]["probe/total"]["mean"] - stats["gspo"]["probe/total"]["mean"]]
  assert "prompted rollouts of hard prompts as extra GSPO groups" in table

  # The variants differ where they should: only coaching runs sample prompted rollouts.
  logs = {v: metrics_writer.read_jsonl(workdir / "runs" / v / "seed0" / "metrics" /
                                       "metrics.jsonl") for v in ablate.VARIANTS}
  assert all([r["step"] for r in rows] == [0, 1] for rows in logs.values())
  assert "prompted_total" not in logs["gspo"][0] and "prompted_total" in logs["coach"][0]
  # The loss each variant optimised: GSPO + beta * KL, plus the prompted GSPO term (coach, whose
  # value is 0 at mu = 1: in-group advantages sum to 0) or alpha * NLL (full).
  beta, alpha = 0.04, 0.1
  for name in ablate.VARIANTS:
    for m in logs[name]:
      extra = alpha * m["nll"] if name == "full" else 0.0
      assert m["loss"] == pytest.approx(m["gspo"] + beta * m["kl"] + extra, abs=1e-5), name

  with Image.open(workdir / "reward_total.png") as im:
    assert im.size[0] > 100 and np.asarray(im).std() > 0

  # A rerun reuses the SFT start and the finished runs.
  assert cli.main(argv) == 0
  assert json.loads((workdir / "ablation.json").read_text())["metrics"] == stats


def test_mean_ci_is_the_student_t_interval():
  m, lo, hi = ablate.mean_ci([1.0, 2.0, 3.0])
  assert m == 2.0
  np.testing.assert_allclose([lo, hi], [2.0 - 2.4841, 2.0 + 2.4841], atol=1e-3)  # t(.975, 2)
  assert ablate.mean_ci([0.5]) == (0.5, 0.5, 0.5)


def test_paired_differences_pair_runs_by_seed():
  runs = [{"variant": v, "seed": s, "metrics": {"probe/total": base + s * 0.5}}
          for v, base in (("gspo", 1.0), ("full", 1.2)) for s in range(3)]
  diff = ablate.paired_differences(runs, pairs=(("full", "gspo"), ("coach", "gspo")),
                                   columns=("probe/total",))
  assert list(diff) == ["full - gspo"]  # no coach runs: no pair
  d = diff["full - gspo"]["probe/total"]
  np.testing.assert_allclose(d["values"], [0.2, 0.2, 0.2])  # the seed effect cancels
  assert d["low"] == pytest.approx(0.2) and d["high"] == pytest.approx(0.2)
  table = ablate.table(diff, ("probe/total",), cell=ablate.mean_interval, first="")
  assert "| full - gspo | 3 | 0.200 [0.200, 0.200] |" in table


def test_one_table_writer_for_both_cell_forms():
  stats = ablate.aggregate([{"variant": "gspo", "seed": s, "metrics": dict.fromkeys(
      ablate.COLUMNS, 1.0 + s)} for s in range(3)])
  table = ablate.table(stats, ("probe/total", "eval/mIoU")).splitlines()
  assert table[0] == ("| variant | seeds | " + " | ".join(
      ablate.HEADERS.get(c, c) for c in ("probe/total", "eval/mIoU")) + " |")
  assert table[1] == "|---|---|---|---|"
  assert table[2] == "| gspo | 3 | 2.000 ± 0.816 | 2.000 ± 0.816 |"  # std over seeds, ddof 0
  ci = ablate.table(stats, ("probe/total",), cell=ablate.mean_interval, first="").splitlines()
  assert ci[0].startswith("|  | seeds | ")
  assert ci[2] == "| gspo | 3 | 2.000 [-0.484, 4.484] |"  # t(.975, 2) * 1 / sqrt(3) = 2.484
