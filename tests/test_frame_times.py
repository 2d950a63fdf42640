"""Frame labels and key-frame insertion: `exact` and the released trainers' `reference` rule
(docs/prompts.md), with known values on several durations and frame rates."""

import re

import numpy as np
import pytest

from vcoach_jax.data import chat
from vcoach_jax.data import frame_times as ft
from vcoach_jax.data import records
from vcoach_jax.data import video

TEXTS = chat.PromptTexts.load()
REF = chat.PromptTexts.load(timestamps="reference")


def _labels(slots):
  return [(s.kind, s.index, s.label) for s in slots]


# (sampled frames n, total frames, native fps) -> labels round(i / fps', 1), closing int(n / fps').
# fps' = n / total * native, in float64 as the released trainers compute it.
@pytest.mark.parametrize("n,total,native,labels,whole", [
    # 60 s at 30 fps: 16 frames at 0.2667 fps; i / fps' = 3.75 i (ties round half to even on the
    # binary value: 3.75000...04 -> 3.8, 11.25 -> 11.2).
    (16, 1800, 30.0, [0.0, 3.8, 7.5, 11.2, 15.0, 18.8, 22.5, 26.2, 30.0, 33.8, 37.5, 41.2, 45.0,
                      48.8, 52.5, 56.2], 60),
    # 60 s at 29.97 fps: labels a hair lower, and the closing line says 59.
    (16, 1798, 29.97, [0.0, 3.7, 7.5, 11.2, 15.0, 18.7, 22.5, 26.2, 30.0, 33.7, 37.5, 41.2, 45.0,
                       48.7, 52.5, 56.2], 59),
    (10, 150, 30.0, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5], 5),  # 5 s: 2 fps
    (4, 30, 30.0, [0.0, 0.2, 0.5, 0.8], 1),  # 1 s: 4 frames at 4 fps (0.25 -> 0.2, 0.75 -> 0.8)
    (8, 100, 25.0, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], 4),  # 4 s at 25 fps
])
def test_reference_labels_and_closing_seconds(n, total, native, labels, whole):
  fps = video.sample_fps(n, total, native)
  slots = ft.reference_schedule(n, fps, [])
  assert [s.label for s in slots] == labels and all(s.kind == "frame" for s in slots)
  assert ft.closing_seconds(123.0, n, "reference", fps)[1] == whole
  # The true times (exact) are idx / native: a 60 s clip's frame 1 is at 4.0 s, not 3.8 s.
  times = video.frame_indices(total, n) / native
  exact = ft.schedule(times, [], "exact")
  assert [s.label for s in exact] == pytest.approx(list(times))


def test_reference_key_frames_in_list_order_late_ones_dropped():
  fps = video.sample_fps(16, 1800, 30.0)  # int(i / fps') = 0, 3, 7, 11, 15, 18, ...
  # Unsorted: 12.4 -> 12, 5.5 -> 6 (half to even), 59.7 -> 60 (past the last labelled second).
  slots = ft.reference_schedule(16, fps, [12.4, 5.5, 59.7])
  assert _labels(slots)[:7] == [("frame", 0, 0.0), ("frame", 1, 3.8), ("frame", 2, 7.5),
                                ("frame", 3, 11.2), ("key", 0, 12), ("key", 1, 6),
                                ("frame", 4, 15.0)]
  assert [s.index for s in slots[7:]] == list(range(5, 16)) and len(slots) == 18
  # Sorted by time, the 5.5 s key frame would have gone in after frame 1 (at 7 >= 6).
  sorted_slots = ft.reference_schedule(16, fps, [5.5, 12.4])
  assert _labels(sorted_slots)[:4] == [("frame", 0, 0.0), ("frame", 1, 3.8), ("key", 0, 6),
                                       ("frame", 2, 7.5)]


def test_reference_key_frames_round_half_to_even_and_go_before_the_frame():
  fps = video.sample_fps(10, 150, 30.0)  # 2 fps: int(i / 2) = 0, 0, 1, 1, 2, 2, 3, 3, 4, 4
  slots = ft.reference_schedule(10, fps, [2.5, 3.5, 4.6])  # -> 2, 4, 5
  assert _labels(slots) == [
      ("frame", 0, 0.0), ("frame", 1, 0.5), ("frame", 2, 1.0), ("frame", 3, 1.5),
      ("key", 0, 2), ("frame", 4, 2.0), ("frame", 5, 2.5), ("frame", 6, 3.0), ("frame", 7, 3.5),
      ("key", 1, 4), ("frame", 8, 4.0), ("frame", 9, 4.5)]  # 5 s > the last second (4): dropped
  # Exact: by true time, after the frames at or before it; 4.6 s > 4.5 s dropped too.
  exact = ft.schedule([i / 2 for i in range(10)], [2.5, 3.5, 4.6], "exact")
  assert [(s.kind, s.index) for s in exact][4:8] == [("frame", 4), ("frame", 5), ("key", 0),
                                                     ("frame", 6)]
  assert exact[6].label == 2  # round(2.5), half to even


def test_reference_sft_variant_uses_raw_key_times():
  fps = video.sample_fps(10, 150, 30.0)
  slots = ft.reference_schedule(10, fps, [3.4, 1.5], raw_key_times=True)
  # 3.4 waits for int(i / 2) = 4 (i = 8); 1.5 is next in the list and goes right after it.
  assert _labels(slots)[8:] == [("key", 0, 3.4), ("key", 1, 1.5), ("frame", 8, 4.0),
                                ("frame", 9, 4.5)]


def test_reference_prompt_text_and_frame_numbers():
  frames = [np.full((28, 28, 3), i, np.uint8) for i in range(10)]
  keys = [np.full((28, 28, 3), 100 + i, np.uint8) for i in range(2)]
  times = list(video.frame_indices(150, 10) / 30.0)
  fps = video.sample_fps(10, 150, 30.0)
  p = chat.build_video_prompt(records.TASK_ST, "Q?", frames, times, 5.0, REF, keys, [3.4, 1.5],
                              sample_fps=fps)
  user = p.text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
  labels = re.findall(r"Frame (\d+) at ([\d.]+)s:", user)
  # Key frames 3.4 -> 3 (inserted at i = 6, int(6 / 2) = 3), then 1.5 -> 2 right after it.
  assert labels == [("1", "0.0"), ("2", "0.5"), ("3", "1.0"), ("4", "1.5"), ("5", "2.0"),
                    ("6", "2.5"), ("7", "3"), ("8", "2"), ("9", "3.0"), ("10", "3.5"),
                    ("11", "4.0"), ("12", "4.5")]
  assert p.is_key_frame == [False] * 6 + [True, True] + [False] * 4
  assert p.images[6] is keys[0] and p.images[7] is keys[1] and p.images[8] is frames[6]
  assert user.endswith("The video is 5.0 seconds long.\nQ?")
  # The SFT variant: raw key times, and no closing line on the temporal-spatial task.
  s = chat.build_video_prompt(records.TASK_ST, "Q?", frames, times, 5.0, REF.for_sft(), keys,
                              [3.4, 1.5], sample_fps=fps)
  user = s.text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
  assert re.findall(r"Frame (\d+) at ([\d.]+)s:", user)[8:10] == [("9", "3.4"), ("10", "1.5")]
  assert "seconds long" not in user and user.endswith("<|vision_end|>\nQ?")
  # Other tasks keep the closing line in SFT too; exact ignores the SFT key-frame rules.
  t = chat.build_video_prompt(records.TASK_TG, "Q?", frames, times, 5.0, REF.for_sft(),
                              sample_fps=fps)
  assert "The video is 5.0 seconds long.\nQ?" in t.text
  e = chat.build_video_prompt(records.TASK_ST, "Q?", frames, times, 5.0, TEXTS.for_sft(), keys,
                              [3.4, 1.5])
  assert "The video is 5.0 seconds long." in e.text


def test_reference_needs_the_sampling_fps_and_the_mode_is_checked():
  with pytest.raises(ValueError, match="sampling fps"):
    chat.build_video_prompt(records.TASK_TG, "Q?", [np.zeros((28, 28, 3), np.uint8)], [0.0], 1.0,
                            REF)
  with pytest.raises(ValueError, match="video.timestamps"):
    chat.PromptTexts.load(timestamps="rounded")


def test_config_field_and_recipes():
  from vcoach_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  default = config_lib.load()
  assert default.video.timestamps == "exact" and default.sft.loss_on == "assistant"
  assert chat.PromptTexts.from_config(default).timestamps == "exact"
  for recipe in ("configs/visioncoach_7b.py", "configs/sft_coldstart.py"):
    cfg = config_lib.load(recipe)
    assert cfg.video.timestamps == "reference"
    assert chat.PromptTexts.from_config(cfg).timestamps == "reference"
  with pytest.raises(config_lib.ConfigError, match="video.timestamps"):
    config_lib.load(None, ["video.timestamps=rounded"])
  with pytest.raises(config_lib.ConfigError, match="sft.loss_on"):
    config_lib.load(None, ["sft.loss_on=all"])
