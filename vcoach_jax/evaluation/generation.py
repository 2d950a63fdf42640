"""Eval requests -> greedy completions through the sampler: the `generate_fn` of `vcoach eval`.

  gen = SamplerGenerate.from_config(config, workdir)
  texts = gen(requests)                 # one completion per request, in order
  grades = gen.generate_texts(chats)    # plain chat texts (a judge model's prompts)

Each call runs, per chunk of `batch_size` prompts: `PromptBuilder` (raw video, no visual prompt,
no hint) -> `chat.Processor` -> the input pipeline's `collate` (left-padded ids in a prompt
bucket, pixels in `[B, max_patches, D]`) -> `batching.batch_inputs` -> `Sampler.generate`. The
patch and image capacities are the config's `data.max_patches` / `data.max_images`, grown to the
next power of two when a benchmark's frames need more, so a run compiles a handful of programs.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import numpy as np

from vcoach_jax.data import chat
from vcoach_jax.data import pipeline as pipeline_lib
from vcoach_jax.data import tokenizer as tokenizer_lib
from vcoach_jax.evaluation.items import Request
from vcoach_jax.evaluation.prompting import PromptBuilder
from vcoach_jax.model import batching
from vcoach_jax.shapes import pow2

JUDGE_MAX_NEW_TOKENS = 10  # a judge replies with one digit (the released judge's limit)


class SamplerGenerate:
  """Greedy (or `sampling`) completions of eval requests, `batch_size` prompts per sampler call.

  Args:
    sampler: a `sampling.Sampler` (its model, tokenizer and mesh are used).
    sampling: the `SamplingConfig` (eval: greedy, one sample).
    shapes: the fixed host-batch shapes (`BatchShapes.from_config(config.data)`).
    builder: requests -> chat prompts (None: only `generate_texts` is usable).
    batch_size: prompts per `Sampler.generate` call.
    seed: PRNG seed (only matters when not greedy).
    state: policy weights (`nnx.State`) to use instead of the sampler model's own (a trainer's
      current parameters).
  """

  def __init__(self, sampler, sampling, shapes: pipeline_lib.BatchShapes,
               builder: PromptBuilder | None = None, *, batch_size: int = 8, seed: int = 0,
               state=None):
    import jax  # pylint: disable=g-import-not-at-top
    if batch_size < 1:
      raise ValueError(f"eval.batch_size must be >= 1, got {batch_size}")
    self.sampler, self.sampling, self.shapes, self.builder = sampler, sampling, shapes, builder
    self.batch_size, self.state = batch_size, state
    self.processor = chat.Processor(sampler.tokenizer)
    self.rng = jax.random.key(seed)
    self.calls = 0  # Sampler.generate calls so far
    self.sampler_seconds = 0.0  # wall time inside Sampler.generate so far

  @classmethod
  def from_config(cls, config, workdir: str, *, world: Any = None,
                  max_new_tokens: int | None = None, protocol=None) -> "SamplerGenerate":
    """The model of `config.model` (checkpoint via `load_hf` and its tokenizer; the embedded
    default's random model when there is none, see `experiment.build`) behind a sampler.

    Args:
      config: the run config; `eval.batch_size`, `sampling.*`, `data.*` shapes are used.
      workdir: where `experiment.build` keeps a tiny tokenizer / initial model it makes.
      world: the `synthetic.SyntheticWorld` of synthetic items (None: real videos only).
      max_new_tokens: completion limit (default: the protocol's, else `sampling.max_new_tokens`).
      protocol: a `protocols.Protocol` (default: `training`): the frames, prompt set and
        decoding of the requests (`eval.protocol_prompts`, when set, replaces its prompt set).
    """
    from vcoach_jax.evaluation import protocols  # pylint: disable=g-import-not-at-top
    from vcoach_jax.evaluation import reference_inputs  # pylint: disable=g-import-not-at-top
    from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
    from vcoach_jax.data import video as video_lib  # pylint: disable=g-import-not-at-top
    from vcoach_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    from vcoach_jax.sampling import Sampler, SamplingConfig  # pylint: disable=g-import-not-at-top
    from vcoach_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    protocol = protocol or protocols.REGISTRY["training"]
    if protocol.frames == "reference" and config.model.attention_impl == "xla":
      # Near-native frames make ~1,200 patches each: plain attention would hold a
      # [patches x patches] score matrix per head; query blocks give the same values.
      config = config_lib.with_overrides(config, ["model.attention_impl=chunked"])
    parts = experiment.build(config, workdir)
    tokenizer_lib.check_vision_ids(parts.tokenizer, parts.model.config,
                                   config.model.checkpoint or "the model")
    sampler = Sampler(parts.model, parts.tokenizer, parts.mesh,
                      batch_buckets=tuple(config.sampling.batch_buckets),
                      prompt_buckets=tuple(config.data.prompt_buckets),
                      rules=mesh_lib.rules_from_config(config.parallel.rules))
    sampling = dataclasses.replace(
        SamplingConfig.from_config(config.sampling), greedy=True, num_samples=1,
        max_new_tokens=(max_new_tokens or protocol.max_new_tokens
                        or config.sampling.max_new_tokens),
        repetition_penalty=(config.sampling.repetition_penalty
                            if protocol.repetition_penalty is None
                            else protocol.repetition_penalty))
    if protocol.frames == "reference":
      builder = reference_inputs.ReferencePromptBuilder(protocol, reference_inputs.PromptSet.load(
          config.eval.protocol_prompts or protocol.prompts))
    else:
      builder = PromptBuilder(parts.texts, video_lib.VideoSpec.from_config(config.video), world)
    shapes = pipeline_lib.BatchShapes.from_config(config.data)
    return cls(sampler, sampling, shapes, builder, batch_size=config.eval.batch_size)

  # ----------------------------------------------------------------------------------------------
  def __call__(self, requests: Sequence[Request]) -> list[str]:
    if self.builder is None:
      raise ValueError("SamplerGenerate needs a PromptBuilder to answer eval requests")
    out: list[str] = []
    for start in range(0, len(requests), self.batch_size):
      chunk = list(requests[start:start + self.batch_size])
      prompts = self.builder(chunk)
      out += self._generate([self._encode_prompt(p, r.item.id) for p, r in zip(prompts, chunk)])
    return out

  def generate_texts(self, texts: Sequence[str]) -> list[str]:
    """Completions of plain chat texts (no images), e.g. a judge model's prompts."""
    out: list[str] = []
    for start in range(0, len(texts), self.batch_size):
      chunk = texts[start:start + self.batch_size]
      out += self._generate([self._encode_prompt(chat.Prompt(t, [], [], []), f"text {start + i}")
                             for i, t in enumerate(chunk)])
    return out

  # ----------------------------------------------------------------------------------------------
  def _encode_prompt(self, prompt: chat.Prompt, rid: str) -> dict[str, Any]:
    """One prompt as a `collate` item (no SFT target, no reward sample)."""
    inputs = self.processor(prompt)
    n = inputs["input_ids"].shape[1]
    if n > self.shapes.max_prompt_length:
      raise ValueError(f"item {rid!r}: prompt of {n} tokens exceeds data.max_prompt_length = "
                       f"{self.shapes.max_prompt_length}")
    return {"input_ids": inputs["input_ids"][0], "pixel_values": inputs["pixel_values"],
            "image_grid_thw": inputs["image_grid_thw"], "target_ids": np.zeros((0,), np.int32),
            "sample": None, "id": rid}

  def model_inputs(self, requests: Sequence[Request]):
    """The `ModelInputs` one sampler call gets for these requests (one chunk)."""
    prompts = self.builder(requests)
    return self._inputs([self._encode_prompt(p, r.item.id) for p, r in zip(prompts, requests)])

  def _inputs(self, items: list[dict[str, Any]]):
    patches = max(it["pixel_values"].shape[0] for it in items)
    images = max(it["image_grid_thw"].shape[0] for it in items)
    shapes = dataclasses.replace(
        self.shapes, batch_size=len(items),
        max_patches=max(self.shapes.max_patches, pow2(patches)),
        max_images=max(self.shapes.max_images, pow2(images)), max_target_length=1)
    host = pipeline_lib.collate(items, shapes, self.sampler.pad_id)
    return batching.batch_inputs(self.sampler.model.config, host.arrays)

  def _generate(self, items: list[dict[str, Any]]) -> list[str]:
    inputs = self._inputs(items)
    t0 = time.perf_counter()
    texts = self.sampler.generate(inputs, self.sampling, self.rng, state=self.state).texts
    self.sampler_seconds += time.perf_counter() - t0
    self.calls += 1
    return texts
