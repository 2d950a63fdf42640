"""Inputs of the `*_reference` protocols: frames, their size, and the prompt set.

Frames (docs/evaluation.md): with T frames at native rate f, duration T / f,
  int(duration * fps) > max_frames  ->  linspace(0, T - 1, max_frames) truncated to int
  otherwise                         ->  0, s, 2s, ... below T, s = int(f / fps), first max_frames
and each frame's time is index / f. Every frame is one image, resized (PIL bicubic) to
`video.smart_resize(h, w, 28, protocol.min_pixels, protocol.max_pixels)`, i.e. about its native
size. A prompt is the set's system message, then the step's text with the frame lines
("Frame i at t s: <image>") where it says {frames}.

  builder = ReferencePromptBuilder(protocol, PromptSet.load(protocol.prompts))
  prompts = builder(requests)     # chat.Prompt per request
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from vcoach_jax import storage
from vcoach_jax.data import chat
from vcoach_jax.data import video as video_lib
from vcoach_jax.evaluation.items import EvalItem, Request
from vcoach_jax.evaluation.protocols import Protocol

IMAGE = f"{chat.VISION_START}{chat.IMAGE_PAD}{chat.VISION_END}"
STEPS = {"vstar": ("answer", "when", "where", "where_2", "when_2"), "charades": ("answer",)}


def frame_indices(total: int, native_fps: float, fps: float = 1.0, max_frames: int = 16
                  ) -> np.ndarray:
  """The reference's frame numbers (see the module docstring)."""
  if total < 1 or not native_fps > 0:
    raise ValueError(f"a video of {total} frames at {native_fps} fps has no frames to sample")
  if int(total / native_fps * fps) > max_frames:
    return np.linspace(0, total - 1, max_frames).astype(np.int64)
  step = int(native_fps / fps)
  if step < 1:
    raise ValueError(f"native rate {native_fps} fps is below the sampling rate {fps} fps")
  return np.arange(0, total, step, dtype=np.int64)[:max_frames]


@dataclasses.dataclass(frozen=True)
class Frames:
  """Sampled frames of one video."""
  images: list[np.ndarray]  # uint8 [h, w, 3], resized
  indices: np.ndarray  # frame numbers
  times: list[float]  # index / native fps
  native_fps: float
  total_frames: int
  original_size: tuple[int, int]  # (W, H)


def decode_frames(path: str, protocol: Protocol) -> Frames:
  """Decodes the protocol's frames of a video file (decord)."""
  import decord  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f"video {path!r} does not exist")
  try:
    reader = decord.VideoReader(path, ctx=decord.cpu(0))
    total, native_fps = len(reader), float(reader.get_avg_fps())
    idx = frame_indices(total, native_fps, protocol.fps, protocol.max_frames)
    raw = reader.get_batch(idx.tolist()).asnumpy()
  except Exception as e:  # decord raises its own error types
    raise ValueError(f"video {path!r} cannot be decoded: {e}") from e
  h, w = video_lib.smart_resize(raw.shape[1], raw.shape[2], video_lib.PATCH_FACTOR,
                                protocol.min_pixels, protocol.max_pixels)
  images = [np.asarray(Image.fromarray(f).resize((w, h), Image.BICUBIC)) for f in raw]
  return Frames(images, idx, [float(i) / native_fps for i in idx], native_fps, total,
                (int(raw.shape[2]), int(raw.shape[1])))


@dataclasses.dataclass(frozen=True)
class PromptSet:
  """A prompt-set file: system message, frame line, one template per benchmark step."""
  system: str
  frame: str
  steps: Mapping[str, Mapping[str, str]]  # benchmark -> step -> template

  @classmethod
  def load(cls, path) -> "PromptSet":
    raw = storage.read_json(path, "prompt set")
    for key in ("system", "frame"):
      if not isinstance(raw.get(key), str):
        raise ValueError(f"prompt set {path}: {key!r} must be a string")
    steps = {}
    for bench, names in STEPS.items():
      if bench not in raw:
        continue
      for name in names:
        if not isinstance(raw[bench].get(name), str):
          raise ValueError(f"prompt set {path}: {bench!r} has no text for step {name!r}")
      steps[bench] = dict(raw[bench])
    return cls(raw["system"], raw["frame"], steps)

  def template(self, benchmark: str, step: str) -> str:
    if benchmark not in self.steps:
      raise ValueError(f"the prompt set has no {benchmark!r} section")
    return self.steps[benchmark][step]


def fields(item: EvalItem, question: str, duration: float) -> dict[str, Any]:
  """The values a step template may use."""
  out: dict[str, Any] = {"question": question, "duration": round(duration, 2)}
  if item.box_size is not None:
    out.update(width=item.box_size[0], height=item.box_size[1])
  if item.segment is not None:
    seconds = list(range(math.ceil(item.segment[0]), math.floor(item.segment[1]) + 1))
    out.update(time_range=seconds, first_second=seconds[0] if seconds else math.ceil(
        item.segment[0]))
  boxes = [[int(v) if float(v).is_integer() else v for v in b] for _, b in item.boxes]
  out.update(num_boxes=len(boxes), boxes=boxes)
  return out


def user_text(prompts: PromptSet, req: Request, frames: Frames, duration: float) -> str:
  lines = "".join(prompts.frame.format(index=i + 1, time=round(t, 1), image=IMAGE)
                  for i, t in enumerate(frames.times))
  template = prompts.template(req.item.benchmark, req.step)
  if "{frames}" not in template:
    template = "{frames}" + template
  return template.format(frames=lines, **fields(req.item, req.question, duration))


class ReferencePromptBuilder:
  """Requests -> `chat.Prompt`s of a reference protocol (videos decoded once per batch)."""

  def __init__(self, protocol: Protocol, prompts: PromptSet):
    self.protocol, self.prompts = protocol, prompts
    self.last_frames: dict[str, Frames] = {}  # video -> its frames, of the last call

  def __call__(self, requests: Sequence[Request]) -> list[chat.Prompt]:
    decoded: dict[str, Frames] = {}
    out = []
    for req in requests:
      item = req.item
      if item.video not in decoded:
        decoded[item.video] = decode_frames(item.video, self.protocol)
      frames = decoded[item.video]
      duration = item.duration or frames.total_frames / frames.native_fps
      text = chat.chat_text(self.prompts.system, user_text(self.prompts, req, frames, duration))
      out.append(chat.Prompt(text, list(frames.images), list(frames.times),
                             [False] * len(frames.images)))
    self.last_frames = decoded
    return out
