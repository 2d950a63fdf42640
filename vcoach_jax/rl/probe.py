"""How a policy does on held-out prompts, measured the way the trainer sees it: G sampled
rollouts per prompt, the seven rewards, and the share of prompts that would count as hard.

The demo's before/after table and the ablation's per-reward means come from here; the
benchmark-style metrics (V-STAR, Charades-STA, ...) are `vcoach_jax.evaluation`'s.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from vcoach_jax import rewards as rewards_lib
from vcoach_jax.model import batching
from vcoach_jax.rl import coaching
from vcoach_jax.rl import rollout as rollout_lib

COLUMNS = ("format", "ans_acc", "ans_tiou", "thk_temporal_point", "thk_temporal_segment",
           "thk_spatial", "total", "frac_hard")
HEADERS = {"format": "format", "ans_acc": "accuracy", "ans_tiou": "answer tIoU",
           "thk_temporal_point": "when (pt)", "thk_temporal_segment": "when (seg)",
           "thk_spatial": "where", "total": "total", "frac_hard": "frac hard"}


def probe(sampler, sampling, pipe, *, model_config, num_batches: int, k1: float,
          reward_options: Mapping[str, Any], state=None, seed: int = 0) -> dict[str, float]:
  """Mean rewards of `sampling.num_samples` rollouts per prompt over `num_batches` batches of
  `pipe`, plus the fraction of prompts whose mean total is below k1.

  Args:
    sampler: a `sampling.Sampler`; `state` (an nnx.State) replaces its model's weights.
    sampling: the `SamplingConfig` (G = num_samples).
    pipe: a data stream (`data.pipeline.Pipeline`), usually the eval split.
    model_config: the policy's ModelConfig.
    num_batches: batches to draw.
    k1: the hardness threshold.
    reward_options: `config.rewards` options.
    state: policy weights to probe (default: the sampler's model).
    seed: sampling seed.
  """
  g = sampling.num_samples
  rng = jax.random.key(seed)
  per: dict[str, list[np.ndarray]] = {name: [] for name in rewards_lib.REWARD_NAMES}
  totals, hard = [], []
  for _ in range(num_batches):
    batch = pipe.next_host_batch()
    rng, key = jax.random.split(rng)
    rollouts = sampler.generate(batching.batch_inputs(model_config, batch.arrays), sampling, key,
                                state=state)
    scored = rollout_lib.score(rollouts, batch.samples, g, reward_options)
    for name in per:
      per[name].append(scored.per_reward[name])
    totals.append(scored.total)
    hard.append(coaching.hard_prompts(scored.total, g, k1))
  out = {name: float(np.concatenate(v).mean()) for name, v in per.items()}
  out["total"] = float(np.concatenate(totals).mean())
  out["frac_hard"] = float(np.concatenate(hard).mean())
  return out


def table(rows: Mapping[str, Mapping[str, float]], columns=COLUMNS) -> str:
  """A fixed-width table: one row per (label -> probe result)."""
  width = max(len(label) for label in rows) + 2
  head = "".join(f"{HEADERS.get(c, c):>12}" for c in columns)
  lines = [f"{'':<{width}}{head}"]
  for label, values in rows.items():
    lines.append(f"{label:<{width}}" + "".join(f"{values[c]:>12.3f}" for c in columns))
  return "\n".join(lines)
