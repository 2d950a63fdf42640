"""Eval requests -> chat prompts (text + images), ready for the processor and the sampler.

Inference is on the video as the item has it (docs/design.md §9), under the system prompt of the
request's task; no visual prompt, no hint. A synthetic item is re-rendered from its world index
into the very example the training input pipeline reads for its record and prompted by the
pipeline's own `build_prompt`: the same frames, frame labels, duration line and, for the
temporal-spatial task, the record's key frames where training inserts them (docs/evaluation.md),
so the `training` protocol sees the inputs the rewards saw in training. A real video gives its
sampled frames only (benchmarks have no key frames); it is decoded once per batch (V-STAR asks
five questions about each).
"""

from __future__ import annotations

from typing import Sequence

from vcoach_jax.data import chat
from vcoach_jax.data import video as video_lib
from vcoach_jax.evaluation.items import Request
from vcoach_jax.rewards import targets as targets_lib


class PromptBuilder:
  """Builds the prompts of a batch of requests.

  Args:
    texts: the prompt wording and frame-time rule (`chat.PromptTexts.from_config(config)`).
    spec: frame sampling and resize (`video.VideoSpec.from_config(config.video)`).
    world: the `synthetic.SyntheticWorld` of synthetic items (None: no synthetic items).
  """

  def __init__(self, texts: chat.PromptTexts, spec: video_lib.VideoSpec = video_lib.VideoSpec(),
               world=None):
    self.texts, self.spec, self.world = texts, spec, world

  def __call__(self, requests: Sequence[Request]) -> list[chat.Prompt]:
    decoded: dict[str, video_lib.DecodedVideo] = {}
    prompts = []
    for req in requests:
      item = req.item
      if item.record is not None:
        prompts.append(self.synthetic_prompt(req))
        continue
      if item.video not in decoded:
        decoded[item.video] = video_lib.decode_video(item.video, self.spec)
      v = decoded[item.video]
      frames, times, duration = list(v.frames), [float(t) for t in v.timestamps], v.duration
      fps = v.sample_fps
      if req.task == targets_lib.TASK_VQA:
        prompts.append(chat.build_image_prompt(req.question, frames[0], self.texts))
      else:
        prompts.append(chat.build_video_prompt(req.task, req.question, frames, times, duration,
                                               self.texts, sample_fps=fps))
    return prompts

  def synthetic_example(self, item) -> dict:
    """The training pipeline's example of a synthetic item's record (numpy values)."""
    from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
    from vcoach_jax.evaluation.loaders import synthetic_index  # pylint: disable=g-import-not-at-top
    if self.world is None:
      raise ValueError(f"item {item.id!r} is synthetic but no world was given")
    example = tfds_stgr.synthetic_example(self.world.sample(synthetic_index(item)),
                                          self.world.spec)
    if example["id"] != item.id:
      raise ValueError(f"item {item.id!r}: the world renders record {example['id']!r} at its "
                       "index (another synthetic config than the items'?)")
    return example

  def synthetic_prompt(self, req: Request) -> chat.Prompt:
    """The prompt of a request about a synthetic item, built as the training pipeline builds it
    (`pipeline.build_prompt`), with the request's task and question."""
    from vcoach_jax.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
    example = dict(self.synthetic_example(req.item), task=req.task, question=req.question)
    return pipeline_lib.build_prompt(example, self.texts)
