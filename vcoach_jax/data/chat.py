"""Prompt construction (DESIGN.md §8.2) and the Qwen2.5-VL processor.

The user turn shows the video as a list of frames, each fed to the model as its own image:

  <|im_start|>system
  {system text of the task}<|im_end|>
  <|im_start|>user
  Frame 1 at 0.0s:<|vision_start|><|image_pad|><|vision_end|>
  Frame 2 at 1.5s:<|vision_start|><|image_pad|><|vision_end|>
  ...
  The video is 22.0 seconds long.
  {question, verbatim}
  {hint, only for a visual prompt}<|im_end|>
  <|im_start|>assistant

For the temporal-spatial task the record's key frames are inserted between the sampled frames in
time order (labelled with their time in whole seconds); key frames after the last sampled frame
are dropped. Every text comes from a JSON file (`vcoach_jax/assets/prompts.json` by default,
`config.prompts_file` to change it).

`Processor` turns the prompt text and its images into model inputs exactly as transformers'
`Qwen2_5_VLProcessor` (4.51.3) does for images of the right size: each image is rescaled,
normalised, repeated over the temporal patch (2) and cut into 14 x 14 patches ordered by 2 x 2
merge windows (`pixel_values` [sum of t*h*w, 3*2*14*14], `image_grid_thw` [n, 3]); each
`<|image_pad|>` is expanded to t*h*w / 4 copies before tokenising.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from vcoach_jax.data import records as records_lib

DEFAULT_PROMPTS_FILE = str(pathlib.Path(__file__).parent.parent / "assets" / "prompts.json")
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
HINT_TYPES = ("raw", "darken", "circle", "numbers", "attention")


@dataclasses.dataclass(frozen=True)
class PromptTexts:
  """The wording of prompts: per-task system texts, frame labels, hints (DESIGN.md §8.2)."""
  system: Mapping[str, str]
  frame_label: str
  key_frame_label: str
  duration_line: str
  image_label: str
  hints: Mapping[str, str]

  @classmethod
  def load(cls, path: str | None = None) -> "PromptTexts":
    """Reads a prompts JSON file (default: the project's own); names the file and key on error."""
    path = path or DEFAULT_PROMPTS_FILE
    try:
      with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    except FileNotFoundError:
      raise FileNotFoundError(f"prompts file {path!r} does not exist") from None
    except json.JSONDecodeError as e:
      raise ValueError(f"prompts file {path!r} is not valid JSON: {e}") from None
    fields = [f.name for f in dataclasses.fields(cls)]
    for name in fields:
      if name not in raw:
        raise ValueError(f"prompts file {path!r} has no {name!r} entry")
    for task in records_lib.TASKS:
      if not isinstance(raw["system"].get(task), str):
        raise ValueError(f"prompts file {path!r}: 'system' has no text for task {task!r}")
    for hint in HINT_TYPES:
      if not isinstance(raw["hints"].get(hint), str):
        raise ValueError(f"prompts file {path!r}: 'hints' has no text for prompt type {hint!r}")
    return cls(**{name: raw[name] for name in fields})


@dataclasses.dataclass
class Prompt:
  """One prompt: the chat text (one `<|image_pad|>` per image) and its images in order."""
  text: str
  images: list[np.ndarray]  # uint8 [h, w, 3] each, in the order of the text
  times: list[float]  # seconds of each image in the original video (0 for a still image)
  is_key_frame: list[bool]


def chat_text(system: str, user: str) -> str:
  """The Qwen2.5 chat template for one system + one user turn, ending ready for the answer."""
  return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
          "<|im_start|>assistant\n")


def sft_target(reasoning: str, answer: str) -> str:
  """The cold-start SFT target text (DESIGN.md §8.8), end of turn not included."""
  return f"<think>{reasoning}</think>\n<answer>{answer}</answer>"


def _vision(label: str) -> str:
  return f"{label}{VISION_START}{IMAGE_PAD}{VISION_END}"


def interleave_key_frames(times: Sequence[float], key_times: Sequence[float]
                          ) -> list[tuple[str, int]]:
  """Order of the images: [('frame', i) | ('key', j)] by time; late key frames dropped.

  A key frame goes after every sampled frame at or before its time; key frames later than the
  last sampled frame are left out.
  """
  last = times[-1] if len(times) else -np.inf
  keys = sorted((t, j) for j, t in enumerate(key_times) if t <= last)
  order, k = [], 0
  for i, t in enumerate(times):
    while k < len(keys) and keys[k][0] < t:
      order.append(("key", keys[k][1]))
      k += 1
    order.append(("frame", i))
    while k < len(keys) and keys[k][0] == t:
      order.append(("key", keys[k][1]))
      k += 1
  return order


def build_video_prompt(task: str, question: str, frames: Sequence[np.ndarray],
                       times: Sequence[float], duration: float, texts: PromptTexts,
                       key_frames: Sequence[np.ndarray] = (), key_times: Sequence[float] = (),
                       prompt_type: str = "raw") -> Prompt:
  """The prompt of DESIGN.md §8.2 for a video record.

  Args:
    task: one of the six task strings.
    question: the record's question (used verbatim).
    frames: sampled frames, uint8 [h, w, 3] each.
    times: their timestamps in seconds of the original video.
    duration: the video's length in seconds.
    texts: the wording.
    key_frames: key-frame images (already resized to the frame size), only used for the
      temporal-spatial task.
    key_times: their times in seconds (labelled rounded to whole seconds).
    prompt_type: `raw` (no hint) or a visual-prompt type whose hint ends the user turn.

  Returns:
    The prompt with its images in text order.
  """
  if task not in texts.system:
    raise ValueError(f"unknown task {task!r}; expected one of {list(texts.system)}")
  if prompt_type not in texts.hints:
    raise ValueError(f"unknown prompt type {prompt_type!r}; expected one of {list(texts.hints)}")
  if len(frames) != len(times):
    raise ValueError(f"{len(frames)} frames but {len(times)} timestamps")
  if task != records_lib.TASK_ST:
    key_frames, key_times = (), ()
  lines, images, image_times, is_key = [], [], [], []
  for n, (kind, i) in enumerate(interleave_key_frames(list(times), list(key_times)), start=1):
    if kind == "frame":
      lines.append(_vision(texts.frame_label.format(index=n, time=float(times[i]))))
      images.append(frames[i])
      image_times.append(float(times[i]))
    else:
      lines.append(_vision(texts.key_frame_label.format(index=n, time=int(round(key_times[i])))))
      images.append(key_frames[i])
      image_times.append(float(key_times[i]))
    is_key.append(kind == "key")
  lines.append(texts.duration_line.format(seconds=float(duration)))
  lines.append(question)
  hint = texts.hints[prompt_type]
  if hint:
    lines.append(hint)
  return Prompt(chat_text(texts.system[task], "\n".join(lines)), images, image_times, is_key)


def build_image_prompt(question: str, image: np.ndarray, texts: PromptTexts,
                       prompt_type: str = "raw") -> Prompt:
  """The prompt for a visual-QA record: the image, then the question (and the hint)."""
  lines = [_vision(texts.image_label), question]
  hint = texts.hints[prompt_type]
  if hint:
    lines.append(hint)
  return Prompt(chat_text(texts.system[records_lib.TASK_VQA], "\n".join(lines)), [image], [0.0],
                [False])


# ---------------------------------------------------------------------------------------------
# Processor.


@functools.lru_cache(maxsize=8)
def _normalise_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
  values = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
  mean32, std32 = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  return (values[None, :] - mean32[:, None]) / std32[:, None]  # [3, 256] float32


@dataclasses.dataclass(frozen=True)
class Processor:
  """Images -> `pixel_values` / `image_grid_thw`, text -> expanded, tokenised `input_ids`.

  Images must already have sides that are multiples of patch_size * merge_size (frames from
  `video.decode_video`, images from `video.load_image`); the transformers processor would not
  resize those either.
  """
  tokenizer: Any = None
  patch_size: int = 14
  temporal_patch_size: int = 2
  merge_size: int = 2
  image_mean: tuple[float, ...] = IMAGE_MEAN
  image_std: tuple[float, ...] = IMAGE_STD

  def grid(self, height: int, width: int) -> tuple[int, int, int]:
    factor = self.patch_size * self.merge_size
    if height % factor or width % factor:
      raise ValueError(f"image of {height}x{width} (HxW) is not a multiple of {factor}; resize "
                       "it with video.smart_resize first")
    return 1, height // self.patch_size, width // self.patch_size

  def tokens_per_image(self, height: int, width: int) -> int:
    t, h, w = self.grid(height, width)
    return t * h * w // self.merge_size ** 2

  def _normalise(self, pixels: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> float32 normalised: the transformers arithmetic (x * (1/255) in float64,
    cast to float32, then (x - mean) / std in float32) precomputed for the 256 values per
    channel, so the result is bit-identical and one table lookup."""
    lut = _normalise_table(tuple(self.image_mean), tuple(self.image_std))
    return lut[np.arange(3), pixels]

  def patchify(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [h, w, 3] -> (pixel_values float32 [N, 3*T*P*P], grid_thw int64 [n, 3])."""
    p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
    out, grids = [], []
    for image in images:
      image = np.asarray(image)
      if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [h, w, 3], got shape {image.shape}")
      _, gh, gw = self.grid(*image.shape[:2])
      x = self._normalise(image.astype(np.uint8, copy=False)).transpose(2, 0, 1)  # [C, H, W]
      x = np.broadcast_to(x[None], (tp,) + x.shape)  # the image repeated over the temporal patch
      x = x.reshape(tp, 3, gh // m, m, p, gw // m, m, p)
      x = x.transpose(2, 5, 3, 6, 1, 0, 4, 7)  # [gh/m, gw/m, m, m, C, T, P, P]
      out.append(x.reshape(gh * gw, 3 * tp * p * p))
      grids.append((1, gh, gw))
    pixel_values = np.concatenate(out, 0) if out else np.zeros((0, 3 * tp * p * p), np.float32)
    return pixel_values, np.asarray(grids, np.int64).reshape(-1, 3)

  def patchify_video(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Video mode (one `<|video_pad|>` for the whole clip, frames paired over the temporal patch):
    uint8 frames [n, h, w, 3] -> (pixel_values_videos [t*h*w, 3*T*P*P], video_grid_thw [1, 3]).

    The prompts of DESIGN.md §8.2 feed frames as separate images (`patchify`); this is for inputs
    built the standard Qwen2.5-VL way. A clip of odd length repeats its last frame.
    """
    p, m, tp = self.patch_size, self.merge_size, self.temporal_patch_size
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f"expected frames [n, h, w, 3], got shape {frames.shape}")
    _, gh, gw = self.grid(*frames.shape[1:3])
    if len(frames) % tp:
      frames = np.concatenate([frames, np.repeat(frames[-1:], tp - len(frames) % tp, 0)])
    gt = len(frames) // tp
    x = self._normalise(frames.astype(np.uint8, copy=False)).transpose(0, 3, 1, 2)
    x = x.reshape(gt, tp, 3, gh // m, m, p, gw // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # [gt, gh/m, gw/m, m, m, C, T, P, P]
    return x.reshape(gt * gh * gw, 3 * tp * p * p), np.asarray([[gt, gh, gw]], np.int64)

  def expand(self, text: str, grid_thw: np.ndarray) -> str:
    """Replaces the k-th `<|image_pad|>` with t*h*w / merge**2 copies of it."""
    parts = text.split(IMAGE_PAD)
    if len(parts) - 1 != len(grid_thw):
      raise ValueError(f"text has {len(parts) - 1} {IMAGE_PAD} tokens but there are "
                       f"{len(grid_thw)} images")
    pieces = [parts[0]]
    for grid, part in zip(grid_thw, parts[1:]):
      pieces.append(IMAGE_PAD * (int(np.prod(grid)) // self.merge_size ** 2))
      pieces.append(part)
    return "".join(pieces)

  def __call__(self, prompt: Prompt) -> dict[str, np.ndarray]:
    """Model inputs of one prompt: input_ids, attention_mask [1, L], pixel_values, image_grid_thw."""
    if self.tokenizer is None:
      raise ValueError("Processor needs a tokenizer to tokenise text")
    pixel_values, grid = self.patchify(prompt.images)
    ids = self.tokenizer(self.expand(prompt.text, grid), add_special_tokens=False)["input_ids"]
    ids = np.asarray(ids, np.int32)[None]
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "pixel_values": pixel_values,
            "image_grid_thw": grid}
