"""Coaching decisions on the host (docs/design.md §8.4): which prompts are hard, and which prompted
rollouts are the positives the policy distils. Numpy in, fixed-shape numpy out.

  hard = hard_prompts(total_raw, G, k1=2.21)                       # [B] bool
  w = positive_weights(raw_acc, prompted_acc, hard, G, rule="answer")  # [B*G] float32

`w` holds 1/num_positives on each positive row of a hard prompt and 0 elsewhere: the device
side (`distill.nll_loss`) needs nothing else.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

K1 = 2.21  # hard threshold on the mean total reward of the raw group (reference)
CANDIDATE_RULES = ("answer", "total")


def hard_prompts(rewards: np.ndarray, group_size: int, k1: float = K1,
                 tasks: Sequence[str] | None = None,
                 k1_per_task: Mapping[str, float] | None = None) -> np.ndarray:
  """[B] bool: mean over the G raw rollouts of the total reward strictly below k1.

  Args:
    rewards: [B*G] total rewards of the raw rollouts, grouped by prompt.
    group_size: G.
    k1: the threshold (2.21 in the reference).
    tasks: [B] task names, needed only with `k1_per_task`.
    k1_per_task: optional {task: k1} overriding `k1` for those tasks.
  """
  mean = np.asarray(rewards, np.float64).reshape(-1, group_size).mean(axis=1)
  thresholds = np.full(mean.shape, float(k1))
  if k1_per_task:
    if tasks is None or len(tasks) != len(mean):
      raise ValueError(f"k1_per_task needs one task name per prompt ({len(mean)}), got "
                       f"{None if tasks is None else len(tasks)}")
    thresholds = np.asarray([float(k1_per_task.get(t, k1)) for t in tasks])
  return mean < thresholds


def select_positives(raw_score: np.ndarray, prompted_score: np.ndarray,
                     prompted_acc: np.ndarray, num_positives: int = 2) -> list[int]:
  """Positives of one prompt: prompted rollouts whose score is strictly above the raw group's
  mean score, the top `num_positives` of them by answer accuracy (ties: lower index first).

  Args:
    raw_score: [G] the rule's score of the raw rollouts (ans_acc or total).
    prompted_score: [G] the same score of the prompted rollouts.
    prompted_acc: [G] ans_acc of the prompted rollouts (the ranking key).
    num_positives: N.
  """
  threshold = float(np.mean(raw_score))
  candidates = [i for i, s in enumerate(np.asarray(prompted_score)) if s > threshold]
  candidates.sort(key=lambda i: (-float(prompted_acc[i]), i))
  return candidates[:num_positives]


def positive_weights(raw_acc: np.ndarray, prompted_acc: np.ndarray, hard: np.ndarray,
                     group_size: int, *, rule: str = "answer",
                     raw_total: np.ndarray | None = None,
                     prompted_total: np.ndarray | None = None,
                     num_positives: int = 2) -> np.ndarray:
  """[B*G] float32 NLL weights of the prompted rollouts: 1/k on the k positives of each hard
  prompt, 0 elsewhere (easy prompts, no candidate).

  Args:
    raw_acc, prompted_acc: [B*G] ans_acc of the raw and prompted rollouts (row-aligned: prompted
      rows b*G.. are prompt b's).
    hard: [B] bool.
    group_size: G.
    rule: "answer" (released code: prompted ans_acc > raw mean ans_acc) or "total" (paper text:
      prompted total > raw mean total; needs raw_total and prompted_total).
    num_positives: N (2 in the reference).
  """
  if rule not in CANDIDATE_RULES:
    raise ValueError(f"candidate rule must be one of {CANDIDATE_RULES}, got {rule!r}")
  raw_acc = np.asarray(raw_acc, np.float64).reshape(-1, group_size)
  prompted_acc = np.asarray(prompted_acc, np.float64).reshape(-1, group_size)
  if rule == "total":
    if raw_total is None or prompted_total is None:
      raise ValueError("candidate rule 'total' needs raw_total and prompted_total")
    raw_score = np.asarray(raw_total, np.float64).reshape(-1, group_size)
    prompted_score = np.asarray(prompted_total, np.float64).reshape(-1, group_size)
  else:
    raw_score, prompted_score = raw_acc, prompted_acc
  hard = np.asarray(hard, bool).reshape(-1)
  if hard.shape[0] != raw_acc.shape[0]:
    raise ValueError(f"hard has {hard.shape[0]} prompts, rewards have {raw_acc.shape[0]}")
  weights = np.zeros(raw_acc.shape, np.float32)
  for b in np.nonzero(hard)[0]:
    pos = select_positives(raw_score[b], prompted_score[b], prompted_acc[b], num_positives)
    if pos:
      weights[b, pos] = 1.0 / len(pos)
  return weights.reshape(-1)
