"""VisionCoach RL (Algorithm 1), top to bottom.

  run = setup(config, workdir)          # mesh -> model -> data -> sampler -> train state ->
                                        # jitted update per bucket -> checkpoints and metrics
  result = fit(run, steps, resume=...)  # restore -> loop of `step`
  run.export(workdir / "policy")

One step: a raw batch of B prompts -> G rollouts each -> rewards -> group advantages -> hard
prompts get a visual prompt (selector cache, else `raw`) and G prompted rollouts -> positives ->
one jitted, sharded update (GSPO on raw rollouts + alpha * NLL on positives + beta * KL). The
method (`rl.method`: gspo | coach | full, `rl/methods.py`) decides whether hard prompts are
coached and how their rollouts enter the loss. `train(config, workdir, ...)` does all three.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from vcoach_jax import experiment
from vcoach_jax import rewards as rewards_lib
from vcoach_jax import run_length
from vcoach_jax import storage
from vcoach_jax import training_loop
from vcoach_jax.model import hf_checkpoint
from vcoach_jax.rl import hosts
from vcoach_jax.rl import rollout as rollout_lib
from vcoach_jax.rl import train_step
from vcoach_jax.sampling import Sampler, SamplingConfig

PLOT_KEYS = ("reward_total", "reward_format", "reward_ans_acc", "reward_thk_temporal_point",
             "reward_thk_spatial", "frac_hard")


@dataclasses.dataclass
class Run:
  """Everything a VisionCoach run holds; `session` carries the train state and rng."""
  config: ml_collections.ConfigDict
  parts: experiment.Parts  # tokenizer, policy model, mesh, prompt texts
  pipe: Any  # data.pipeline.Pipeline of data.split
  sampler: Sampler
  sampling: SamplingConfig
  coach: rollout_lib.Coaching
  step: train_step.Step  # the jitted update, one program per prompted bucket
  ref: nnx.State  # the frozen reference policy (KL)
  session: training_loop.Session  # train state, rng, checkpointer, metrics writer

  @property
  def writer(self):
    return self.session.writer

  def policy(self) -> nnx.Module:
    """The current policy as a model (parameters are the train state's)."""
    return nnx.merge(self.step.graphdef, self.session.state.params, self.session.state.frozen)

  def policy_state(self) -> nnx.State:
    """The current policy as the sampler wants it (full model state)."""
    return nnx.state(self.policy())

  def export(self, path) -> storage.Path:
    """Writes the current policy in the HF layout with its tokenizer (LoRA merged)."""
    hf_checkpoint.save_hf(self.policy(), path, tokenizer=self.parts.tokenizer)
    return storage.path(path)


def setup(config: ml_collections.ConfigDict, workdir: str, *, seed: int = 0,
          progress: bool = True) -> Run:
  """Builds a run from a config and a work folder (nothing is trained yet)."""
  config = run_length.with_epochs(config, workdir)  # optim.epochs > 0: total_steps counted
  # 1. Mesh, tokenizer, policy (a checkpoint, or a random model of model.preset).
  parts = experiment.build(config, workdir, seed)
  model, mesh = parts.model, parts.mesh
  # 2. Data: the tf.data stream of data.split, host batches of fixed shapes.
  # With several processes each encodes and scores only its slice of every global batch.
  rows = (jax.process_index(), jax.process_count()) if jax.process_count() > 1 else None
  pipe = experiment.pipeline(config, parts.tokenizer, workdir, row_slice=rows)
  # 3. The sampler: G rollouts per prompt in one jitted program per batch bucket.
  sampling = SamplingConfig.from_config(config.sampling)
  sampler = Sampler(model, parts.tokenizer, mesh,
                    batch_buckets=tuple(config.sampling.batch_buckets),
                    prompt_buckets=tuple(config.data.prompt_buckets))
  # 4. Train state and frozen reference, placed on their shardings; 5. the jitted update, one
  # `jax.jit(update, donate_argnums=0, in_shardings=..., out_shardings=...)` per prompted
  # bucket P (and one without a prompted branch).
  step, state, ref = train_step.setup(config, model, mesh)
  prompted_rows = sorted(p for p in step.programs if p is not None)
  coach = rollout_lib.Coaching.from_config(config, prompted_rows or [config.data.batch_size])
  # 6. Checkpoints and metrics; the rng is the seed's key (each step folds its index in).
  session = training_loop.open_session(
      config, workdir, state=state, rng=jax.random.key(seed), pipe=pipe, desc="visioncoach",
      plot_keys=PLOT_KEYS, progress=progress)
  return Run(config, parts, pipe, sampler, sampling, coach, step, ref, session)


def step(run: Run, index: int) -> dict[str, Any]:
  """One VisionCoach step; returns its metrics."""
  s = run.session
  run.pipe.step_percent = (index + 1) / training_loop.total_steps(s)  # of the schedule
  key = jax.random.fold_in(s.rng, index)  # one key per step; phases fold in their own
  # Data.
  t0 = time.perf_counter()
  batch = run.pipe.next_host_batch()
  t_data = time.perf_counter() - t0
  # Sample raw, score, coach the hard prompts (host; the sampler is the device work).
  got = rollout_lib.rollout(batch, sampler=run.sampler, sampling=run.sampling,
                            policy=run.policy_state(), model_config=run.parts.model.config,
                            pipe=run.pipe, coach=run.coach, key=key)
  # Update.
  t1 = time.perf_counter()
  raw, prompted = rollout_batches(got, prompted_gspo=run.step.loss_config.prompted_gspo)
  s.state, update = run.step(s.state, run.ref, raw, prompted,
                             jax.random.fold_in(key, rollout_lib.UPDATE))
  update = jax.device_get(update)
  t_train = time.perf_counter() - t1
  # Metrics.
  out = step_metrics(got, update, run.coach.g)
  out.update(seconds_data=t_data, seconds_sampling=got.seconds["sampling"],
             seconds_rewards=got.seconds["rewards"], seconds_train=t_train)
  total_s = t_data + got.seconds["sampling"] + got.seconds["rewards"] + t_train
  out["tokens_per_second"] = out["completion_tokens"] / max(total_s, 1e-9)
  out["batch_ids"] = hosts.global_ids(batch)
  out["host_rows"] = len(batch.ids)  # the rows this process prepared and scored
  return out


def fit(run: Run, steps: int | None = None, **kw) -> training_loop.LoopResult:
  """Restores (with `resume`) and runs `step` until step `steps` (default: the schedule's end)
  under the shared loop: checkpoints, signals, the non-finite stop. Keywords:
  `training_loop.fit`'s (resume, reschedule)."""
  return training_loop.fit(run.session, functools.partial(step, run), steps, **kw)


def train(config: ml_collections.ConfigDict, workdir: str,
          **kw) -> tuple[Run, training_loop.LoopResult]:
  """`setup` then `fit`: a whole run; returns the run (its final policy) and how it ended.
  Keywords: `training_loop.train`'s (seed, steps, resume, reschedule, progress)."""
  return training_loop.train(setup, step, config, workdir, **kw)


def rollout_batches(got: rollout_lib.Rollout, *, prompted_gspo: bool):
  """(raw, prompted-or-None) `train_step.RolloutBatch`es of a step's rollouts (host arrays;
  the rollouts' tokens, mask and log-probs the sampler's device arrays when it kept them)."""
  r = got.raw.scored.rollouts
  # The sampler's device arrays (kept as sampled, or padded on the devices): no upload back.
  tokens, mask, logprobs = r.placed or (r.tokens, r.mask, r.logprobs)
  raw = train_step.RolloutBatch(prompt=got.raw.inputs, tokens=tokens, mask=mask,
                                old_logprobs=logprobs,
                                advantages=np.asarray(got.raw.advantages, np.float32),
                                weights=None)
  if got.prompted is None:
    return raw, None
  p = got.prompted
  pr = p.scored.rollouts
  tokens, mask, logprobs = pr.placed or (pr.tokens, pr.mask, pr.logprobs)
  prompted = train_step.RolloutBatch(
      prompt=p.inputs, tokens=tokens, mask=mask, old_logprobs=logprobs,
      advantages=p.group_advantages if prompted_gspo else None,
      weights=np.asarray(p.nll_weights, np.float32))
  return raw, prompted


def step_metrics(got: rollout_lib.Rollout, update, g: int) -> dict[str, Any]:
  """Per-step metrics: each reward's mean over raw rollouts, the total, coaching fractions."""
  raw = got.raw.scored
  out = {f"reward_{name}": float(np.mean(raw.per_reward[name]))
         for name in rewards_lib.REWARD_NAMES}
  out["reward_total"] = float(np.mean(raw.total))
  out["frac_hard"] = float(np.mean(got.raw.hard))
  out["frac_candidates"] = 0.0
  if got.prompted is not None:  # the first num_hard prompted rows are the hard prompts
    h = got.prompted.num_hard
    has_pos = got.prompted.nll_weights.reshape(-1, g)[:h].sum(axis=1) > 0
    out["frac_candidates"] = float(has_pos.mean())
    out["prompted_total"] = float(np.mean(got.prompted.scored.total[:h * g]))
  out.update({k: float(v) for k, v in update.items()})
  out["completion_tokens"] = float(raw.rollouts.mask.sum())
  return out
