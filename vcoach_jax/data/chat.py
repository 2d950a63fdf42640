"""Prompt construction (docs/design.md §8.2) and the Qwen2.5-VL processor.

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

For the temporal-spatial task the record's key frames are inserted between the sampled frames;
where they go and the times the labels show follow `config.video.timestamps`
(`data.frame_times`: `exact` true times, `reference` the released trainers' rule). Every text
comes from a JSON file (`vcoach_jax/assets/prompts.json` by default, `config.prompts_file` to
change it; its shape is documented in docs/prompts.md).

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

from vcoach_jax.data import frame_times
from vcoach_jax.data import records as records_lib

DEFAULT_PROMPTS_FILE = str(pathlib.Path(__file__).parent.parent / "assets" / "prompts.json")
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
HINT_TYPES = ("raw", "darken", "circle", "numbers", "attention")


# Entries every prompts file has; `OPTIONAL` ones fall back to the value given there.
REQUIRED = ("system", "frame_label", "key_frame_label", "duration_line", "image_label", "hints")
OPTIONAL = {"image_separator": "\n"}


@dataclasses.dataclass(frozen=True)
class PromptTexts:
  """How prompts are written: the wording of a prompts file (docs/design.md §8.2, docs/prompts.md)
  and the rule for frame times (`timestamps`, from `config.video.timestamps`).

  `sft_overrides` are the file's optional `sft` entries (any of the wording fields, `system`
  merged per task), used by `for_sft()`: the cold-start SFT's variant of the texts, which also
  applies the released SFT's key-frame rules under `timestamps = "reference"`.
  """
  system: Mapping[str, str]
  frame_label: str  # {index} 1-based position in the frame list, {time} the label's seconds
  key_frame_label: str  # same placeholders; {time} is whole seconds except in SFT (reference)
  duration_line: str  # {seconds} (float), {whole_seconds} (int, truncated)
  image_label: str  # before a still image's vision tokens
  hints: Mapping[str, str]  # per prompt type; appended after the question on its own line
  image_separator: str = "\n"  # between a still image's vision tokens and the question
  sft_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  timestamps: str = "exact"  # one of frame_times.TIMESTAMPS
  sft: bool = False  # the released SFT's key-frame rules (with timestamps = "reference")

  @classmethod
  def load(cls, path: str | None = None, timestamps: str = "exact") -> "PromptTexts":
    """Reads a prompts JSON file (default: the project's own); names the file and key on error."""
    path = path or DEFAULT_PROMPTS_FILE
    try:
      with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    except FileNotFoundError:
      raise FileNotFoundError(f"prompts file {path!r} does not exist") from None
    except json.JSONDecodeError as e:
      raise ValueError(f"prompts file {path!r} is not valid JSON: {e}") from None
    if timestamps not in frame_times.TIMESTAMPS:
      raise ValueError(f"config key 'video.timestamps' must be one of {frame_times.TIMESTAMPS}, "
                       f"got {timestamps!r}")
    for name in REQUIRED:
      if name not in raw:
        raise ValueError(f"prompts file {path!r} has no {name!r} entry")
    fields = {name: raw[name] for name in REQUIRED}
    fields.update({name: raw.get(name, default) for name, default in OPTIONAL.items()})
    _check_texts(path, "", fields)
    sft = raw.get("sft", {})
    unknown = set(sft) - set(REQUIRED) - set(OPTIONAL) if isinstance(sft, dict) else {"sft"}
    if unknown:
      raise ValueError(f"prompts file {path!r}: 'sft' may only override "
                       f"{REQUIRED + tuple(OPTIONAL)}; got {sorted(unknown)}")
    _check_texts(path, "sft.", _with_overrides(fields, sft))
    return cls(**fields, sft_overrides=sft, timestamps=timestamps)

  @classmethod
  def from_config(cls, config) -> "PromptTexts":
    """The texts of `config.prompts_file` with the frame-time rule of `config.video.timestamps`."""
    return cls.load(config.prompts_file or None, config.video.timestamps)

  def for_sft(self) -> "PromptTexts":
    """The cold-start SFT's texts: the file's `sft` overrides applied, SFT key-frame rules on."""
    base = {name: getattr(self, name) for name in REQUIRED + tuple(OPTIONAL)}
    return dataclasses.replace(self, **_with_overrides(base, self.sft_overrides), sft=True)


def _with_overrides(fields: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
  out = dict(fields)
  for name, value in overrides.items():
    out[name] = ({**fields["system"], **value} if name == "system" and isinstance(value, dict)
                 else value)
  return out


def _check_texts(path: str, where: str, fields: Mapping[str, Any]) -> None:
  """Every task has a system text, every prompt type a hint, every placeholder is known."""
  if not isinstance(fields["system"], dict) or not isinstance(fields["hints"], dict):
    raise ValueError(f"prompts file {path!r}: '{where}system' and '{where}hints' must be objects")
  for task in records_lib.TASKS:
    if not isinstance(fields["system"].get(task), str):
      raise ValueError(f"prompts file {path!r}: '{where}system' has no text for task {task!r}")
  for hint in HINT_TYPES:
    if not isinstance(fields["hints"].get(hint), str):
      raise ValueError(f"prompts file {path!r}: '{where}hints' has no text for prompt type "
                       f"{hint!r}")
  for name in ("image_label", "image_separator"):  # written as they are
    if not isinstance(fields[name], str):
      raise ValueError(f"prompts file {path!r}: '{where}{name}' must be a text")
  samples = {"frame_label": dict(index=1, time=0.5), "key_frame_label": dict(index=2, time=1),
             "duration_line": dict(seconds=2.5, whole_seconds=2)}
  for name, values in samples.items():
    text = fields[name]
    try:
      if not isinstance(text, str):
        raise TypeError("not a string")
      text.format(**values)
    except (KeyError, IndexError, ValueError, TypeError) as e:
      raise ValueError(f"prompts file {path!r}: '{where}{name}' = {text!r} is not a text with "
                       f"the placeholders {sorted(values)} ({e})") from None


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


def _vision(label: str) -> str:
  return f"{label}{VISION_START}{IMAGE_PAD}{VISION_END}"


def interleave_key_frames(times: Sequence[float], key_times: Sequence[float]
                          ) -> list[tuple[str, int]]:
  """Order of the images by true time (the `exact` rule of `frame_times`)."""
  return frame_times.exact_order(times, key_times)


def frame_schedule(times: Sequence[float], key_times: Sequence[float], texts: PromptTexts,
                   sample_fps: float | None = None) -> list[frame_times.Slot]:
  """The images of a video prompt in order with their labels, by the rule of `texts`."""
  return frame_times.schedule(times, key_times, texts.timestamps, sample_fps, sft=texts.sft)


def _format(texts: PromptTexts, name: str, **values) -> str:
  try:
    return getattr(texts, name).format(**values)
  except (KeyError, IndexError, ValueError) as e:
    raise ValueError(f"prompts text {name!r} = {getattr(texts, name)!r} cannot show "
                     f"{values} ({e})") from None


def _hint(texts: PromptTexts, prompt_type: str | None) -> list[str]:
  if prompt_type is None:
    return []
  if prompt_type not in texts.hints:
    raise ValueError(f"unknown prompt type {prompt_type!r}; expected one of {list(texts.hints)}")
  return [texts.hints[prompt_type]] if texts.hints[prompt_type] else []


def build_video_prompt(task: str, question: str, frames: Sequence[np.ndarray],
                       times: Sequence[float], duration: float, texts: PromptTexts,
                       key_frames: Sequence[np.ndarray] = (), key_times: Sequence[float] = (),
                       prompt_type: str | None = None, sample_fps: float | None = None
                       ) -> Prompt:
  """The prompt of docs/design.md §8.2 for a video record.

  Args:
    task: one of the six task strings.
    question: the record's question (used verbatim).
    frames: sampled frames, uint8 [h, w, 3] each.
    times: their timestamps in seconds of the original video.
    duration: the video's length in seconds.
    texts: the wording and the frame-time rule.
    key_frames: key-frame images (already resized to the frame size), only used for the
      temporal-spatial task, in the record's order.
    key_times: their times in seconds.
    prompt_type: None (no hint) or a prompt type (`raw` included) whose hint ends the user turn.
    sample_fps: frames sampled per second of video (needed by `timestamps = "reference"`).

  Returns:
    The prompt with its images in text order.
  """
  if task not in texts.system:
    raise ValueError(f"unknown task {task!r}; expected one of {list(texts.system)}")
  if len(frames) != len(times):
    raise ValueError(f"{len(frames)} frames but {len(times)} timestamps")
  hint = _hint(texts, prompt_type)
  if task != records_lib.TASK_ST:
    key_frames, key_times = (), ()
  lines, images, image_times, is_key = [], [], [], []
  slots = frame_schedule(list(times), list(key_times), texts, sample_fps)
  for n, slot in enumerate(slots, start=1):
    key = slot.kind == "key"
    label = _format(texts, "key_frame_label" if key else "frame_label", index=n, time=slot.label)
    lines.append(_vision(label))
    images.append(key_frames[slot.index] if key else frames[slot.index])
    image_times.append(float(key_times[slot.index] if key else times[slot.index]))
    is_key.append(key)
  if not (texts.sft and texts.timestamps == "reference" and task == records_lib.TASK_ST):
    seconds, whole = frame_times.closing_seconds(duration, len(times), texts.timestamps,
                                                 sample_fps)
    lines.append(_format(texts, "duration_line", seconds=seconds, whole_seconds=whole))
  lines.append(question)
  return Prompt(chat_text(texts.system[task], "\n".join(lines + hint)), images, image_times,
                is_key)


def build_image_prompt(question: str, image: np.ndarray, texts: PromptTexts,
                       prompt_type: str | None = None) -> Prompt:
  """The prompt for a visual-QA record: the image, the separator, the question (and the hint)."""
  user = "\n".join([_vision(texts.image_label) + texts.image_separator + question]
                   + _hint(texts, prompt_type))
  return Prompt(chat_text(texts.system[records_lib.TASK_VQA], user), [image], [0.0], [False])


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

    The prompts of docs/design.md §8.2 feed frames as separate images (`patchify`); this is for inputs
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
