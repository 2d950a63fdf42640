"""The SFT train step: token cross-entropy of the target (assistant turn + `<|im_end|>`) after
the prompt, teacher-forced through the same forward as the RL loss; with `sft.loss_on =
"sequence"` the prompt's text tokens carry loss too (`sft.sequence`).

  step, state = setup(config, model, mesh)                # a jitted update (rl/update.py)
  batch = sft_batch(model.config, host_batch.arrays)     # data.pipeline HostBatch arrays
  state, metrics = step(state, batch, rng)

Aggregation is the mean over all target tokens of the batch; with gradient accumulation each
micro-batch weighs its token count, so the update is the whole batch's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from vcoach_jax.model.batching import batch_inputs
from vcoach_jax.model.config import ModelConfig
from vcoach_jax.model.qwen2_5_vl import ModelInputs
from vcoach_jax.parallel import mesh as mesh_lib
from vcoach_jax.rl import optim, placement, update
from vcoach_jax.rl.logprobs import completion_logprobs
from vcoach_jax.sft import sequence


class SFTBatch(NamedTuple):
  prompt: ModelInputs  # [B] left-padded prompts
  target_ids: jax.Array  # [B, N] int32 target tokens, right-padded
  target_mask: jax.Array  # [B, N] 1 on target tokens (end token included)
  # [B, P] 1 on prompt tokens that also carry loss (sft.loss_on = "sequence"); None: none.
  prompt_mask: jax.Array | None = None
  # [B, N] float weight of each target token's loss (`box_weights`); None: all 1.
  target_weight: jax.Array | None = None


def box_tag_ids(tokenizer) -> tuple[int, int] | None:
  """(id of `<box>`, id of `</box>`) when each is one token of `tokenizer` (the tiny one), else
  None (a tokenizer that splits them: `sft.box_weight` then weighs nothing)."""
  ids = [tokenizer.encode(tag, add_special_tokens=False) for tag in ("<box>", "</box>")]
  if any(len(i) != 1 for i in ids):
    return None
  return ids[0][0], ids[1][0]


def box_weights(target_ids: np.ndarray, box_ids: tuple[int, int] | None,
                weight: float) -> np.ndarray | None:
  """[B, N] float32: `weight` on the tokens strictly between a `<box>` and its `</box>` (the
  coordinates: `box_ids` = (open id, close id)), 1 elsewhere; None when `weight` is 1 or the
  tokenizer has no box tags (`box_ids` None)."""
  if weight == 1.0 or box_ids is None:
    return None
  ids = np.asarray(target_ids)
  opened = np.cumsum(ids == box_ids[0], 1) - np.cumsum(ids == box_ids[1], 1)
  inside = (opened > 0) & (ids != box_ids[0])
  return np.where(inside, np.float32(weight), np.float32(1.0)).astype(np.float32)


def sft_batch(cfg: ModelConfig, arrays: Mapping[str, Any], loss_on: str = "assistant",
              box_ids: tuple[int, int] | None = None, box_weight: float = 1.0) -> SFTBatch:
  """Host: `data.pipeline` HostBatch arrays -> SFTBatch (numpy, fixed shapes); `loss_on` as
  `config.sft.loss_on` (`sft.sequence`); the box coordinates' tokens weigh `box_weight`
  (`box_weights`, `config.sft.box_weight`)."""
  prompt_mask, target_mask = sequence.loss_masks(arrays, cfg, loss_on)
  target_ids = np.asarray(arrays["target_ids"], np.int32)
  return SFTBatch(batch_inputs(cfg, arrays), target_ids, target_mask,
                  prompt_mask if loss_on == "sequence" else None,
                  box_weights(target_ids, box_ids, box_weight))


def sft_loss(model, batch: SFTBatch):
  """(mean token NLL of the covered tokens, each weighted by `target_weight` when set, metrics:
  nll (unweighted), num_tokens)."""
  tw = batch.target_mask.astype(jnp.float32)
  if batch.target_weight is not None:
    tw = tw * batch.target_weight
  if batch.prompt_mask is not None:
    lp = sequence.sequence_logprobs(model, batch.prompt, batch.target_ids, batch.target_mask)
    m = jnp.concatenate([batch.prompt_mask, batch.target_mask], 1)[:, 1:].astype(jnp.float32)
    w = jnp.concatenate([batch.prompt_mask.astype(jnp.float32), tw], 1)[:, 1:]
  else:
    lp = completion_logprobs(model, batch.prompt, batch.target_ids, batch.target_mask, 1)
    m, w = batch.target_mask.astype(jnp.float32), tw
  count = m.sum()
  nll = -jnp.sum(jnp.where(m > 0, lp, 0.0)) / jnp.maximum(count, 1.0)
  if batch.target_weight is None:
    return nll, {"nll": nll, "num_tokens": count}
  loss = -jnp.sum(jnp.where(m > 0, lp * w, 0.0)) / jnp.maximum(w.sum(), 1.0)
  return loss, {"nll": nll, "num_tokens": count}


def batch_shardings(prompts: int, mesh: Mesh, rules, grad_accum: int = 1) -> SFTBatch:
  """Shardings of an `SFTBatch` of `prompts` rows (a prefix of its tree): rows over the `batch`
  rule, vision patches replicated; with `grad_accum = k > 1`, k micro-batches of B/k rows."""
  b, stacked = prompts // grad_accum, grad_accum > 1
  rows = update.rows_sharding(b, 2, mesh, rules, stacked)
  return SFTBatch(update.inputs_shardings(b, mesh, rules, stacked), rows, rows, rows, rows)


@dataclasses.dataclass(frozen=True)
class Step:
  """`step(state, batch, rng) -> (state, metrics)`: the jitted SFT update (`update.Jitted`)."""
  graphdef: Any
  jitted: update.Jitted

  def __call__(self, state, batch: SFTBatch, rng):
    """One update on a host batch whose prompt pixels may be placed already (`rl.placement`)."""
    return self.jitted.fn(state, None, placement.place_batch(self.jitted, batch), rng)


def sft_optim_config(config) -> ml_collections.ConfigDict:
  """`config.optim` with the SFT learning rate, warmup and step count."""
  o = ml_collections.ConfigDict(config.optim.to_dict())
  o.lr, o.total_steps, o.warmup_steps = config.sft.lr, config.sft.steps, config.sft.warmup_steps
  return o


def setup(config, model, mesh: Mesh | None = None):
  """(Step, TrainState) for a run config and a built model: the shared train state and
  optimizer (`sft.lr`, `sft.steps`), the token-mean NLL, one `jax.jit` with donated state and
  stated shardings (B = `data.batch_size` rows)."""
  rules = mesh_lib.rules_from_config(config.parallel.rules)
  o = sft_optim_config(config)
  tx = optim.make_optimizer(o)
  graphdef, state = update.init_train_state(model, tx, freeze_vision=o.freeze_vision, mesh=mesh,
                                            rules=rules)
  fn = update.update_fn(graphdef, lambda model, aux, batch: sft_loss(model, batch), tx,
                        optim.learning_rate_schedule(o), grad_accum=o.grad_accum,
                        weight_by="num_tokens")
  sh = None if mesh is None else batch_shardings(config.data.batch_size, mesh, rules,
                                                 o.grad_accum)
  return Step(graphdef, update.jit_update(fn, grad_accum=o.grad_accum, mesh=mesh, state=state,
                                          batch_shardings=sh, rules=rules)), state
