"""Cold-start SFT (docs/design.md §8.8): the grounded traces of the data stream, token cross-entropy on
the assistant turn, the same sharded update, checkpoints and metrics as the RL trainer.

With `sft.prompted` > 0 that share of the examples with key items is shown as coaching shows a
hard sample (`prompted_type`): a visual prompt of one of the selector's types drawn on its key
frames and that type's hint after the question, with the same target. The policy then knows
what a drawn prompt means when RL first shows it one.

  trainer = SFTTrainer(config, workdir)
  trainer.run(config.sft.steps, resume=True)
  trainer.export(workdir / "policy")      # HF layout + tokenizer: the RL run's starting point
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import jax
import ml_collections
from flax import nnx

from vcoach_jax import checkpointing
from vcoach_jax import experiment
from vcoach_jax import storage
from vcoach_jax import metrics_writer
from vcoach_jax import training_loop
from vcoach_jax.data import pipeline as pipeline_lib
from vcoach_jax.model import hf_checkpoint
from vcoach_jax.prompting import hints
from vcoach_jax.sft import step as sft_step


def prompted_type(record_id: str, step: int, share: float, types: Sequence[str]) -> str | None:
  """The prompt type an SFT example is shown with at `step` (None: raw): a share `share` of the
  (id, step) pairs, picked by a hash (the same on every run and after a resume), each with one
  of `types` in turn."""
  if share <= 0 or not types:
    return None
  h = zlib.crc32(f"{record_id}:{step}".encode())
  if (h % 10_000) >= share * 10_000:
    return None
  return types[(h // 10_000) % len(types)]


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
    self.prompt_options = hints.PromptOptions.from_config(config.prompting,
                                                             config.video.timestamps)
    self.prompt_types = tuple(t for t in config.selector.types if t != "raw")
    self.rng = jax.random.key(seed)
    self.ckpt = checkpointing.Checkpointer(training_loop.checkpoint_dir(config, workdir),
                                           keep=config.checkpoint.keep)
    self.writer = metrics_writer.MetricsWriter(self.workdir / "metrics")

  def _encoder(self, step: int):
    """The pipeline's encoder at `step`: some examples with key items get a visual prompt."""
    pipe = self.pipe

    def encode(example):
      record = pipeline_lib.record_of(example)
      kind = (prompted_type(record["id"], step, self.config.sft.prompted, self.prompt_types)
              if record["key_items"] else None)
      if kind is not None:
        example = hints.prompted_example(example, kind, self.prompt_options)
      return pipeline_lib.encode_example(example, pipe.processor, pipe.texts, pipe.shapes,
                                         pipe.step_percent, kind)
    return encode

  def step(self, step: int) -> dict[str, Any]:
    self.pipe.encode_hook = self._encoder(step) if self.config.sft.prompted > 0 else None
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
