"""Which image comes where in a video prompt, and the time each one is labelled with.

Two rules (`config.video.timestamps`, documented in docs/prompts.md):

  exact      each sampled frame is labelled with its true time in the original video; key frames
             are inserted by true time (after every sampled frame at or before them) and labelled
             with their time rounded to whole seconds; key frames after the last sampled frame
             are left out. The closing line gives the video's length.
  reference  the released trainers' rule. With fps' the sampling rate of the clip (frames kept
             per second of video) and n the number of sampled frames: sampled frame i is
             labelled round(i / fps', 1); the key frames are walked in the record's order (not
             sorted) while walking the sampled frames: at frame i, if the next key frame's
             rounded time is <= int(i / fps'), it is emitted before frame i (labelled with that
             rounded time, an integer) and the walk stays on frame i; key frames still pending
             after the last sampled frame are left out. The closing line's whole seconds are
             int(n / fps'). The released SFT differs (`sft=True`): key times are compared and
             labelled as they are (no rounding), and the temporal-spatial prompt has no closing
             line.

`schedule` returns the order as `Slot`s; frame numbers in the prompt count every slot.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

TIMESTAMPS = ("exact", "reference")


class Slot(NamedTuple):
  """One image of the prompt: `kind` 'frame' (sampled frame `index`) or 'key' (key frame
  `index` in the record's order), and the time its label shows (float, or int for a key frame
  whose label is whole seconds)."""
  kind: str
  index: int
  label: float | int


def exact_order(times: Sequence[float], key_times: Sequence[float]) -> list[tuple[str, int]]:
  """Order of the images by true time: [('frame', i) | ('key', j)]; late key frames dropped.

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


def reference_schedule(num_frames: int, sample_fps: float, key_times: Sequence[float], *,
                       raw_key_times: bool = False) -> list[Slot]:
  """The released trainers' order and labels (module docstring); `raw_key_times`: the released
  SFT's variant (key times compared and labelled unrounded)."""
  if not sample_fps > 0:
    raise ValueError(f"reference timestamps need the clip's sampling fps > 0, got {sample_fps!r}")
  fps = float(sample_fps)
  keys = [float(t) if raw_key_times else round(float(t)) for t in key_times]
  slots, i, k = [], 0, 0
  while i < num_frames:
    if k < len(keys) and int(i / fps) >= keys[k]:
      slots.append(Slot("key", k, keys[k]))
      k += 1
    else:
      slots.append(Slot("frame", i, round(i / fps, 1)))
      i += 1
  return slots


def schedule(times: Sequence[float], key_times: Sequence[float], timestamps: str = "exact",
             sample_fps: float | None = None, *, sft: bool = False) -> list[Slot]:
  """The prompt's images in order with their labels, by the rule `timestamps`."""
  if timestamps == "exact":
    return [Slot(kind, i, float(times[i]) if kind == "frame" else int(round(key_times[i])))
            for kind, i in exact_order(list(times), list(key_times))]
  if timestamps == "reference":
    if sample_fps is None:
      raise ValueError("timestamps = 'reference' needs the clip's sampling fps (video_sample_fps)")
    return reference_schedule(len(times), sample_fps, key_times, raw_key_times=sft)
  raise ValueError(f"config key 'video.timestamps' must be one of {TIMESTAMPS}, got {timestamps!r}")


def closing_seconds(duration: float, num_frames: int, timestamps: str = "exact",
                    sample_fps: float | None = None) -> tuple[float, int]:
  """(seconds, whole seconds) of the closing line: the video's length (exact) or n / fps' and
  int(n / fps') (reference)."""
  if timestamps == "reference":
    if not sample_fps:
      raise ValueError("timestamps = 'reference' needs the clip's sampling fps (video_sample_fps)")
    seconds = num_frames / float(sample_fps)
  else:
    seconds = float(duration)
  return seconds, int(seconds)
