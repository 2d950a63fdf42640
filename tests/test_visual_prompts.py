"""Visual-prompt renderers (docs/design.md §8.5): known values of the reference darken, invariants of
circle / numbers / attention, determinism and shapes."""

from __future__ import annotations

import numpy as np
import pytest

from vcoach_jax.prompting import visual_prompts as vp


def _frames(f=2, h=100, w=120, value=None, seed=0):
  if value is not None:
    return np.full((f, h, w, 3), value, np.uint8)
  return np.random.default_rng(seed).integers(0, 256, (f, h, w, 3)).astype(np.uint8)


# --- darken ------------------------------------------------------------------------------------


def test_darken_known_values_200_to_60():
  frames = _frames(1, 100, 100, value=200)
  out = vp.darken(frames, [[[0.25, 0.25, 0.5, 0.5]]])
  # Box 25..50 px, padded by 10 -> rows/cols 15..59 inclusive stay, the rest is 200 * 0.3 = 60.
  assert (out[0, 15:60, 15:60] == 200).all()
  inside = np.zeros((100, 100), bool)
  inside[15:60, 15:60] = True
  assert (out[0][~inside] == 60).all()


def test_darken_truncates_pads_and_clips():
  frames = _frames(1, 100, 100, value=200)
  # 0.259 * 100 = 25.9 -> 25 (truncation), then -10 -> 15; 0.519 -> 51 + 10 -> 61 exclusive.
  out = vp.darken(frames, [[[0.259, 0.259, 0.519, 0.519]]])
  assert out[0, 15, 15, 0] == 200 and out[0, 14, 15, 0] == 60 and out[0, 15, 14, 0] == 60
  assert out[0, 60, 60, 0] == 200 and out[0, 61, 60, 0] == 60 and out[0, 60, 61, 0] == 60
  # Near the borders the padded box is clipped to the image.
  out = vp.darken(frames, [[[0.02, 0.03, 0.1, 0.1], [0.95, 0.9, 1.0, 1.0]]])
  assert (out[0, :20, :20] == 200).all() and out[0, 20, 20, 0] == 60
  assert (out[0, 80:, 85:] == 200).all() and out[0, 79, 85, 0] == 60


def test_darken_arithmetic_on_random_frames():
  frames = _frames(3, 60, 90, seed=1)
  boxes = [[[0.1, 0.1, 0.3, 0.4]], [], [[0.5, 0.2, 0.9, 0.6], [0.0, 0.7, 0.2, 1.0]]]
  out = vp.darken(frames, boxes)
  mask = vp.darken_mask(*vp.pad_boxes(boxes, 3), 60, 90)
  expected = (frames.astype(np.float64) * 0.3).astype(np.uint8)
  np.testing.assert_array_equal(out[mask], frames[mask])
  np.testing.assert_array_equal(out[~mask], expected[~mask])
  assert not mask[1].any()  # a frame without boxes is darkened entirely
  # Each frame uses its own boxes.
  np.testing.assert_array_equal(out[0], vp.darken(frames[:1], boxes[:1])[0])


# --- circle ------------------------------------------------------------------------------------


def _ellipse_points(box, h, w, n=4000):
  x1, y1, x2, y2 = np.asarray(box) * [w, h, w, h]
  cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
  ax, ay = (x2 - x1) / 2 * np.sqrt(2), (y2 - y1) / 2 * np.sqrt(2)
  t = np.linspace(0, 2 * np.pi, n, endpoint=False)
  return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1)


def test_circle_pixels_red_and_near_the_ellipse():
  h, w = 200, 240
  frames = _frames(1, h, w, value=90)
  box = [0.3, 0.35, 0.6, 0.55]
  out = vp.circle(frames, [[box]])
  changed = np.argwhere((out[0] != frames[0]).any(-1))
  assert len(changed) > 100
  pts = _ellipse_points(box, h, w)
  centres = changed[:, ::-1] + 0.5  # (x, y)
  dist = np.sqrt(((centres[:, None] - pts[None]) ** 2).sum(-1)).min(1)
  lw = vp.circle_width(h, w)
  assert lw == 2 and dist.max() <= lw / 2 + 1.0
  # Pixels fully covered are pure red; partly covered ones lie between grey and red.
  full = (out[0] == (255, 0, 0)).all(-1)
  assert full.sum() > 50
  sel = out[0][tuple(changed.T)]
  assert (sel[:, 0] >= 90).all() and (sel[:, 1] <= 90).all() and (sel[:, 2] <= 90).all()
  # The ellipse passes through the box corners.
  x1, y1 = int(box[0] * w), int(box[1] * h)
  assert ((out[0, y1 - 1:y1 + 2, x1 - 1:x1 + 2] != 90).any())


def test_circle_width_scales_with_frame():
  assert vp.circle_width(56, 84) == 2 and vp.circle_width(448, 448) == 4
  assert vp.circle_width(1080, 1920) == 11


# --- numbers -----------------------------------------------------------------------------------


def test_numbers_only_changes_the_corner():
  h, w = 448, 448
  frames = _frames(3, h, w, seed=2)
  out = vp.numbers(frames, [1, 12, 305])
  bh = 7 * vp.number_layout(h)[0] + 2 * vp.number_layout(h)[1]
  assert bh == 36 and abs(bh - 0.08 * h) <= 1  # ~8% of the frame height
  for i, n in enumerate([1, 12, 305]):
    diff = (out[i] != frames[i]).any(-1)
    ys, xs = np.nonzero(diff)
    assert ys.max() < bh and xs.max() < bh * len(str(n))
    # The label box is only black and white.
    box = out[i, :bh, :xs.max() + 1]
    assert set(np.unique(box)) <= {0, 255}
  np.testing.assert_array_equal(out[:, bh:], frames[:, bh:])


def test_numbers_draws_the_digit_glyphs():
  h = 448
  s, m = vp.number_layout(h)
  out = vp.numbers(np.zeros((1, h, h, 3), np.uint8) + 128, [7])
  glyph = out[0, m:m + 7 * s:s, m:m + 5 * s:s, 0] == 255  # one sample per font pixel
  np.testing.assert_array_equal(glyph, vp.FONT[7])
  out2 = vp.numbers(np.zeros((1, h, h, 3), np.uint8) + 128, [47])
  glyph4 = out2[0, m:m + 7 * s:s, m:m + 5 * s:s, 0] == 255
  np.testing.assert_array_equal(glyph4, vp.FONT[4])


# --- attention ---------------------------------------------------------------------------------


def test_attention_change_decays_away_from_the_box():
  h, w = 120, 160
  frames = _frames(1, h, w, value=40)
  box = [0.4, 0.4, 0.6, 0.6]
  out = vp.attention(frames, [[box]])
  cy, cx = int(0.5 * h), int(0.5 * w)
  # Along a ray from the box centre every channel falls monotonically to the dimmed level 32:
  # the overlay's change decays away from the box, leaving only the slight dimming.
  ray = out[0, cy, cx:].astype(int)
  assert (np.diff(ray, axis=0) <= 0).all()
  change = np.abs(ray - 32).sum(-1)
  assert change[0] > 150 and change[-1] == 0
  # Far from the box only the dimming remains: 40 * 0.8 = 32.
  assert (out[0, 0, 0] == 32).all() and (out[0, -1, -1] == 32).all()
  # The box centre is tinted warm (more red than blue).
  assert out[0, cy, cx, 0] > out[0, cy, cx, 2] + 40


# --- all renderers -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", vp.PROMPT_TYPES)
def test_shapes_dtype_determinism(kind):
  frames = _frames(4, 56, 84, seed=3)
  boxes = [[[0.1, 0.1, 0.5, 0.5]], [[0.2, 0.3, 0.4, 0.9]], [], [[0.0, 0.0, 1.0, 1.0]]]
  a = vp.render(kind, frames, boxes, indices=[1, 2, 3, 10])
  b = vp.render(kind, frames.copy(), boxes, indices=[1, 2, 3, 10])
  assert a.shape == frames.shape and a.dtype == np.uint8
  np.testing.assert_array_equal(a, b)
  if kind == "raw":
    np.testing.assert_array_equal(a, frames)
  else:
    assert (a != frames).any()
  # Vectorised over frames: the same as rendering each frame alone.
  for i in range(4):
    np.testing.assert_array_equal(
        a[i], vp.render(kind, frames[i:i + 1], boxes[i:i + 1], indices=[[1, 2, 3, 10][i]])[0])


@pytest.mark.parametrize("kind", ["darken", "circle", "attention"])
def test_chunking_does_not_change_pixels(kind, monkeypatch):
  frames = _frames(5, 56, 84, seed=4)
  boxes = [[[0.1, 0.1, 0.5, 0.5]], [], [[0.2, 0.3, 0.4, 0.9], [0.0, 0.0, 0.3, 0.2]],
           [[0.6, 0.6, 1.0, 1.0]], [[0.3, 0.3, 0.35, 0.4]]]
  whole = vp.render(kind, frames, boxes)
  monkeypatch.setattr(vp, "CHUNK_PIXELS", 2 * 56 * 84)  # chunks of 2 frames
  np.testing.assert_array_equal(vp.render(kind, frames, boxes), whole)


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match="unknown prompt type"):
    vp.render("blur", _frames(1), [[]])
  with pytest.raises(ValueError, match="uint8"):
    vp.render("darken", np.zeros((1, 8, 8, 3), np.float32), [[]])
  with pytest.raises(ValueError, match="boxes for"):
    vp.render("circle", _frames(2), [[]])


# --- records -----------------------------------------------------------------------------------

RECORD = {
    "id": "r1", "key_frames": [{"idx": 3, "time": 1.5}, {"idx": 8, "time": 4.0}],
    "key_items": {"3": {"red ball": [[0.1, 0.1, 0.3, 0.3]]},
                  "8": {"red ball": [[0.6, 0.6, 0.8, 0.8]], "blue cube": [[0.0, 0.5, 0.2, 0.7]]}},
}


def test_key_frame_boxes_own_or_all():
  own = vp.key_frame_boxes(RECORD)
  assert [len(b) for b in own] == [1, 2]
  every = vp.key_frame_boxes(RECORD, per_key_frame=False)
  assert [len(b) for b in every] == [3, 3]


def test_prompt_key_frames_uses_each_key_frames_boxes():
  frames = _frames(2, 100, 100, value=200)
  out = vp.prompt_key_frames(RECORD, frames, "darken")
  assert out[0, 20, 20, 0] == 200 and out[0, 70, 70, 0] == 60
  assert out[1, 20, 20, 0] == 60 and out[1, 70, 70, 0] == 200
  ref = vp.prompt_key_frames(RECORD, frames, "darken", per_key_frame_boxes=False)
  assert ref[0, 70, 70, 0] == 200 and ref[1, 20, 20, 0] == 200
  with pytest.raises(ValueError, match="record id 'r1'"):
    vp.prompt_key_frames(RECORD, frames[:1], "darken")


# --- prompted examples and hints (docs/design.md §8.2, §8.4.3) ---------------------------------------

from vcoach_jax.data import chat  # noqa: E402
from vcoach_jax.data import pipeline  # noqa: E402
from vcoach_jax.data import synthetic  # noqa: E402
from vcoach_jax.data import tfds_stgr  # noqa: E402
from vcoach_jax.prompting import hints  # noqa: E402

TEXTS = chat.PromptTexts.load()
WORLD = synthetic.SyntheticWorld(synthetic.WorldSpec(seed=3, max_frames=6))


def _example(index):
  """A decoded example (the TFDS feature dict) of the synthetic world."""
  s = WORLD.sample(index)
  size = (s.frames.shape[2], s.frames.shape[1])
  keys = np.asarray(s.key_frame_images).reshape(-1, size[1], size[0], 3)
  return tfds_stgr.example(s.record, s.frames, s.times, keys, size, size, 2.0, len(s.times) / 2)


def _user_turn(prompt):
  return prompt.text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]


@pytest.mark.parametrize("kind", vp.PROMPT_TYPES[1:])
def test_temporal_spatial_prompt_draws_on_key_frames_and_appends_hint(kind):
  ex = _example(0)  # temporal-spatial
  assert ex["task"] == synthetic.records_lib.TASK_ST and len(ex["key_frames"])
  raw = pipeline.build_prompt(ex, TEXTS)  # no visual prompt, no hint
  prompt = hints.prompted_prompt(ex, kind, TEXTS)
  # The hint ends the user turn, right after the question.
  assert _user_turn(prompt) == _user_turn(raw) + "\n" + hints.hint(kind, TEXTS)
  assert _user_turn(raw).endswith(ex["question"])
  # `raw` (what a hard sample gets without a selector) still has a hint of its own.
  raw_type = hints.prompted_prompt(ex, "raw", TEXTS)
  assert _user_turn(raw_type) == _user_turn(raw) + "\n" + hints.hint("raw", TEXTS)
  # Key frames carry the drawing (numbered with their position in the frame list); sampled
  # frames are untouched.
  record = synthetic.SyntheticWorld(WORLD.spec).sample(0).record
  positions = [n for n, k in enumerate(prompt.is_key_frame, start=1) if k]
  drawn = vp.prompt_key_frames(record, ex["key_frames"], kind, positions)
  keys = [im for im, k in zip(prompt.images, prompt.is_key_frame) if k]
  np.testing.assert_array_equal(np.stack(keys), drawn)
  for a, b, k in zip(prompt.images, raw.images, prompt.is_key_frame):
    assert (not k) == np.array_equal(a, b) or kind == "raw"


def test_other_tasks_get_only_the_hint_by_default():
  ex = _example(1)  # temporal QA (MCQ): no key frames in its prompt
  prompt = hints.prompted_prompt(ex, "circle", TEXTS)
  raw = hints.prompted_prompt(ex, "raw", TEXTS)
  assert _user_turn(prompt).endswith(ex["question"] + "\n" + TEXTS.hints["circle"])
  for a, b in zip(prompt.images, raw.images):
    np.testing.assert_array_equal(a, b)
  # The option draws on the sampled frames nearest the key times (when the record has them).
  st = _example(0)
  ex2 = hints.prompted_example(st, "darken", hints.PromptOptions(draw_on="key_and_nearest"))
  changed = [i for i in range(len(st["frames"])) if not np.array_equal(ex2["frames"][i],
                                                                       st["frames"][i])]
  nearest = sorted({int(np.argmin(np.abs(st["timestamps"] - t))) for t in st["key_frame_times"]})
  assert changed == nearest


def test_hint_names_unknown_types():
  # Every type has a distinct, non-empty hint: a `raw` hard prompt is not the raw prompt again.
  assert len({hints.hint(t, TEXTS) for t in vp.PROMPT_TYPES}) == len(vp.PROMPT_TYPES)
  assert all(hints.hint(t, TEXTS) for t in vp.PROMPT_TYPES)
  with pytest.raises(ValueError, match="unknown prompt type 'blur'"):
    hints.hint("blur", TEXTS)


def test_key_frame_numbers_fall_back_to_the_nearest_sampled_frame():
  """A key frame inside the clip is numbered by its own slot; one the prompt leaves out (past the
  last sampled frame) by the slot of the sampled frame nearest its time."""
  example = {"task": b"temporal-spatial free-form QA", "video_sample_fps": 1.0,
             "timestamps": np.array([0.0, 1.0, 2.0, 3.0], np.float32),
             "key_frame_times": np.array([1.5, 10.0], np.float32)}
  assert hints.frame_positions(example) == ([3, None], [1, 2, 4, 5])
  assert hints.key_frame_numbers(example) == [3, 5]
