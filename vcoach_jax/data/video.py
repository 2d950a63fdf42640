"""Video and image input: frame sampling, smart resize, decoding (docs/design.md §6).

The arithmetic follows the reference's video reader (qwen-vl-utils as configured by the
VisionCoach scripts):

  n      = duration_s * fps, clamped to [min_frames, min(max_frames, total)] (bounds rounded to
           even), then floored to even
  idx    = round(linspace(0, total - 1, n))         (round half to even, like torch.round)
  fps'   = n / total * native_fps
  (h, w) = smart_resize(H, W, 28, min_pixels, max_pixels) per frame, where
           min_pixels = pixels_factor * 28 * 28 and
           max_pixels = max(min(min_pixels, total_budget / n * 2), floor(1.05 * min_pixels))

Frames are resized with an antialiased bicubic filter (a = -0.5, support 2 x the down-scale
factor, align_corners=False) computed in floating point and rounded back to uint8 once: the
arithmetic of torch's `interpolate(..., mode="bicubic", antialias=True)`, which the reference's
torchvision resize calls (torch is not a dependency here; PIL's float mode runs the same filter).

  video = decode_video("clip.mp4", VideoSpec())
  video.frames        # uint8 [n, h, w, 3]
  video.timestamps    # seconds of the original video, one per sampled frame
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import os
from typing import Any, Mapping

import numpy as np

PATCH_FACTOR = 28  # patch 14 x spatial merge 2: frame sides are multiples of this.


@dataclasses.dataclass(frozen=True)
class VideoSpec:
  """Frame-sampling and resize constants; `from_config(config.video)` builds it from a config."""
  fps: float = 2.0  # frames sampled per second of video
  min_frames: int = 4
  max_frames: int = 16
  frame_factor: int = 2  # frame counts are multiples of this (the temporal patch)
  pixels_factor: int = 128  # per-frame min pixels = pixels_factor * 28 * 28
  total_pixels: int = int(128000 * 28 * 28 * 0.9)  # pixel budget over all frames of a video
  image_min_pixels: int = 4 * 28 * 28  # still images (visual QA)
  image_max_pixels: int = 256 * 28 * 28

  @classmethod
  def from_config(cls, video: Mapping[str, Any]) -> "VideoSpec":
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: video[k] for k in video.keys() if k in fields})


def _round_by(x: float, f: int) -> int:
  return round(x / f) * f


def _ceil_by(x: float, f: int) -> int:
  return math.ceil(x / f) * f


def _floor_by(x: float, f: int) -> int:
  return math.floor(x / f) * f


def num_frames(total_frames: int, native_fps: float, spec: VideoSpec = VideoSpec()) -> int:
  """Number of frames sampled from a video of `total_frames` frames at `native_fps`."""
  if total_frames < spec.frame_factor:
    raise ValueError(f"a video needs at least {spec.frame_factor} frames, got {total_frames}")
  lo = _ceil_by(spec.min_frames, spec.frame_factor)
  hi = _floor_by(min(spec.max_frames, total_frames), spec.frame_factor)
  n = total_frames / native_fps * spec.fps
  n = min(min(max(n, lo), hi), total_frames)
  return _floor_by(n, spec.frame_factor)


def frame_indices(total_frames: int, n: int) -> np.ndarray:
  """Indices of the `n` sampled frames: linspace(0, total - 1, n) rounded half to even."""
  return np.round(np.linspace(0, total_frames - 1, n)).astype(np.int64)


def sample_fps(n: int, total_frames: int, native_fps: float) -> float:
  """Frames per second of the sampled clip, as the reference reports it."""
  return n / max(total_frames, 1e-6) * native_fps


def smart_resize(height: int, width: int, factor: int = PATCH_FACTOR,
                 min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280) -> tuple[int, int]:
  """(h, w) multiples of `factor` near (height, width), area within [min, max] (one pass).

  Rounds each side to `factor`; if the area is above `max_pixels`, scales the original down by
  sqrt(area / max) and floors; if below `min_pixels`, scales up and ceils. The branches are
  checked once, so the result may land slightly outside the range (as in the reference).
  """
  if height < factor or width < factor:
    raise ValueError(f"image of {height}x{width} (HxW) is smaller than {factor} pixels on a side")
  if max(height, width) / min(height, width) > 200:
    raise ValueError(f"image of {height}x{width} (HxW) has an aspect ratio above 200")
  h = max(factor, _round_by(height, factor))
  w = max(factor, _round_by(width, factor))
  if h * w > max_pixels:
    beta = math.sqrt(height * width / max_pixels)
    h = max(factor, _floor_by(height / beta, factor))
    w = max(factor, _floor_by(width / beta, factor))
  elif h * w < min_pixels:
    beta = math.sqrt(min_pixels / (height * width))
    h = _ceil_by(height * beta, factor)
    w = _ceil_by(width * beta, factor)
  return h, w


def frame_pixel_bounds(n: int, spec: VideoSpec = VideoSpec()) -> tuple[int, int]:
  """(min_pixels, max_pixels) of each frame of an `n`-frame sample."""
  min_pixels = spec.pixels_factor * PATCH_FACTOR * PATCH_FACTOR
  max_pixels = max(min(min_pixels, spec.total_pixels / n * spec.frame_factor),
                   int(min_pixels * 1.05))
  return min_pixels, int(max_pixels)


def frame_size(height: int, width: int, n: int, spec: VideoSpec = VideoSpec()) -> tuple[int, int]:
  """(h, w) every frame of an `n`-frame sample of a `height` x `width` video is resized to."""
  lo, hi = frame_pixel_bounds(n, spec)
  return smart_resize(height, width, PATCH_FACTOR, lo, hi)


# ---------------------------------------------------------------------------------------------
# Antialiased bicubic resize.


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Antialiased bicubic resize of uint8 frames [T, H, W, C] to [T, height, width, C] uint8.

  Each channel is resampled in floating point (PIL's "F" mode runs the same a = -0.5,
  scale-widened bicubic filter as torch's antialiased interpolate) and rounded once at the end,
  so the result equals the reference's torchvision resize up to float rounding ties (at most 1
  grey level on a fraction of a percent of pixels), unlike PIL's 8-bit path, which rounds
  between its two passes.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  frames = np.asarray(frames)
  if frames.shape[1:3] == (height, width):
    return frames.astype(np.uint8, copy=False)
  out = np.empty((frames.shape[0], height, width, frames.shape[3]), np.float32)

  def plane(tc):
    t, c = tc
    image = Image.fromarray(frames[t, :, :, c].astype(np.float32), mode="F")
    out[t, :, :, c] = np.asarray(image.resize((width, height), Image.BICUBIC))

  planes = [(t, c) for t in range(frames.shape[0]) for c in range(frames.shape[3])]
  if len(planes) > 3:
    list(_pool().map(plane, planes))  # PIL releases the GIL while resampling
  else:
    for tc in planes:
      plane(tc)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _pool():
  return concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1),
                                               thread_name_prefix="resize")


# ---------------------------------------------------------------------------------------------
# Decoding.


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
  """Sampled, resized frames of one video and where they came from."""
  frames: np.ndarray  # uint8 [n, h, w, 3]
  timestamps: np.ndarray  # float64 [n]: seconds of the original video
  indices: np.ndarray  # int64 [n]: frame numbers in the original video
  sample_fps: float
  native_fps: float
  total_frames: int
  duration: float  # seconds
  original_size: tuple[int, int]  # (W, H) of the decoded video

  @property
  def size(self) -> tuple[int, int]:
    """(W, H) of the resized frames (the record's `image_size` for videos)."""
    return int(self.frames.shape[2]), int(self.frames.shape[1])


def decode_video(path: str, spec: VideoSpec = VideoSpec(), num_threads: int = 0) -> DecodedVideo:
  """Decodes, samples and resizes a video file; raises ValueError naming the path if unreadable."""
  import decord  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f"video {path!r} does not exist")
  try:
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
    total = len(reader)
    native_fps = float(reader.get_avg_fps())
  except Exception as e:  # decord raises its own DECORDError (a RuntimeError) and others.
    raise ValueError(f"video {path!r} cannot be decoded: {e}") from e
  if total < spec.frame_factor or not native_fps > 0:
    raise ValueError(f"video {path!r} has {total} frames at {native_fps} fps; expected at least "
                     f"{spec.frame_factor} frames and a positive frame rate")
  n = num_frames(total, native_fps, spec)
  idx = frame_indices(total, n)
  try:
    raw = reader.get_batch(idx.tolist()).asnumpy()
  except Exception as e:
    raise ValueError(f"video {path!r} cannot be decoded at frames {idx.tolist()}: {e}") from e
  h, w = frame_size(raw.shape[1], raw.shape[2], n, spec)
  return DecodedVideo(
      frames=resize_frames(raw, h, w), timestamps=idx / native_fps, indices=idx,
      sample_fps=sample_fps(n, total, native_fps), native_fps=native_fps, total_frames=total,
      duration=total / native_fps, original_size=(int(raw.shape[2]), int(raw.shape[1])))


def load_image(path: str, spec: VideoSpec = VideoSpec()) -> tuple[np.ndarray, tuple[int, int]]:
  """A still image (visual QA) resized as the reference does (PIL bicubic to the smart size).

  Returns:
    (uint8 [h, w, 3], original (W, H)).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f"image {path!r} does not exist")
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
  except Exception as e:
    raise ValueError(f"image {path!r} cannot be read: {e}") from e
  h, w = smart_resize(im.height, im.width, PATCH_FACTOR, spec.image_min_pixels,
                      spec.image_max_pixels)
  original = (im.width, im.height)
  return np.asarray(im.resize((w, h), Image.BICUBIC)), original


def resize_image_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """One uint8 image [H, W, 3] resized with the frame filter (used for key-frame JPEGs)."""
  return resize_frames(np.asarray(image)[None], height, width)[0]
