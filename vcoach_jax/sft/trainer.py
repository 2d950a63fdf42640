"""Cold-start SFT (docs/design.md §8.8): the grounded traces of the data stream, token cross-entropy on
the assistant turn, the same sharded update, checkpoints and metrics as the RL trainer.

  trainer = SFTTrainer(config, workdir)
  trainer.run(config.sft.steps, resume=True)
  trainer.export(workdir / "policy")      # HF layout + tokenizer: the RL run's starting point
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from flax import nnx

from vcoach_jax import checkpointing
from vcoach_jax import experiment
from vcoach_jax import storage
from vcoach_jax import metrics_writer
from vcoach_jax import training_loop
from vcoach_jax.model import hf_checkpoint
from vcoach_jax.sft import step as sft_step


class SFTTrainer(training_loop.Runner):
  """Builds the policy, the data stream and the SFT step from a config and a work folder."""

  desc = "sft"
  schedule_key = "sft.steps"
  plot_keys = ("nll",)

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, seed: int = 0,
               progress: bool = True):
    self.config, self.workdir, self.progress = config, storage.path(workdir), progress
    self.parts = experiment.build(config, workdir, seed)
    self.step_fn, self.state = sft_step.setup(config, self.parts.model, self.parts.mesh)
    self.pipe = experiment.pipeline(config, self.parts.tokenizer, workdir)
    self.pipe.texts = self.pipe.texts.for_sft()  # the SFT's texts and key-frame rules
    self.rng = jax.random.key(seed)
    self.ckpt = checkpointing.Checkpointer(training_loop.checkpoint_dir(config, workdir),
                                           keep=config.checkpoint.keep)
    self.writer = metrics_writer.MetricsWriter(self.workdir / "metrics")

  def step(self, step: int) -> dict[str, Any]:
    del step
    batch = self.pipe.next_host_batch()
    self.rng, key = jax.random.split(self.rng)
    self.state, metrics = self.step_fn(
        self.state, sft_step.sft_batch(self.parts.model.config, batch.arrays,
                                       self.config.sft.loss_on), key)
    out = {k: float(v) for k, v in jax.device_get(metrics).items()}
    out["batch_ids"] = batch.ids
    return out

  def policy(self):
    """The current policy as a model (parameters are the train state's)."""
    return nnx.merge(self.step_fn.graphdef, self.state.params, self.state.frozen)

  def export(self, path: storage.PathLike) -> storage.Path:
    """Writes the policy in the HF layout with its tokenizer (LoRA merged)."""
    hf_checkpoint.save_hf(self.policy(), path, tokenizer=self.parts.tokenizer)
    return storage.path(path)
