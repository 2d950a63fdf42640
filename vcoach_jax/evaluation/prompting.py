"""Eval requests -> chat prompts (text + images), ready for the processor and the sampler.

Inference is on the raw video (docs/design.md §9): the sampled frames and the question, under the
system prompt of the request's task; no visual prompt, no hint, and no key frames (they would
tell the model which moments matter). Synthetic items are re-rendered from their world index;
real videos are decoded once per batch (V-STAR asks five questions about each).
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
        if self.world is None:
          raise ValueError(f"item {item.id!r} is synthetic but no world was given")
        from vcoach_jax.evaluation.loaders import synthetic_index  # pylint: disable=g-import-not-at-top
        sample = self.world.sample(synthetic_index(item))
        frames, times = list(sample.frames), [float(t) for t in sample.times]
        duration, fps = len(times) / self.world.spec.fps, self.world.spec.fps
      else:
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
