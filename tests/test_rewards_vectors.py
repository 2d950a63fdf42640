"""The 600 public reward vectors: every reward of every case equals the reference (≤ 1e-6)."""

import collections
import json
import pathlib

import numpy as np
import pytest

from vcoach_jax import rewards

_VECTORS = pathlib.Path(__file__).parent / "data" / "rewards_public.jsonl"
CASES = [json.loads(line) for line in _VECTORS.read_text().splitlines() if line.strip()]
TOL = 1e-6


def test_vector_file_is_complete():
  assert len(CASES) == 600
  assert {c["task"] for c in CASES} == set(rewards.TASKS)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case_matches_reference(case):
  got = rewards.compute([case["completion"]], [case], case["options"])
  for name in rewards.REWARD_NAMES:
    assert got[name].shape == (1,)
    assert abs(got[name][0] - case["expected"][name]) <= TOL, (name, got[name][0],
                                                               case["expected"][name])


def test_batched_by_options_matches_reference():
  """The same cases scored as large mixed-task batches (one per option set)."""
  groups = collections.defaultdict(list)
  for case in CASES:
    groups[json.dumps(case["options"], sort_keys=True)].append(case)
  for group in groups.values():
    got = rewards.compute([c["completion"] for c in group], group, group[0]["options"])
    for name in rewards.REWARD_NAMES:
      expected = np.array([c["expected"][name] for c in group])
      np.testing.assert_allclose(got[name], expected, atol=TOL, rtol=0, err_msg=name)


def test_total_is_plain_sum_as_float32():
  group = CASES[:50]
  per = {name: np.array([c["expected"][name] for c in group]) for name in rewards.REWARD_NAMES}
  got = rewards.total(per, [c["task"] for c in group])
  assert got.dtype == np.float32
  expected = sum(per[name] for name in rewards.REWARD_NAMES)
  np.testing.assert_allclose(got, expected, atol=1e-6)
  for value, case in zip(got, group):
    assert value <= rewards.MAX_TOTAL[case["task"]] + 1e-6
