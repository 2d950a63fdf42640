"""The optimizer of docs/design.md §8.7: AdamW (0.9/0.999, eps 1e-8), cosine decay to 0 (optional
linear warmup), weight decay 0.01 not on biases and norm scales, global-norm clip 5.

Master weights are whatever the train state holds (fp32; `train_step.init_train_state` upcasts);
the compute dtype is the model's `dtype`, so bf16 compute with fp32 master weights is a model
built with `dtype=bfloat16, param_dtype=float32` (or any model: the state is upcast).
"""

from __future__ import annotations

from typing import Any

import jax
import optax


def _cosine(lr: float, warmup: int, total: int) -> optax.Schedule:
  """Cosine decay from lr to 0 at `total` (after a linear warmup from 0, if any)."""
  if warmup:
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total, warmup + 1), 0.0)
  return optax.cosine_decay_schedule(lr, max(total, 1), alpha=0.0)


def _constant(lr: float, warmup: int, total: int) -> optax.Schedule:
  """lr throughout (after a linear warmup from 0, if any)."""
  del total
  if warmup:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
  return optax.constant_schedule(lr)


# Learning-rate schedules (`config.optim.schedule`): name -> fn(lr, warmup_steps, total_steps).
SCHEDULES = {"cosine": _cosine, "constant": _constant}


def learning_rate_schedule(optim: Any) -> optax.Schedule:
  """lr(step) from `config.optim` (lr, schedule, warmup_steps, total_steps)."""
  if optim.schedule not in SCHEDULES:
    raise ValueError(f"config key 'optim.schedule' must be one of {tuple(SCHEDULES)}, got "
                     f"{optim.schedule!r}")
  return SCHEDULES[optim.schedule](float(optim.lr), int(optim.warmup_steps),
                                   int(optim.total_steps))


def decay_mask(params) -> Any:
  """True for tensors that get weight decay: kernels, embeddings, LoRA factors; not biases and
  norm scales (named `bias` / `weight`), whatever their rank (stacked layers add an axis)."""
  def decays(path, x) -> bool:
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return x.ndim >= 2 and not (names and names[-1] in ("bias", "weight"))
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim: Any) -> optax.GradientTransformation:
  """clip_by_global_norm(clip_norm) -> AdamW(schedule) with the decay mask."""
  return optax.chain(
      optax.clip_by_global_norm(float(optim.clip_norm)),
      optax.adamw(learning_rate_schedule(optim), b1=float(optim.b1), b2=float(optim.b2),
                  eps=float(optim.eps), weight_decay=float(optim.weight_decay), mask=decay_mask),
  )
