"""Reward memory is linear in the claims a completion contains (docs/rewards.md, "Memory").

A claim soup (hundreds of thousands of `<obj>..</obj><box>[..]</box>at<t>..</t>s` claims, or one
claim with tens of thousands of boxes) is scored exactly, in bounded memory, beside ordinary
rows. The exact value of a soup comes from a smaller equivalent: with the `all` denominator,
thk_spatial of a think block is the mean over its claims of each claim's score, and
thk_temporal_point the mean over its time tags, so a soup made of copies of a few one-claim
pieces scores the count-weighted mean of the pieces' own values (each piece scored by `compute`
on its own, a small input the public reference vectors cover).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import DATA_DIR
from vcoach_jax import rewards
from vcoach_jax.rewards import packing, parsing
from vcoach_jax.rewards import targets as targets_lib

ROOT = DATA_DIR.parents[1]
VECTORS = [json.loads(l) for l in (DATA_DIR / "rewards_public.jsonl").read_text().splitlines()]
# Options with the `all` denominator (the soup's value is then a weighted mean of its pieces');
# 158 public vectors use exactly these.
OPTIONS = {"spatial_iou_mode": "avg", "identity_match_mode": "strict",
           "spatial_norm_mode": "all", "correct_tempgate": False}
SAMPLE = {"id": "soup", "task": "temporal-spatial free-form QA", "answer": "a man walks a dog",
          "key_frames": [{"idx": 0, "time": 5.0}, {"idx": 1, "time": 10.0}],
          "key_items": {"0": {"man": [[0.1, 0.1, 0.5, 0.5]]},
                        "1": {"dog": [[0.5, 0.5, 0.9, 0.9]], "man": [[0.1, 0.1, 0.4, 0.4]]}},
          "image_size": [100, 100], "image_size_refine": None, "step_percent": 0.3}
# One-claim pieces: exact, partial, two boxes, another name, gated out, wrong arity, non-JSON-ish
# spacing that is still one claim, and an empty name.
PIECES = [
    "<obj>man</obj><box>[10,10,50,50]</box>at<t>5.0</t>s ",
    "<obj>man</obj><box>[20,20,60,60]</box>at<t>4.5</t>s ",
    "<obj>dog</obj><box>[50,50,90,90]</box><box>[0,0,10,10]</box>at<t>10</t>s ",
    "<obj>Dog</obj><box>[55,50,90,95]</box>at<t>9.25</t>s ",
    "<obj>cat</obj><box>[10,10,50,50]</box>at<t>5</t>s ",
    "<obj>man</obj><box>[10,10,40,40]</box>at<t>0.5</t>s ",
    "<obj>dog</obj><box>[1,2,3]</box>at<t>10</t>s ",
    "<obj>man</obj><box>[ 12, 8, 49, 51 ]</box>at<t>10.9</t>s ",
    "<obj></obj><box>[40,40,80,80]</box>at<t>9.5</t>s ",
]
# One claim with many boxes; its small equivalent has each distinct box once (a maximum).
MANY_BOXES = 20_000
BIG_CLAIM = ("<obj>man</obj>" + "<box>[0,0,5,5]</box><box>[11,9,52,50]</box>" * (MANY_BOXES // 2)
             + "at<t>5.5</t>s ")
BIG_CLAIM_SMALL = "<obj>man</obj><box>[0,0,5,5]</box><box>[11,9,52,50]</box>at<t>5.5</t>s "
ANSWER = "</think><answer>a man walks</answer>"


def _soup(n_bytes: int, seed: int = 0) -> tuple[str, np.ndarray]:
  """A think block of about n_bytes of pieces in random order (plus the many-box claim), and how
  many times each piece occurs."""
  rng = np.random.default_rng(seed)
  mean_len = np.mean([len(p) for p in PIECES])
  order = rng.integers(0, len(PIECES), int(n_bytes / mean_len))
  counts = np.bincount(order, minlength=len(PIECES))
  middle = len(order) // 2
  body = ("".join(PIECES[k] for k in order[:middle]) + BIG_CLAIM
          + "".join(PIECES[k] for k in order[middle:]))
  return "<think>" + body + ANSWER, counts


def _expected(counts: np.ndarray) -> dict[str, float]:
  """The soup's rewards from its pieces scored one by one (each a one-claim think block)."""
  texts = ["<think>" + p + ANSWER for p in PIECES + [BIG_CLAIM_SMALL]]
  single = rewards.compute(texts, [SAMPLE] * len(texts), OPTIONS)
  weights = np.append(counts, 1).astype(np.float64)
  for text in texts:  # each piece is one claim with one time tag
    assert len(parsing.parse_completion(text).claims) == 1
  out = {name: float(single[name][0]) for name in rewards.REWARD_NAMES}
  for name in ("thk_spatial", "thk_temporal_point"):
    out[name] = float(np.dot(weights, single[name]) / weights.sum())
  return out


def test_plan_keeps_ordinary_rows_together_and_isolates_large_ones():
  texts = [c["completion"] for c in VECTORS[:60]]
  samples = VECTORS[:60]
  soup, _ = _soup(20_000)
  parsed = [parsing.parse_completion(t) for t in texts + [soup]]
  targets = [targets_lib.prepare(s, i) for i, s in enumerate(samples + [SAMPLE])]
  groups = packing.plan(parsed[:60], targets[:60], packing.Shapes())
  assert len(groups) == 1 and groups[0][0] == list(range(60))  # the common case: one dispatch
  groups = packing.plan(parsed, targets, packing.Shapes())
  assert [rows for rows, _ in groups] == [list(range(60)), [60]]
  shared, alone = groups[0][1], groups[1][1]
  assert shared["max_claims"] <= packing.SHARED_FACTOR * packing.Shapes().max_claims
  need = packing.row_needs(parsed[60], targets[60])
  for d, dim in enumerate(packing.DIMS):  # the soup's own group: at most twice its own need
    assert need[d] <= alone[dim] <= max(2 * need[d], getattr(packing.Shapes(), dim))


def test_packed_bytes_are_linear_in_the_claims_present():
  """The packed arrays of a soup row take < 256 bytes per claim present (with this sample's two
  key frames and one or two objects per frame); the previous claims x boxes grid took
  claims x (boxes of the longest claim) x 33 bytes, about 9 GB here."""
  soup, counts = _soup(400_000)
  n_claims = int(counts.sum()) + 1
  parsed = [parsing.parse_completion(soup)]
  targets = [targets_lib.prepare(SAMPLE, 0)]
  (rows, sizes), = packing.plan(parsed, targets, packing.Shapes())
  batch, _, _ = packing.pack(parsed, targets, OPTIONS, packing.Shapes(), sizes)
  packed = sum(x.nbytes for x in jax.tree.leaves(batch))
  boxes = sum(len(c.boxes) for c in parsed[0].claims)
  assert boxes > MANY_BOXES and len(parsed[0].claims) == n_claims > 5000
  assert packed < 256 * (n_claims + boxes), (packed, n_claims, boxes)


def test_soup_with_a_many_box_claim_equals_its_small_equivalent():
  soup, counts = _soup(300_000, seed=1)
  expected = _expected(counts)
  got, stats = rewards.compute_with_stats([soup, VECTORS[0]["completion"]], [SAMPLE, VECTORS[0]],
                                          OPTIONS)
  assert stats.grown["max_claims"] == 1 and not stats.raised
  for name in rewards.REWARD_NAMES:
    assert got[name][0] == pytest.approx(expected[name], abs=1e-9), name


# The peak resident memory of this process's own address space (VmHWM). getrusage's ru_maxrss
# is kept across execve on Linux, so it would report the forking pytest worker's peak instead.
_MEASURE = """
import sys
from vcoach_jax import cli
rc = cli.main(sys.argv[1:])
status = open("/proc/self/status").read()
print("PEAK_RSS_KB", status.split("VmHWM:")[1].split()[0])
sys.exit(rc)
"""


def test_ten_megabyte_soup_in_a_256_record_file_is_scored_in_bounded_memory(tmp_path):
  """`vcoach rewards` on 255 public vectors plus one 10 MB claim soup (about 186,000 claims and a
  claim of 20,000 boxes): the whole process peaks below 1 GiB of resident memory (the JAX
  runtime included; the former padded layout asked for about 256 GiB), every vector scores its
  reference value and the soup its exact value."""
  soup, counts = _soup(10_000_000)
  assert len(soup) > 10_000_000
  same_options = [c for c in VECTORS if c["options"] == OPTIONS]
  others = [same_options[i % len(same_options)] for i in range(255)]
  lines = [json.dumps(c) for c in others[:100]]
  lines.append(json.dumps({**SAMPLE, "completion": soup}))
  lines += [json.dumps(c) for c in others[100:]]
  src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
  src.write_text("\n".join(lines) + "\n")
  flags = [f"--set=rewards.{k}={v}" for k, v in OPTIONS.items()]
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", _MEASURE, "rewards", str(src), "--out", str(out),
                         *flags], capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  peak_kb = int(proc.stdout.split("PEAK_RSS_KB")[1].split()[0])
  assert peak_kb < 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MiB"
  scored = [json.loads(l) for l in out.read_text().splitlines()]
  assert len(scored) == 256 and "scored 256 record(s)" in proc.stdout
  expected = _expected(counts)
  for name in rewards.REWARD_NAMES:
    assert scored[100]["rewards"][name] == pytest.approx(expected[name], abs=1e-9), name
  for case, row in zip(others, scored[:100] + scored[101:]):
    for name in rewards.REWARD_NAMES:
      assert row["rewards"][name] == pytest.approx(case["expected"][name], abs=1e-6)
