"""Rollout sampling: jitted prefill + KV-cache decode loop with per-token log-probs (docs/design.md §8.1).

  sampler = Sampler(model, tokenizer, mesh)
  rollouts = sampler.generate(inputs, SamplingConfig.from_config(config.sampling), rng)
"""

from vcoach_jax.sampling.sampler import Rollouts, Sampler, SamplingConfig

__all__ = ["Rollouts", "Sampler", "SamplingConfig"]
