"""The VisionCoach update (docs/design.md §8.3-8.4, §8.7): the loss and the jitted, sharded
programs of

  (train state, reference params, StepBatch(raw, prompted), rng) -> (train state, metrics)

computing L = L_GSPO(raw rollouts; KL to the reference) + alpha * L_NLL(prompted positives),
with the hard-prompt indicator carried by the positives' weights.

The method (`rl.method`, `rl/methods.py`) sets the loss's constants: `full` as above; `coach`
(the ablation's "coaching without self-distillation", not the reference) drops the NLL and puts
the prompted rollouts of hard prompts into a GSPO term as their own groups: their advantages are
normalised within each prompted group (`rollout`), the log-probs are taken under the prompted
input, no KL; rows of padding prompts carry advantage 0, and the term is averaged over all B*G
rows like the raw one (the prompted batch has P <= B rows: its mean is scaled by P/B), so
padding contributes nothing and each prompted group weighs what a raw group does; `gspo` has no
prompted branch.

  step, state, ref = setup(config, model, mesh)
  state, metrics = step(state, ref, raw, prompted, rng)     # host RolloutBatches

`step.programs` holds one `jax.jit` of the pure update per prompted row count P (None: no hard
prompt, a smaller program without the prompted forward), each with the shardings of its
arguments stated. With `rl.mu > 1` the batch's stored `old_logprobs` (sampler or
`rollout_logprobs`) define the ratio and `run_passes` makes mu passes over a list of
minibatches; with mu = 1 the ratio is the reference's stop-gradient form. With
`optim.grad_accum = k > 1` the step cuts both batches into k micro-batches (`update.split_rows`)
and runs the prompts of all of them in one forward, once per step (`rl/prompt_once.py`);
`lower` takes them already cut.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from vcoach_jax.model.qwen2_5_vl import ModelInputs
from vcoach_jax.parallel import mesh as mesh_lib
from vcoach_jax.rl import distill, gspo, methods, optim, prompt_once, update
from vcoach_jax.rl import placement
from vcoach_jax.sampling import buckets
from vcoach_jax.rl.logprobs import completion_logprobs, states_logprobs


class RolloutBatch(NamedTuple):
  """G rollouts of each of B prompts, as fixed-shape arrays (rows b*G .. b*G+G-1 = prompt b)."""
  prompt: ModelInputs  # [B] left-padded prompts (vision encoded once per prompt); the prompted
  # batch has P <= B rows (the hard prompts, padded to a power of two)
  tokens: jax.Array  # [B*G, N] int32 completion ids
  mask: jax.Array  # [B*G, N] completion mask (1 up to and including the end token)
  old_logprobs: jax.Array | None  # [B*G, N] sampling-policy log-probs (used when mu > 1)
  advantages: jax.Array | None  # [B*G] group advantages (raw batch; prompted: method coach)
  weights: jax.Array | None  # [B*G] NLL weights of positives (prompted batch)


class StepBatch(NamedTuple):
  """What one update consumes: the raw rollouts and, when some prompt was hard, the prompted
  ones (P rows, the hard prompts padded to a bucket)."""
  raw: RolloutBatch
  prompted: RolloutBatch | None


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
    """The loss of `config.rl.method`: alpha is `rl.alpha` when the method distills, else 0."""
    if group_size is None:
      group_size = config.sampling.num_samples
    r, method = config.rl, methods.get(config.rl.method)
    return cls(group_size=int(group_size), eps_low=r.eps_low, eps_high=r.eps_high, beta=r.beta,
               alpha=r.alpha if method.distill else 0.0, use_old_logprobs=r.mu > 1,
               prompted_gspo=method.prompted_gspo)


def reference_logprobs(ref_model, raw: RolloutBatch, cfg: LossConfig) -> jax.Array | None:
  """[B*G, N] log-probs of the raw rollouts under the frozen reference (None without KL)."""
  if ref_model is None or not cfg.beta:
    return None
  return jax.lax.stop_gradient(
      completion_logprobs(ref_model, raw.prompt, raw.tokens, raw.mask, cfg.group_size))


def visioncoach_loss(model, ref_lp: jax.Array | None, raw: RolloutBatch,
                     prompted: RolloutBatch | None, cfg: LossConfig,
                     states: prompt_once.StepStates | None = None):
  """(loss, metrics) of one (micro-)batch; `ref_lp` (`reference_logprobs`) None drops the KL;
  `states`: the prompts' forward already run (`rl.prompt_once`)."""
  g = cfg.group_size

  def logprobs(batch: RolloutBatch, prompt_states):
    if prompt_states is None:
      return completion_logprobs(model, batch.prompt, batch.tokens, batch.mask, g)
    return states_logprobs(model, batch.prompt, prompt_states, batch.tokens, batch.mask, g)
  lp = logprobs(raw, states and states.raw)
  old = raw.old_logprobs if cfg.use_old_logprobs else None
  loss, metrics = gspo.gspo_loss(lp, old, ref_lp, raw.mask, raw.advantages,
                                 eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta=cfg.beta)
  metrics["num_tokens"] = jnp.sum(raw.mask.astype(jnp.float32))
  if prompted is None:
    return loss, dict(metrics, nll=jnp.zeros(()), nll_nonfinite=jnp.zeros(()),
                      num_positives=jnp.zeros(()), gspo_prompted=jnp.zeros(()))
  plp = logprobs(prompted, states and states.prompted)
  metrics["gspo_prompted"] = jnp.zeros(())
  if cfg.prompted_gspo:
    if prompted.advantages is None:
      raise ValueError("method coach (prompted GSPO) needs the prompted batch's advantages")
    p_old = prompted.old_logprobs if cfg.use_old_logprobs else None
    p_loss, _ = gspo.gspo_loss(plp, p_old, None, prompted.mask, prompted.advantages,
                               eps_low=cfg.eps_low, eps_high=cfg.eps_high, beta=0.0)
    p_loss = p_loss * (prompted.tokens.shape[0] / raw.tokens.shape[0])  # a mean over B*G rows
    loss = loss + p_loss
    metrics["gspo_prompted"] = p_loss
  nll, nll_metrics = distill.nll_loss(plp, prompted.mask, prompted.weights,
                                      num_prompts=raw.prompt.input_ids.shape[0])
  return distill.combine(loss, nll, cfg.alpha), dict(metrics, **nll_metrics)


def update_fn(graphdef, cfg: LossConfig, tx, schedule, grad_accum: int = 1,
              shared_prompts: bool = True) -> Callable:
  """The pure update `(state, ref_params, StepBatch, rng) -> (state, metrics)` of the
  VisionCoach loss (`update.update_fn`); the reference log-probs are computed outside the
  differentiated function. With `grad_accum > 1` and `shared_prompts` (`optim.prompt_once`) the
  prompts of all micro-batches run once, in one forward (`rl.prompt_once`); else each
  micro-batch runs its own prompts (the same update, less memory)."""
  def reference(ref_params, batch: StepBatch | update.Shared):
    ref_model = None if ref_params is None else nnx.merge(graphdef, ref_params)
    if isinstance(batch, update.Shared):
      return prompt_once.reference_logprobs(ref_model, batch.batch.raw, batch.const,
                                            cfg.group_size)
    return reference_logprobs(ref_model, batch.raw, cfg)

  def loss(model, ref_lp, batch: StepBatch | update.Shared):
    if isinstance(batch, update.Shared):
      return visioncoach_loss(model, ref_lp, batch.batch.raw, batch.batch.prompted, cfg,
                              batch.shared)
    return visioncoach_loss(model, ref_lp, batch.raw, batch.prompted, cfg)
  return update.update_fn(graphdef, loss, tx, schedule, grad_accum=grad_accum,
                          prepare_fn=reference,
                          shared_fn=prompt_once.shared_fn(graphdef, grad_accum, bool(cfg.beta))
                          if shared_prompts else None)


def prompted_row_counts(prompts: int, row_buckets: Sequence[int], grad_accum: int = 1
                        ) -> tuple[int, ...]:
  """The row counts P a prompted batch of a B-prompt step can have: the smallest bucket >= the
  number of hard prompts, at most B; buckets that do not split into `grad_accum` micro-batches
  are skipped."""
  usable = [x for x in row_buckets if x % grad_accum == 0] or [prompts]
  return tuple(sorted({min(prompts, buckets.batch_bucket(h, usable))
                       for h in range(1, prompts + 1)}))


def batch_shardings(prompts: int, prompted: int | None, g: int, mesh: Mesh, rules,
                    grad_accum: int = 1) -> StepBatch:
  """Shardings of a `StepBatch` of B = `prompts` raw and P = `prompted` prompted prompts (G
  rollouts each), as a prefix of its tree: every array's rows over the `batch` rule, vision
  patches replicated; with `grad_accum = k > 1` the arrays carry k micro-batches of B/k rows."""
  stacked, k = grad_accum > 1, grad_accum

  def one(b: int) -> RolloutBatch:
    rows = lambda ndim: update.rows_sharding(b // k * g, ndim, mesh, rules, stacked)  # noqa
    return RolloutBatch(update.inputs_shardings(b // k, mesh, rules, stacked), tokens=rows(2),
                        mask=rows(2), old_logprobs=rows(2), advantages=rows(1), weights=rows(1))
  return StepBatch(one(prompts), None if prompted is None else one(prompted))


@dataclasses.dataclass(frozen=True)
class Step:
  """The RL update of a run: the pure function and its jitted programs, one per prompted row
  count P (None: no prompted branch), each with the shardings its batch is placed on."""
  graphdef: Any
  loss_config: LossConfig
  update: Callable  # (state, ref_params, StepBatch, rng) -> (state, metrics)
  programs: Mapping[int | None, update.Jitted]
  grad_accum: int = 1

  def program(self, prompted: RolloutBatch | None, stacked: bool = False) -> update.Jitted:
    p = None if prompted is None else prompted.prompt.input_ids.shape[-2] * (
        self.grad_accum if stacked else 1)
    if p not in self.programs:
      raise ValueError(f"a prompted batch of {p} prompts: this run's update has programs for "
                       f"{sorted(k for k in self.programs if k)} (data.batch_size and "
                       "sampling.batch_buckets) and none without coaching: rl.method")
    return self.programs[p]

  def __call__(self, state, ref_params, raw: RolloutBatch, prompted: RolloutBatch | None, rng):
    """One update on host batches whose prompt pixels may be placed already (`placement`)."""
    program = self.program(prompted)
    return program.fn(state, ref_params, placement.place_batch(program, StepBatch(raw, prompted)),
                      rng)

  def lower(self, state, ref_params, raw, prompted, rng):
    """AOT lowering of the program for these (already cut) batches; shape-only arguments work
    (jax.ShapeDtypeStruct)."""
    return self.program(prompted, stacked=self.grad_accum > 1).fn.lower(
        state, ref_params, StepBatch(raw, prompted), rng)


def make_step(config, graphdef, tx, *, state=None, ref=None, mesh: Mesh | None = None,
              group_size: int | None = None, prompts: int | None = None) -> Step:
  """The `Step` of a run config: `jax.jit(update, donate_argnums=0)` per prompted row count,
  with in/out shardings stated when a mesh is given (`state` and `ref`, possibly abstract, give
  the train state's and reference's). `prompts`: B (default `data.batch_size`)."""
  k = config.optim.grad_accum
  cfg = LossConfig.from_config(config, group_size)
  update_ = update_fn(graphdef, cfg, tx, optim.learning_rate_schedule(config.optim), k,
                      config.optim.get("prompt_once", True))
  b = int(prompts or config.data.batch_size)
  counts = (None,)
  if methods.get(config.rl.method).coach:
    counts += prompted_row_counts(b, tuple(config.sampling.batch_buckets), k)
  if mesh is None:
    program = update.jit_update(update_, grad_accum=k)  # one jit: jax compiles per shape
    return Step(graphdef, cfg, update_, {p: program for p in counts}, k)
  rules = mesh_lib.rules_from_config(config.parallel.rules)
  programs = {p: update.jit_update(
      update_, grad_accum=k, mesh=mesh, state=state, aux=ref, rules=rules,
      batch_shardings=batch_shardings(b, p, cfg.group_size, mesh, rules, k)) for p in counts}
  return Step(graphdef, cfg, update_, programs, k)


def reference_params(model: nnx.Module) -> nnx.State:
  """A frozen copy of the policy's full state (the reference policy of the KL term)."""
  return jax.tree.map(jnp.copy, nnx.state(model))


def setup(config, model: nnx.Module, mesh: Mesh | None = None, *, group_size: int | None = None):
  """(Step, TrainState, reference params) for a run config and a built model, placed on the
  mesh's shardings when one is given."""
  rules = mesh_lib.rules_from_config(config.parallel.rules)
  tx = optim.make_optimizer(config.optim)
  ref = reference_params(model)
  graphdef, state = update.init_train_state(model, tx, freeze_vision=config.optim.freeze_vision,
                                            mesh=mesh, rules=rules)
  if mesh is not None:
    ref = jax.device_put(ref, mesh_lib.state_shardings(ref, mesh, rules))
  step = make_step(config, graphdef, tx, state=state, ref=ref, mesh=mesh, group_size=group_size)
  return step, state, ref


@functools.partial(jax.jit, static_argnums=(0, 4))
def _logprobs(graphdef, params, frozen, batch: RolloutBatch, group_size: int):
  model = nnx.merge(graphdef, params, frozen)
  return completion_logprobs(model, batch.prompt, batch.tokens, batch.mask, group_size)


def rollout_logprobs(step: Step, state: update.TrainState,
                     batch: RolloutBatch) -> jax.Array:
  """[B*G, N] no-grad log-probs of the rollouts under the current policy (old log-probs for
  mu > 1 when the sampler's are not used)."""
  return _logprobs(step.graphdef, state.params, state.frozen, batch, step.loss_config.group_size)


def run_passes(step: Step, state: update.TrainState, ref_params,
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
