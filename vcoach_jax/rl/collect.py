"""The host half of a VisionCoach step (Algorithm 1): rollouts, rewards, coaching, positives.

  raw batch ─ sampler (G per prompt) ─ rewards ─ advantages ─ hard? (mean R < k1)
                                                                │ yes, for those prompts only
     prompt type (selector cache | raw) ─ draw on key frames + hint ─ sampler (G) ─ rewards
                                                                │
                                  candidates (beat the raw mean) ─ top N ─ NLL weights

Only the hard prompts are sampled again, and only they enter the train step: their rollouts are
laid out in a prompted batch of P rows, P = the smallest of `row_buckets` (the sampler's batch
buckets) >= the number of hard prompts, at most B; padding rows repeat the first hard prompt with
weight 0. Row k of it is hard prompt `prompted_rows[k]` of the raw batch. So the train step's
programs are bounded (one per (P, prompt-length bucket), plus the one without a prompted branch)
and a batch with one hard prompt does not pay for B prompted forwards. The device work is the
sampler's; the rest is numpy.

`prompted_advantages` are the group advantages of each hard prompt's prompted rollouts,
normalised within that prompted group (0 on the rows of easy / padding prompts): the
`rl.prompted_gspo` ablation variant puts them in a GSPO term under the prompted input (coaching
without self-distillation); the reference method does not use them. The arrays of the prompted
branch (`prompted`, `weights`, `prompted_advantages`) have P*G rows; `hard` and the raw ones B*G.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vcoach_jax import rewards as rewards_lib
from vcoach_jax.data import pipeline as pipeline_lib
from vcoach_jax.model import batching
from vcoach_jax.rl import advantages as advantages_lib
from vcoach_jax.rl import coaching
from vcoach_jax.sampling import buckets


@dataclasses.dataclass
class Scored:
  """Rollouts of a batch with their rewards."""
  rollouts: Any  # sampling.Rollouts, rows b*G + j
  per_reward: dict[str, np.ndarray]  # name -> [B*G]
  total: np.ndarray  # [B*G] float32


@dataclasses.dataclass
class Collected:
  """What one train step consumes, plus what the metrics report."""
  raw_inputs: Any  # ModelInputs, B prompt rows
  raw: Scored
  advantages: np.ndarray  # [B*G]
  hard: np.ndarray  # [B] bool
  prompt_types: list[str]  # [B] ('' for easy prompts)
  prompted_inputs: Any | None  # ModelInputs, P rows (None when no prompt is hard)
  prompted: Scored | None  # rows k*G + j of the prompted batch: sample j of prompted_rows[k]
  weights: np.ndarray  # [P*G] NLL weight of each prompted row (0 on padding rows)
  prompted_advantages: np.ndarray  # [P*G] in-group advantages of prompted rows (0: padding)
  seconds: dict[str, float]  # sampling / rewards time
  prompted_rows: np.ndarray = dataclasses.field(  # [P] raw-batch row of each prompted row
      default_factory=lambda: np.zeros((0,), np.int32))
  num_hard: int = 0  # prompted rows that are real (the first num_hard; the rest is padding)


def score(rollouts, samples: Sequence[Mapping[str, Any]], g: int,
          options: Mapping[str, Any]) -> Scored:
  """Rewards of G rollouts per sample (row b*G + j answers sample b)."""
  rep = [s for s in samples for _ in range(g)]
  per = rewards_lib.compute(rollouts.texts, rep, options)
  tot = rewards_lib.total(per, [s["task"] for s in rep])
  return Scored(rollouts, per, tot)


def _scatter_rows(x: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
  """[len(rows), ...] -> [n, ...] with zeros elsewhere."""
  out = np.zeros((n,) + x.shape[1:], x.dtype)
  out[rows] = x
  return out


def _group_rows(prompts: Sequence[int], g: int) -> np.ndarray:
  return (np.asarray(prompts)[:, None] * g + np.arange(g)[None]).reshape(-1)


def collect(batch: pipeline_lib.HostBatch, *, model_config, sample: Callable,
            encode: Callable[[Mapping[str, Any], str], dict],
            prompt_type: Callable[[Mapping[str, Any]], str],
            shapes: pipeline_lib.BatchShapes, pad_id: int, g: int, k1: float,
            k1_per_task: Mapping[str, float], candidate_rule: str, num_positives: int,
            reward_options: Mapping[str, Any], coach: bool = True,
            row_buckets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)) -> Collected:
  """Runs the host half of one step.

  Args:
    batch: the raw host batch (with its decoded examples).
    model_config: the policy's ModelConfig (token ids for `batch_inputs`).
    sample: `ModelInputs -> Rollouts` with G samples per row (the sampler, current params).
    encode: `(example, prompt_type) -> encoded item` (draws the visual prompt, adds the hint).
    prompt_type: decoded example -> its prompt type when hard (selector cache or `raw`).
    shapes, pad_id: the fixed shapes of host batches.
    g, k1, k1_per_task, candidate_rule, num_positives: docs/design.md §8.4 constants.
    reward_options: the reward options of `config.rewards`.
    coach: False runs plain GSPO (no prompted branch).
    row_buckets: row counts the prompted batch is padded to (capped at B).
  """
  seconds = {"sampling": 0.0, "rewards": 0.0}
  t0 = time.perf_counter()
  raw_inputs = batching.batch_inputs(model_config, batch.arrays)
  raw_rollouts = sample(raw_inputs)
  t1 = time.perf_counter()
  raw = score(raw_rollouts, batch.samples, g, reward_options)
  seconds["sampling"] += t1 - t0
  seconds["rewards"] += time.perf_counter() - t1
  adv = np.asarray(advantages_lib.group_advantages(raw.total, g))
  tasks = [s["task"] for s in batch.samples]
  hard = coaching.hard_prompts(raw.total, g, k1, tasks, k1_per_task)
  b = len(batch.ids)
  types = [""] * b
  hard_rows = [i for i in range(b) if hard[i]]
  if not coach or not hard_rows:
    zeros = np.zeros((0,), np.float32)
    return Collected(raw_inputs, raw, adv, hard, types, None, None, zeros, zeros, seconds)
  for i in hard_rows:
    types[i] = prompt_type(batch.examples[i])
  # Sample the hard prompts only (the sampler pads them to its batch bucket) ...
  t0 = time.perf_counter()
  items = [encode(batch.examples[i], types[i]) for i in hard_rows]
  hard_host = pipeline_lib.collate(items, shapes, pad_id)
  rollouts = sample(batching.batch_inputs(model_config, hard_host.arrays))
  t1 = time.perf_counter()
  scored = score(rollouts, hard_host.samples, g, reward_options)
  seconds["sampling"] += t1 - t0
  seconds["rewards"] += time.perf_counter() - t1
  # ... then lay them out as P rows for the train step: row k holds hard prompt k, the padding
  # rows repeat the first hard prompt with zero weight.
  h = len(hard_rows)
  p = min(b, buckets.batch_bucket(h, row_buckets))
  full_host = pipeline_lib.collate([items[k if k < h else 0] for k in range(p)], shapes, pad_id)
  prompted_inputs = batching.batch_inputs(model_config, full_host.arrays)
  n = p * g
  live = np.arange(h * g)
  prompted_rollouts = type(rollouts)(
      tokens=_scatter_rows(rollouts.tokens, live, n), mask=_scatter_rows(rollouts.mask, live, n),
      logprobs=_scatter_rows(rollouts.logprobs, live, n),
      texts=list(rollouts.texts) + [""] * (n - h * g))
  prompted = Scored(prompted_rollouts,
                    {k: _scatter_rows(v, live, n) for k, v in scored.per_reward.items()},
                    _scatter_rows(scored.total, live, n))
  rows = _group_rows(hard_rows, g)
  weights = _scatter_rows(coaching.positive_weights(
      raw.per_reward["ans_acc"][rows], scored.per_reward["ans_acc"],
      np.ones((h,), bool), g, rule=candidate_rule, raw_total=raw.total[rows],
      prompted_total=scored.total, num_positives=num_positives), live, n)
  prompted_adv = _scatter_rows(
      np.asarray(advantages_lib.group_advantages(scored.total, g), np.float32), live, n)
  prompted_rows = np.asarray(hard_rows + [hard_rows[0]] * (p - h), np.int32)
  return Collected(raw_inputs, raw, adv, hard, types, prompted_inputs, prompted, weights,
                   prompted_adv, seconds, prompted_rows, h)

