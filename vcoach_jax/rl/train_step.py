"""The VisionCoach train step (docs/design.md §8.3-8.4, §8.7): one jitted, sharded function of

  (train state, reference params, raw rollout batch, prompted rollout batch, rng)

computing L = L_GSPO(raw rollouts; KL to the reference) + alpha * L_NLL(prompted positives),
with the hard-prompt indicator carried by the positives' weights.

With `rl.prompted_gspo` (the ablation's "coaching without self-distillation" variant, not the
reference) the prompted rollouts of hard prompts also enter a GSPO term as their own groups:
their advantages are normalised within each prompted group (`collect`), the log-probs are taken
under the prompted input, no KL; rows of easy (padding) prompts carry advantage 0, and the term
is averaged over all B*G rows like the raw one (the prompted batch has P <= B rows: its mean is
scaled by P/B), so padding contributes nothing and each prompted group weighs what a raw group
does.

  step, state, ref = setup(config, model, mesh)
  state, metrics = step(state, ref, raw, prompted, rng)

With `rl.mu > 1` the batch's stored `old_logprobs` (sampler or `rollout_logprobs`) define the
ratio and `run_passes` makes mu passes over a list of minibatches; with mu = 1 the ratio is the
reference's stop-gradient form. With `optim.grad_accum = k > 1` the step cuts both batches into
k micro-batches of B/k prompts (`update.split_rows`); `lower` takes them already cut.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from vcoach_jax.model.qwen2_5_vl import ModelInputs
from vcoach_jax.parallel import mesh as mesh_lib
from vcoach_jax.rl import distill, gspo, optim, update
from vcoach_jax.rl.logprobs import completion_logprobs


class RolloutBatch(NamedTuple):
  """G rollouts of each of B prompts, as fixed-shape arrays (rows b*G .. b*G+G-1 = prompt b)."""
  prompt: ModelInputs  # [B] left-padded prompts (vision encoded once per prompt); the prompted
  # batch has P <= B rows (the hard prompts, padded to a power of two)
  tokens: jax.Array  # [B*G, N] int32 completion ids
  mask: jax.Array  # [B*G, N] completion mask (1 up to and including the end token)
  old_logprobs: jax.Array | None  # [B*G, N] sampling-policy log-probs (used when mu > 1)
  advantages: jax.Array | None  # [B*G] group advantages (raw batch; prompted with prompted_gspo)
  weights: jax.Array | None  # [B*G] NLL weights of positives (prompted batch)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """The static constants of the VisionCoach loss (config.rl; G = config.sampling.num_samples)."""
  group_size: int = 4  # G
  eps_low: float = 0.2  # ratio clip band [1 - eps_low, 1 + eps_high]
  eps_high: float = 0.2
  beta: float = 0.04  # k3 KL weight
  alpha: float = 0.1  # self-distillation NLL weight
  use_old_logprobs: bool = False  # mu > 1: ratio against the stored old log-probs
  prompted_gspo: bool = False  # prompted rollouts also enter GSPO as their own groups

  @classmethod
  def from_config(cls, config, group_size: int | None = None) -> LossConfig:
    if group_size is None:
      group_size = config.sampling.num_samples
    r = config.rl
    return cls(group_size=int(group_size), eps_low=r.eps_low, eps_high=r.eps_high, beta=r.beta,
               alpha=r.alpha, use_old_logprobs=r.mu > 1, prompted_gspo=r.prompted_gspo)


def reference_logprobs(ref_model, raw: RolloutBatch, cfg: LossConfig) -> jax.Array | None:
  """[B*G, N] log-probs of the raw rollouts under the frozen reference (None without KL)."""
  if ref_model is None or not cfg.beta:
    return None
  return jax.lax.stop_gradient(
      completion_logprobs(ref_model, raw.prompt, raw.tokens, raw.mask, cfg.group_size))


def visioncoach_loss(model, ref_lp: jax.Array | None, raw: RolloutBatch,
                     prompted: RolloutBatch | None, cfg: LossConfig):
  """(loss, metrics) of one (micro-)batch; `ref_lp` (`reference_logprobs`) None drops the KL."""
  g = cfg.group_size
  lp = completion_logprobs(model, raw.prompt, raw.tokens, raw.mask, g)
  old = raw.old_logprobs if cfg.use_old_logprobs else None
  loss, metrics = gspo.gspo_loss(lp, old, ref_lp, raw.mask, raw.advantages,
                                 eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta=cfg.beta)
  metrics["num_tokens"] = jnp.sum(raw.mask.astype(jnp.float32))
  if prompted is None:
    return loss, dict(metrics, nll=jnp.zeros(()), nll_nonfinite=jnp.zeros(()),
                      num_positives=jnp.zeros(()), gspo_prompted=jnp.zeros(()))
  plp = completion_logprobs(model, prompted.prompt, prompted.tokens, prompted.mask, g)
  metrics["gspo_prompted"] = jnp.zeros(())
  if cfg.prompted_gspo:
    if prompted.advantages is None:
      raise ValueError("rl.prompted_gspo needs the prompted batch's advantages")
    p_old = prompted.old_logprobs if cfg.use_old_logprobs else None
    p_loss, _ = gspo.gspo_loss(plp, p_old, None, prompted.mask, prompted.advantages,
                               eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta=0.0)
    p_loss = p_loss * (prompted.tokens.shape[0] / raw.tokens.shape[0])  # a mean over B*G rows
    loss = loss + p_loss
    metrics["gspo_prompted"] = p_loss
  nll, nll_metrics = distill.nll_loss(plp, prompted.mask, prompted.weights,
                                      num_prompts=raw.prompt.input_ids.shape[0])
  return distill.combine(loss, nll, cfg.alpha), dict(metrics, **nll_metrics)


class VisionCoachStep(update.TrainStep):
  """`step(state, ref_params, raw, prompted, rng) -> (state, metrics)`; `prompted` may be None
  (no hard prompt in the batch: a smaller program without the prompted forward)."""

  def __init__(self, graphdef, cfg: LossConfig, tx, schedule, **kw):
    def prepare_fn(ref_params, batch):
      ref_model = None if ref_params is None else nnx.merge(graphdef, ref_params)
      return reference_logprobs(ref_model, batch[0], cfg)

    def loss_fn(model, ref_lp, batch):
      return visioncoach_loss(model, ref_lp, batch[0], batch[1], cfg)
    super().__init__(graphdef, loss_fn, tx, schedule, prepare_fn=prepare_fn, **kw)
    self.loss_config = cfg

  def __call__(self, state, ref_params, raw, prompted, rng):  # pylint: disable=arguments-renamed
    return super().__call__(state, ref_params, (raw, prompted), rng)

  def lower(self, state, ref_params, raw, prompted, rng):
    """AOT lowering (shape-only arguments work: jax.ShapeDtypeStruct)."""
    return self.jitted(state, ref_params, (raw, prompted)).lower(
        state, ref_params, (raw, prompted), rng)


def reference_params(model: nnx.Module) -> nnx.State:
  """A frozen copy of the policy's full state (the reference policy of the KL term)."""
  return jax.tree.map(jnp.copy, nnx.state(model))


def setup(config, model: nnx.Module, mesh: Mesh | None = None, *, group_size: int | None = None):
  """(VisionCoachStep, TrainState, reference params) for a run config and a built model."""
  rules = mesh_lib.rules_from_config(config.parallel.rules)
  tx = optim.make_optimizer(config.optim)
  ref = reference_params(model)
  graphdef, state = update.init_train_state(model, tx, freeze_vision=config.optim.freeze_vision,
                                            mesh=mesh, rules=rules)
  if mesh is not None:
    ref = jax.device_put(ref, update.state_shardings(ref, mesh, rules))
  step = VisionCoachStep(graphdef, LossConfig.from_config(config, group_size), tx,
                         optim.learning_rate_schedule(config.optim),
                         grad_accum=config.optim.grad_accum, mesh=mesh, rules=rules)
  return step, state, ref


@functools.partial(jax.jit, static_argnums=(0, 4))
def _logprobs(graphdef, params, frozen, batch: RolloutBatch, group_size: int):
  model = nnx.merge(graphdef, params, frozen)
  return completion_logprobs(model, batch.prompt, batch.tokens, batch.mask, group_size)


def rollout_logprobs(step: VisionCoachStep, state: update.TrainState,
                     batch: RolloutBatch) -> jax.Array:
  """[B*G, N] no-grad log-probs of the rollouts under the current policy (old log-probs for
  mu > 1 when the sampler's are not used)."""
  return _logprobs(step.graphdef, state.params, state.frozen, batch, step.loss_config.group_size)


def run_passes(step: VisionCoachStep, state: update.TrainState, ref_params,
               minibatches: Sequence[tuple[RolloutBatch, RolloutBatch | None]], rng, mu: int):
  """mu passes over the minibatches of one rollout batch (GSPO with real clipping: the
  minibatches must carry `old_logprobs` and the step `use_old_logprobs`).

  Returns:
    (state, list of per-update metrics).
  """
  if not step.loss_config.use_old_logprobs:
    raise ValueError("run_passes needs a step built with use_old_logprobs (config rl.mu > 1)")
  history: list[dict[str, Any]] = []
  for epoch in range(mu):
    for i, (raw, prompted) in enumerate(minibatches):
      rng, key = jax.random.split(rng)
      state, metrics = step(state, ref_params, raw, prompted, key)
      history.append(dict(metrics, epoch=epoch, minibatch=i))
  return state, history
