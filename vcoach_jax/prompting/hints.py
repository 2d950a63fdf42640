"""Prompted inputs for coaching: the visual prompt drawn on an example plus its textual hint.

docs/design.md §8.4.3: the hint of the prompt type ends the user turn (after the question; the texts
are `hints` in the prompts file, read by `data.chat.PromptTexts`), and for the temporal-spatial
task the prompt is drawn on the key frames inserted in the frame list. Other tasks get only the
hint (the reference), unless `draw_on = "key_and_nearest"`, which also draws on the sampled frame
nearest each key frame's time, for every video task whose record has key frames.

  ex = prompted_example(example, "circle", PromptOptions())      # frames replaced, same keys
  prompt = pipeline.build_prompt(ex, texts, "circle")            # or:
  item = pipeline.encode_example(ex, processor, texts, shapes, step_percent, prompt_type="circle")
  prompt = prompted_prompt(example, "circle", texts)             # the two steps at once
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from vcoach_jax.data import chat
from vcoach_jax.data import frame_times
from vcoach_jax.data import pipeline
from vcoach_jax.data import records as records_lib
from vcoach_jax.prompting import visual_prompts as vp

@dataclasses.dataclass(frozen=True)
class PromptOptions:
  """How prompts are drawn (`from_config(config.prompting)`)."""
  per_key_frame_boxes: bool = True  # each key frame's own boxes; False: all boxes (reference)
  draw_on: str = "key_frames_st_only"  # a name of DRAW_ON
  darken_factor: float = vp.DARKEN_FACTOR
  darken_pad: int = vp.DARKEN_PAD
  timestamps: str = "exact"  # the frame-time rule (config.video.timestamps): frame numbering

  @classmethod
  def from_config(cls, prompting: Mapping[str, Any], timestamps: str = "exact"
                  ) -> "PromptOptions":
    return cls(per_key_frame_boxes=bool(prompting["per_key_frame_boxes"]),
               draw_on=str(prompting["draw_on"]), darken_factor=float(prompting["darken_factor"]),
               darken_pad=int(prompting["darken_pad"]), timestamps=str(timestamps))

  def draw(self, kind: str, frames: np.ndarray, boxes, indices) -> np.ndarray:
    return vp.render(kind, frames, boxes, indices, darken_factor=self.darken_factor,
                     darken_pad=self.darken_pad)


def hint(prompt_type: str, texts: chat.PromptTexts) -> str:
  """The hint text of a prompt type (`raw` has one too: a prompt without a hint is built with
  prompt_type None)."""
  if prompt_type not in texts.hints:
    raise ValueError(f"unknown prompt type {prompt_type!r}; expected one of {list(texts.hints)}")
  return texts.hints[prompt_type]


def _task(example: Mapping[str, Any]) -> str:
  task = example["task"]
  return task.decode("utf-8") if isinstance(task, bytes) else str(task)


def frame_positions(example: Mapping[str, Any], timestamps: str = "exact"
                    ) -> tuple[list[int | None], list[int]]:
  """1-based positions in the prompt's frame list of (each key frame, each sampled frame), under
  the frame-time rule `timestamps` (`data.frame_times`).

  Key frames that the prompt leaves out (past the last sampled frame, or any key frame of a task
  other than temporal-spatial) have position None.
  """
  times = [float(t) for t in example["timestamps"]]
  key_times = [float(t) for t in example["key_frame_times"]]
  keys: list[int | None] = [None] * len(key_times)
  frames = [0] * len(times)
  inserted = key_times if _task(example) == records_lib.TASK_ST else []
  slots = frame_times.schedule(times, inserted, timestamps, float(example["video_sample_fps"]))
  for n, (kind, i, _) in enumerate(slots, start=1):
    if kind == "key":
      keys[i] = n
    else:
      frames[i] = n
  return keys, frames


def _boxes_and_positions(example: Mapping[str, Any], options: PromptOptions):
  """(boxes per key frame, (key-frame positions, sampled-frame positions))."""
  record = pipeline.record_of(example)
  boxes = vp.key_frame_boxes(record, options.per_key_frame_boxes)
  return boxes, frame_positions(example, options.timestamps)


def _draw_key_frames(example: Mapping[str, Any], prompt_type: str, options: PromptOptions,
                     out: dict[str, Any]) -> None:
  """Draws on the key frames the temporal-spatial task inserts into its prompt."""
  key_frames = np.asarray(example["key_frames"])
  if _task(example) != records_lib.TASK_ST or not len(key_frames):
    return
  boxes, (key_pos, _) = _boxes_and_positions(example, options)
  out["key_frames"] = options.draw(prompt_type, key_frames, boxes, [p or 0 for p in key_pos])


def _draw_nearest_frames(example: Mapping[str, Any], prompt_type: str, options: PromptOptions,
                         out: dict[str, Any]) -> None:
  """Draws on the sampled frame nearest each key time (each key frame's boxes)."""
  boxes, (_, frame_pos) = _boxes_and_positions(example, options)
  times = np.asarray(example["timestamps"], np.float64)
  nearest: dict[int, list[np.ndarray]] = {}
  for t, b in zip(example["key_frame_times"], boxes):
    nearest.setdefault(int(np.argmin(np.abs(times - float(t)))), []).append(b)
  which = sorted(nearest)
  frames = np.array(example["frames"], copy=True)
  frames[which] = options.draw(prompt_type, frames[which],
                               [np.concatenate(nearest[i]) for i in which],
                               [frame_pos[i] for i in which])
  out["frames"] = frames


# Which images get the visual prompt (`config.prompting.draw_on`): name -> the drawing steps.
DRAW_ON = {
    "key_frames_st_only": (_draw_key_frames,),  # the reference
    "key_and_nearest": (_draw_key_frames, _draw_nearest_frames),
}


def key_frame_numbers(example: Mapping[str, Any], timestamps: str = "exact") -> list[int]:
  """The number the `numbers` prompt writes on each key frame: its position in the prompt's
  frame list, or for a key frame the prompt leaves out, the position of the sampled frame
  nearest its time."""
  key_pos, frame_pos = frame_positions(example, timestamps)
  times = np.asarray(example["timestamps"], np.float64)
  return [p if p is not None else frame_pos[int(np.argmin(np.abs(times - float(t))))]
          for p, t in zip(key_pos, example["key_frame_times"])]


def prompted_example(example: Mapping[str, Any], prompt_type: str,
                     options: PromptOptions = PromptOptions()) -> dict[str, Any]:
  """A copy of a decoded example (TFDS feature dict) with the visual prompt drawn.

  The stored images are replaced, nothing else changes: `key_frames` (temporal-spatial task) and,
  with `draw_on = "key_and_nearest"`, the sampled `frames` nearest each key time. `raw`, still
  images and records without key frames come back unchanged.
  """
  if prompt_type not in vp.PROMPT_TYPES:
    raise ValueError(f"unknown prompt type {prompt_type!r}; expected one of {vp.PROMPT_TYPES}")
  if options.draw_on not in DRAW_ON:
    raise ValueError(f"config key 'prompting.draw_on' must be one of {tuple(DRAW_ON)}, got "
                     f"{options.draw_on!r}")
  out = dict(example)
  if (prompt_type == "raw" or _task(example) == records_lib.TASK_VQA
      or not len(example["key_frame_times"])):
    return out
  for draw in DRAW_ON[options.draw_on]:
    draw(example, prompt_type, options, out)
  return out


def prompted_prompt(example: Mapping[str, Any], prompt_type: str, texts: chat.PromptTexts,
                    options: PromptOptions = PromptOptions()) -> chat.Prompt:
  """The prompt of a decoded example with the visual prompt drawn and its hint appended."""
  return pipeline.build_prompt(prompted_example(example, prompt_type, options), texts, prompt_type)
