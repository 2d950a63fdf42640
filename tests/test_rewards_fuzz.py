"""Fuzzing: any completion string is scored without an exception, every value in its range.

Two generators: hypothesis (tag soup with shrinking) and a seeded mutator over well-formed
grounded completions (truncations, deletions, duplications, insertions), 10,000+ completions in
all, with huge numbers, unicode, nested boxes and NaN/Infinity JSON mixed in. The samples are the
public vectors' samples, so every task and option set is exercised.
"""

import json
import pathlib
import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcoach_jax import rewards

_VECTORS = pathlib.Path(__file__).parent / "data" / "rewards_public.jsonl"
SAMPLES = [json.loads(line) for line in _VECTORS.read_text().splitlines() if line.strip()]
OPTION_SETS = [
    {"spatial_iou_mode": a, "identity_match_mode": b, "spatial_norm_mode": c, "correct_tempgate": d}
    for a in ("max", "avg") for b in ("none", "soft", "strict") for c in ("all", "matched")
    for d in (True, False)]

NUMBERS = ["0", "1", "5", "12.5", "3.", ".5", "1.2.3", "-3", "1e3", "1e400", "nan", "NaN",
           "Infinity", "-Infinity", "inf", "1_0", "٣", "9" * 30, "1" + "0" * 400, "", " 7 "]
FRAGMENTS = ["<think>", "</think>", "<answer>", "</answer>", "<obj>", "</obj>", "<box>", "</box>",
             "<t>", "</t>", "s", "at", " to ", "From ", "[", "]", ",", " ", "\n", "Correct Option:",
             "A", "(B)", "man", "red car", "dog", "ボール", "café", "\u200b", "\\", '"', "{", "}",
             "null", "true"] + NUMBERS


def _box(rng: random.Random) -> str:
  kind = rng.random()
  nums = [rng.choice(NUMBERS) if rng.random() < 0.2 else str(rng.randint(-20, 700))
          for _ in range(rng.choice([4, 4, 4, 3, 5]))]
  if kind < 0.08:
    return "[" + ", ".join(f"[{n}, {n}]" for n in nums) + "]"  # nested
  if kind < 0.12:
    return "[" + ", ".join(f"[{n}]" for n in nums) + "]"  # nested, size-1 rows
  if kind < 0.15:
    return '["' + '", "'.join(nums) + '"]'  # strings
  return "[" + ", ".join(nums) + "]"


def _well_formed(rng: random.Random, sample: dict) -> str:
  parts = []
  names = [n for items in (sample.get("key_items") or {}).values() for n in items] or ["man"]
  for _ in range(rng.randint(0, 5)):
    boxes = "".join(f"<box>{_box(rng)}</box>" for _ in range(rng.randint(1, 3)))
    time = rng.choice(NUMBERS) if rng.random() < 0.2 else f"{rng.uniform(0, 60):.1f}"
    parts.append(f"<obj>{rng.choice(names)}</obj>{boxes}at<t>{time}</t>s")
    parts.append(rng.choice(["then", "and the", "near", "<t>3.5</t>s", "around <t>8</t>s"]))
  answer = rng.choice([sample["answer"], "A", "Correct Option: B", "From <t>1</t>s to <t>9</t>s",
                       f"<obj>car</obj><box>{_box(rng)}</box>", "a dog walks", ""])
  return f"<think>{' '.join(parts)}</think> <answer>{answer}</answer>"


def _mutate(rng: random.Random, text: str) -> str:
  for _ in range(rng.randint(0, 4)):
    op = rng.random()
    i = rng.randint(0, len(text))
    if op < 0.3:
      text = text[:i]  # truncation
    elif op < 0.5:
      j = rng.randint(i, len(text))
      text = text[:i] + text[j:]  # deletion
    elif op < 0.7:
      j = rng.randint(i, min(len(text), i + 60))
      text = text[:j] + text[i:j] + text[j:]  # duplication
    else:
      text = text[:i] + "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 6))) + text[i:]
  return text


def _check(completions, samples, options):
  out, _ = rewards.compute_with_stats(completions, samples, options)
  for name in rewards.REWARD_NAMES:
    values = out[name]
    assert values.shape == (len(completions),)
    assert np.all(np.isfinite(values)), name
    assert np.all((values >= 0) & (values <= 1 + 1e-12)), (name, values.max())
  assert set(np.unique(out["format"])) <= {0.0, 0.5, 1.0}
  totals = rewards.total(out, [s["task"] for s in samples])
  for value, sample in zip(totals, samples):
    assert value <= rewards.MAX_TOTAL[sample["task"]] + 1e-5


def test_seeded_mutation_fuzz_10000_completions():
  rng = random.Random(1234)
  scored = 0
  for batch in range(40):
    samples = [rng.choice(SAMPLES) for _ in range(256)]
    completions = [_mutate(rng, _well_formed(rng, s)) for s in samples]
    _check(completions, samples, OPTION_SETS[batch % len(OPTION_SETS)])
    scored += len(completions)
  assert scored >= 10_000


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_hypothesis_tag_soup(data):
  n = data.draw(st.integers(1, 16))
  soup = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=40).map(
      "".join)
  completions = data.draw(st.lists(soup, min_size=n, max_size=n))
  indices = data.draw(st.lists(st.integers(0, len(SAMPLES) - 1), min_size=n, max_size=n))
  options = data.draw(st.sampled_from(OPTION_SETS))
  _check(completions, [SAMPLES[i] for i in indices], options)
