"""The host half of a VisionCoach step (Algorithm 1): rollouts, rewards, coaching, positives.

  raw batch ─ sampler (G per prompt) ─ rewards ─ advantages ─ hard? (mean R < k1)
                                                                │ yes, for those prompts only
     prompt type (selector cache | raw) ─ draw on key frames + hint ─ sampler (G) ─ rewards
                                                                │
                                  candidates (beat the raw mean) ─ top N ─ NLL weights

Only the hard prompts are sampled again, and only they enter the update: their rollouts are
laid out in a prompted batch of P rows, P = the smallest of `Coaching.prompted_rows` (the
update's prompted buckets) >= the number of hard prompts; padding rows repeat the first hard
prompt with weight 0. Row k of it is hard prompt `rows[k]` of the raw batch. So the update's
programs are bounded (one per P, plus the one without a prompted branch) and a batch with one
hard prompt does not pay for B prompted forwards. The device work is the sampler's; the rest is
numpy.

`PromptedBranch.group_advantages` are the group advantages of each hard prompt's prompted
rollouts, normalised within that prompted group (0 on padding rows): the `coach` method puts
them in a GSPO term under the prompted input (coaching without self-distillation); the
reference method (`full`) does not use them.

Randomness: one key per step; each phase derives its own by `jax.random.fold_in(key, PHASE)`
(`RAW_SAMPLING`, `PROMPTED_SAMPLING`, and the update's `UPDATE`), never by call order.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vcoach_jax import config as config_lib
from vcoach_jax import rewards as rewards_lib
from vcoach_jax.data import pipeline as pipeline_lib
from vcoach_jax.model import batching
from vcoach_jax.prompting import hints
from vcoach_jax.prompting import selector as selector_lib
from vcoach_jax.rl import advantages as advantages_lib
from vcoach_jax.rl import coaching
from vcoach_jax.rl import hosts
from vcoach_jax.rl import methods
from vcoach_jax.sampling import buckets

RAW_SAMPLING, PROMPTED_SAMPLING, UPDATE = 0, 1, 2  # jax.random.fold_in(step key, PHASE)


@dataclasses.dataclass(frozen=True)
class Scored:
  """Rollouts of a batch with their rewards."""
  rollouts: Any  # sampling.Rollouts, rows b*G + j
  per_reward: dict[str, np.ndarray]  # name -> [rows*G]
  total: np.ndarray  # [rows*G] float32


@dataclasses.dataclass(frozen=True)
class RawBranch:
  """The B prompts of the batch and their G rollouts each (rows b*G + j)."""
  inputs: Any  # ModelInputs, B prompt rows
  scored: Scored
  advantages: np.ndarray  # [B*G] group advantages (GSPO)
  hard: np.ndarray  # [B] bool: mean total reward below k1


@dataclasses.dataclass(frozen=True)
class PromptedBranch:
  """The hard prompts with their visual prompt drawn, padded to P rows, and their G prompted
  rollouts each (rows k*G + j: sample j of raw prompt `rows[k]`)."""
  inputs: Any  # ModelInputs, P prompt rows
  scored: Scored  # [P*G] rows; padding rows are empty
  nll_weights: np.ndarray  # [P*G] self-distillation weight of each row (0 on padding)
  group_advantages: np.ndarray  # [P*G] advantages within each prompted group (0 on padding)
  rows: np.ndarray  # [P] int32 raw-batch row of each prompted row
  num_hard: int  # prompted rows that are real (the first num_hard; the rest is padding)


@dataclasses.dataclass(frozen=True)
class Rollout:
  """What one update consumes, plus what the metrics report."""
  raw: RawBranch
  prompted: PromptedBranch | None  # None: no prompt was hard, or the method does not coach
  prompt_types: list[str]  # [B] prompt type of each hard prompt ('' for easy ones)
  seconds: dict[str, float]  # sampling / rewards time


@dataclasses.dataclass(frozen=True)
class Coaching:
  """The run's fixed settings of the host half (docs/design.md §8.4 constants)."""
  enabled: bool  # the method coaches (`rl.method` gspo: no prompted branch)
  g: int  # rollouts per prompt
  k1: float
  k1_per_task: Mapping[str, float]
  candidate_rule: str
  num_positives: int
  prompted_rows: Sequence[int]  # the row counts a prompted batch is padded to
  reward_options: Mapping[str, Any]
  prompt_options: hints.PromptOptions
  cache: Mapping[str, str]  # selector cache: record id -> prompt type ({}: always `raw`)

  @classmethod
  def from_config(cls, config, prompted_rows: Sequence[int]) -> Coaching:
    r = config.rl
    cache = {}
    if r.prompt_selector == "cache" and config.selector.cache:
      cache = selector_lib.load_cache(config.selector.cache)
    return cls(enabled=methods.get(r.method).coach, g=int(config.sampling.num_samples),
               k1=r.k1, k1_per_task=config_lib.k1_per_task(config),
               candidate_rule=r.candidate_rule, num_positives=r.num_positives,
               prompted_rows=tuple(prompted_rows),
               reward_options=config_lib.reward_options(config),
               prompt_options=hints.PromptOptions.from_config(config.prompting,
                                                              config.video.timestamps),
               cache=cache)


def score(rollouts, samples: Sequence[Mapping[str, Any]], g: int,
          options: Mapping[str, Any]) -> Scored:
  """Rewards of G rollouts per sample (row b*G + j answers sample b)."""
  rep = [s for s in samples for _ in range(g)]
  per = rewards_lib.compute(rollouts.texts, rep, options)
  tot = rewards_lib.total(per, [s["task"] for s in rep])
  return Scored(rollouts=rollouts, per_reward=per, total=tot)


def _scatter_rows(x: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
  """[len(rows), ...] -> [n, ...] with zeros elsewhere."""
  out = np.zeros((n,) + x.shape[1:], x.dtype)
  out[rows] = x
  return out


def _group_rows(prompts: Sequence[int], g: int) -> np.ndarray:
  return (np.asarray(prompts)[:, None] * g + np.arange(g)[None]).reshape(-1)


@functools.partial(jax.jit, static_argnums=1)
def _pad_rows(xs: tuple[jax.Array, ...], n: int) -> tuple[jax.Array, ...]:
  """Device arrays' rows followed by zero rows, n in all (one program, on the devices)."""
  return tuple(jnp.pad(x, [(0, n - x.shape[0])] + [(0, 0)] * (x.ndim - 1)) for x in xs)


def _padded(scored: Scored, n: int) -> Scored:
  """The first rows of `scored` followed by empty rows, n in all (the sampler's device arrays
  padded the same way on the devices)."""
  live, r = np.arange(len(scored.total)), scored.rollouts
  placed = None if r.placed is None else _pad_rows(tuple(r.placed), n)
  rollouts = type(r)(tokens=_scatter_rows(r.tokens, live, n), mask=_scatter_rows(r.mask, live, n),
                     logprobs=_scatter_rows(r.logprobs, live, n),
                     texts=list(r.texts) + [""] * (n - len(live)), placed=placed)
  return Scored(rollouts=rollouts,
                per_reward={k: _scatter_rows(v, live, n) for k, v in scored.per_reward.items()},
                total=_scatter_rows(scored.total, live, n))


def rollout(batch: pipeline_lib.HostBatch, *, sampler, sampling, policy, model_config,
            pipe: pipeline_lib.Pipeline, coach: Coaching, key: jax.Array) -> Rollout:
  """Runs the host half of one step.

  Args:
    batch: the raw host batch (with its decoded examples); with `batch.rows` this process's
      rows of the global batch (`rl.hosts`: its own rows prepared and scored here).
    sampler, sampling: the `sampling.Sampler` and its `SamplingConfig` (G = num_samples).
    policy: the current policy's `nnx.State` (what the sampler decodes from).
    model_config: the policy's ModelConfig (token ids for `batch_inputs`).
    pipe: the data stream: its processor, texts, shapes, pad id and schedule position encode the
      prompted examples as the raw ones were.
    coach: the run's coaching settings.
    key: this step's key (phases fold in `RAW_SAMPLING` and `PROMPTED_SAMPLING`).
  """
  g, seconds = coach.g, {"sampling": 0.0, "rewards": 0.0}
  # Raw rollouts: G per prompt, rewards, group advantages, hard prompts.
  t0 = time.perf_counter()
  raw_inputs = hosts.global_inputs(batch, model_config, sampler, pipe.pad_id)  # pixels once
  raw_rollouts = sampler.generate(raw_inputs, sampling, jax.random.fold_in(key, RAW_SAMPLING),
                                  state=policy, text_rows=hosts.text_rows(batch))
  t1 = time.perf_counter()
  def own(texts, samples):  # this process's rows
    got = score(raw_rollouts._replace(texts=list(texts)), samples, g, coach.reward_options)
    return got.per_reward, got.total
  per, total = hosts.score(raw_rollouts.texts, batch, g, own)
  scored = Scored(rollouts=raw_rollouts, per_reward=per, total=total)
  seconds["sampling"] += t1 - t0
  seconds["rewards"] += time.perf_counter() - t1
  tasks = hosts.global_tasks(batch)
  raw = RawBranch(inputs=raw_inputs, scored=scored,
                  advantages=np.asarray(advantages_lib.group_advantages(scored.total, g)),
                  hard=coaching.hard_prompts(scored.total, g, coach.k1, tasks,
                                             coach.k1_per_task))
  b = hosts.global_size(batch)
  types = [""] * b
  hard_rows = [i for i in range(b) if raw.hard[i]]
  if not coach.enabled or not hard_rows:
    return Rollout(raw=raw, prompted=None, prompt_types=types, seconds=seconds)
  # Coaching: each hard prompt gets its visual prompt and hint, and G prompted rollouts.
  t0 = time.perf_counter()
  def coached(example, i):  # on the process that read row i
    del i
    record = pipeline_lib.record_of(example)
    kind = selector_lib.choose(coach.cache, record["id"], bool(record["key_items"]))
    return kind, pipeline_lib.encode_example(
        hints.prompted_example(example, kind, coach.prompt_options), pipe.processor,
        pipe.texts, pipe.shapes, pipe.step_percent, kind)
  got = hosts.for_rows(batch, hard_rows, coached)
  for i, (kind, _) in zip(hard_rows, got):
    types[i] = kind
  items = [item for _, item in got]
  # The update's layout: P rows, row k holds hard prompt k, the padding rows repeat the first
  # hard prompt with zero weight. When the sampler pads the h hard prompts to P rows as well,
  # it samples from the update's batch (its padding rows are not sampled): one upload.
  h = len(hard_rows)
  p = min(b, buckets.batch_bucket(h, coach.prompted_rows))
  full_host = pipeline_lib.collate([items[k if k < h else 0] for k in range(p)], pipe.shapes,
                                   pipe.pad_id)
  prompted_inputs = sampler.place_pixels(batching.batch_inputs(model_config, full_host.arrays))
  hard_key = jax.random.fold_in(key, PROMPTED_SAMPLING)
  if buckets.batch_bucket(p, sampler.batch_buckets) == buckets.batch_bucket(
      h, sampler.batch_buckets):
    rollouts = sampler.generate(prompted_inputs, sampling, hard_key, state=policy, live_rows=h)
  else:  # the sampler's bucket of h rows differs from P: sample the h rows on their own
    hard_host = pipeline_lib.collate(items, pipe.shapes, pipe.pad_id)
    hard_inputs = batching.batch_inputs(model_config, hard_host.arrays)
    rollouts = sampler.generate(hard_inputs, sampling, hard_key, state=policy)
  t1 = time.perf_counter()
  hard_scored = score(rollouts, full_host.samples[:h], g, coach.reward_options)
  seconds["sampling"] += t1 - t0
  seconds["rewards"] += time.perf_counter() - t1
  live, n = np.arange(h * g), p * g
  rows = _group_rows(hard_rows, g)
  weights = coaching.positive_weights(
      scored.per_reward["ans_acc"][rows], hard_scored.per_reward["ans_acc"], np.ones((h,), bool),
      g, rule=coach.candidate_rule, raw_total=scored.total[rows],
      prompted_total=hard_scored.total, num_positives=coach.num_positives)
  group_adv = np.asarray(advantages_lib.group_advantages(hard_scored.total, g), np.float32)
  prompted = PromptedBranch(
      inputs=prompted_inputs,
      scored=_padded(hard_scored, n), nll_weights=_scatter_rows(weights, live, n),
      group_advantages=_scatter_rows(group_adv, live, n),
      rows=np.asarray(hard_rows + [hard_rows[0]] * (p - h), np.int32), num_hard=h)
  return Rollout(raw=raw, prompted=prompted, prompt_types=types, seconds=seconds)
