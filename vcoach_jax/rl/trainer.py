"""VisionCoach RL (Algorithm 1): the policy, its frozen reference, the sampler and the data
stream, stepped by `training_loop.run`.

One step: a raw batch of B prompts -> G rollouts each -> rewards -> group advantages -> hard
prompts get a visual prompt (selector cache, else `raw`) and G prompted rollouts -> positives ->
one jitted, sharded update (GSPO on raw rollouts + alpha * NLL on positives + beta * KL).
Variants for the ablation: `coach=False` is plain GSPO; `distill=False` keeps the prompted
rollouts but gives the NLL zero weight (which alone changes nothing: combine it with
`rl.prompted_gspo`, as `vcoach ablate` does, for the prompted rollouts to enter GSPO).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from vcoach_jax import checkpointing
from vcoach_jax import config as config_lib
from vcoach_jax import experiment
from vcoach_jax import storage
from vcoach_jax import metrics_writer
from vcoach_jax import rewards as rewards_lib
from vcoach_jax import run_length
from vcoach_jax import training_loop
from vcoach_jax.data import pipeline as pipeline_lib
from vcoach_jax.model import hf_checkpoint
from vcoach_jax.prompting import hints
from vcoach_jax.prompting import selector as selector_lib
from vcoach_jax.rl import collect as collect_lib
from vcoach_jax.rl import train_step
from vcoach_jax.sampling import Sampler, SamplingConfig


def rollout_batch(inputs, scored: collect_lib.Scored, advantages=None, weights=None):
  """A `train_step.RolloutBatch` from host arrays."""
  r = scored.rollouts
  return train_step.RolloutBatch(
      prompt=inputs, tokens=jnp.asarray(r.tokens), mask=jnp.asarray(r.mask),
      old_logprobs=jnp.asarray(r.logprobs),
      advantages=None if advantages is None else jnp.asarray(advantages, jnp.float32),
      weights=None if weights is None else jnp.asarray(weights, jnp.float32))


def step_metrics(c: collect_lib.Collected, update: Mapping[str, Any], g: int) -> dict[str, Any]:
  """Per-step metrics: each reward's mean over raw rollouts, the total, coaching fractions."""
  out = {f"reward_{name}": float(np.mean(c.raw.per_reward[name]))
         for name in rewards_lib.REWARD_NAMES}
  out["reward_total"] = float(np.mean(c.raw.total))
  out["frac_hard"] = float(np.mean(c.hard))
  out["frac_candidates"] = 0.0
  if c.prompted is not None:  # the first num_hard prompted rows are the hard prompts
    has_pos = c.weights.reshape(-1, g)[:c.num_hard].sum(axis=1) > 0
    out["frac_candidates"] = float(has_pos.mean())
    out["prompted_total"] = float(np.mean(c.prompted.total[:c.num_hard * g]))
  out.update({k: float(v) for k, v in update.items()})
  out["completion_tokens"] = float(c.raw.rollouts.mask.sum())
  return out


class Trainer(training_loop.Runner):
  """Builds everything a VisionCoach run needs from a config and a work folder."""

  desc = "visioncoach"
  plot_keys = ("reward_total", "reward_format", "reward_ans_acc", "reward_thk_temporal_point",
               "reward_thk_spatial", "frac_hard")

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, seed: int = 0,
               coach: bool = True, distill: bool = True, progress: bool = True):
    if not distill:
      config = config_lib.with_overrides(config, ["rl.alpha=0.0"])
    config = run_length.with_epochs(config, workdir)  # optim.epochs > 0: total_steps counted
    self.config, self.workdir = config, storage.path(workdir)
    self.coach, self.progress = coach, progress
    self.parts = experiment.build(config, workdir, seed)
    tok = self.parts.tokenizer
    self.sampling = SamplingConfig.from_config(config.sampling)
    self.g = self.sampling.num_samples
    self.sampler = Sampler(self.parts.model, tok, self.parts.mesh,
                           batch_buckets=tuple(config.sampling.batch_buckets))
    self.step_fn, self.state, self.ref = train_step.setup(config, self.parts.model,
                                                          self.parts.mesh)
    self.pipe = experiment.pipeline(config, tok, workdir)
    self.prompt_options = hints.PromptOptions.from_config(config.prompting,
                                                             config.video.timestamps)
    self.cache: dict[str, str] = {}
    if config.rl.prompt_selector == "cache" and config.selector.cache:
      self.cache = selector_lib.load_cache(config.selector.cache)
    self.rng = jax.random.key(seed)
    self.ckpt = checkpointing.Checkpointer(training_loop.checkpoint_dir(config, workdir),
                                           keep=config.checkpoint.keep)
    self.writer = metrics_writer.MetricsWriter(self.workdir / "metrics")

  # ----------------------------------------------------------------------------------------------
  def policy_state(self) -> nnx.State:
    """The current policy as the sampler wants it (full model state)."""
    model = nnx.merge(self.step_fn.graphdef, self.state.params, self.state.frozen)
    return nnx.state(model)

  def _encode(self, example, prompt_type: str):
    drawn = hints.prompted_example(example, prompt_type, self.prompt_options)
    return pipeline_lib.encode_example(drawn, self.pipe.processor, self.pipe.texts,
                                       self.pipe.shapes, self.pipe.step_percent, prompt_type)

  def _prompt_type(self, example) -> str:
    record = pipeline_lib.record_of(example)
    return selector_lib.choose(self.cache, record["id"], bool(record["key_items"]))

  def step(self, step: int) -> dict[str, Any]:
    """One VisionCoach step; returns its metrics."""
    c = self.config
    self.pipe.step_percent = (step + 1) / self.total_steps()  # of the schedule, not this stop
    t0 = time.perf_counter()
    batch = self.pipe.next_host_batch()
    t_data = time.perf_counter() - t0
    self.rng, k_raw, k_prompted, k_step = jax.random.split(self.rng, 4)
    keys = iter([k_raw, k_prompted])
    policy = self.policy_state()
    sample = lambda inputs: self.sampler.generate(  # noqa: E731
        inputs, self.sampling, next(keys), state=policy)
    got = collect_lib.collect(
        batch, model_config=self.parts.model.config, sample=sample, encode=self._encode,
        prompt_type=self._prompt_type, shapes=self.pipe.shapes, pad_id=self.pipe.pad_id, g=self.g,
        k1=c.rl.k1, k1_per_task=dict(c.rl.k1_per_task), candidate_rule=c.rl.candidate_rule,
        num_positives=c.rl.num_positives, reward_options=config_lib.reward_options(c),
        coach=self.coach, row_buckets=tuple(c.sampling.batch_buckets))
    t1 = time.perf_counter()
    raw = rollout_batch(got.raw_inputs, got.raw, advantages=got.advantages)
    prompted = None
    if got.prompted is not None:
      p_adv = got.prompted_advantages if c.rl.prompted_gspo else None
      prompted = rollout_batch(got.prompted_inputs, got.prompted, advantages=p_adv,
                               weights=got.weights)
    self.state, update = self.step_fn(self.state, self.ref, raw, prompted, k_step)
    update = jax.device_get(update)
    t_train = time.perf_counter() - t1
    out = step_metrics(got, update, self.g)
    out.update(seconds_data=t_data, seconds_sampling=got.seconds["sampling"],
               seconds_rewards=got.seconds["rewards"], seconds_train=t_train)
    total_s = t_data + got.seconds["sampling"] + got.seconds["rewards"] + t_train
    out["tokens_per_second"] = out["completion_tokens"] / max(total_s, 1e-9)
    out["batch_ids"] = batch.ids
    return out

  def export(self, path) -> storage.Path:
    """Writes the current policy in the HF layout with its tokenizer (LoRA merged)."""
    model = nnx.merge(self.step_fn.graphdef, self.state.params, self.state.frozen)
    hf_checkpoint.save_hf(model, path, tokenizer=self.parts.tokenizer)
    return storage.path(path)
