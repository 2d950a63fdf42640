"""Prompt construction (docs/design.md §8.2) and processor parity with transformers 4.51.3."""

import os

os.environ.setdefault("USE_TF", "0")

import json
import re

import numpy as np
import pytest

from vcoach_jax.data import chat
from vcoach_jax.data import records
from vcoach_jax.data import tokenizer as tokenizer_lib

TEXTS = chat.PromptTexts.load()


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
  """The session's tiny tokenizer (conftest: trained on the synthetic world and the prompts)."""
  return tiny_tokenizer


def _frames(n, h=56, w=84, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _user_turn(text):
  return text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


@pytest.mark.parametrize("task", records.TASKS[:3] + records.TASKS[4:])
def test_video_prompt_structure(task):
  times = [0.0, 1.25, 2.5, 3.75]
  p = chat.build_video_prompt(task, "Where is the ball?", _frames(4), times, 4.0, TEXTS)
  assert p.text.startswith(f"<|im_start|>system\n{TEXTS.system[task]}<|im_end|>\n")
  assert p.text.endswith("<|im_end|>\n<|im_start|>assistant\n")
  lines = _user_turn(p.text).split("\n")
  vision = "<|vision_start|><|image_pad|><|vision_end|>"
  # One decimal, 1-based frame numbers; 1.25 rounds to 1.2 (format() rounds half to even).
  assert lines[:4] == [f"Frame 1 at 0.0s:{vision}", f"Frame 2 at 1.2s:{vision}",
                       f"Frame 3 at 2.5s:{vision}", f"Frame 4 at 3.8s:{vision}"]
  assert lines[4] == "The video is 4.0 seconds long."
  assert lines[5] == "Where is the ball?" and len(lines) == 6
  assert len(p.images) == 4 and p.text.count("<|image_pad|>") == 4


def test_each_task_has_its_own_system_text():
  assert len({TEXTS.system[t] for t in records.TASKS}) == 6


def test_key_frames_inserted_in_time_order_late_ones_dropped():
  frames, keys = _frames(4), _frames(3, seed=1)
  times = [0.0, 2.0, 4.0, 6.0]
  p = chat.build_video_prompt(records.TASK_ST, "Q?", frames, times, 7.0, TEXTS,
                              key_frames=keys, key_times=[4.6, 1.4, 6.5], prompt_type="raw")
  labels = re.findall(r"Frame (\d+) at ([\d.]+)s:", _user_turn(p.text))
  # 1.4 s goes after frame at 0.0, 4.6 s after 4.0 (labelled 5 s); 6.5 s > 6.0 s is dropped.
  assert labels == [("1", "0.0"), ("2", "1"), ("3", "2.0"), ("4", "4.0"), ("5", "5"),
                    ("6", "6.0")]
  assert p.is_key_frame == [False, True, False, False, True, False]
  assert p.images[1] is keys[1] and p.images[4] is keys[0]
  assert p.times == [0.0, 1.4, 2.0, 4.0, 4.6, 6.0]


def test_key_frames_ignored_outside_the_temporal_spatial_task():
  p = chat.build_video_prompt(records.TASK_TG, "Q?", _frames(2), [0.0, 1.0], 2.0, TEXTS,
                              key_frames=_frames(1), key_times=[0.5])
  assert len(p.images) == 2 and not any(p.is_key_frame)


@pytest.mark.parametrize("prompt_type", ["darken", "circle", "numbers", "attention"])
def test_hint_ends_the_user_turn(prompt_type):
  p = chat.build_video_prompt(records.TASK_ST, "What moved?", _frames(2), [0.0, 1.0], 2.0, TEXTS,
                              key_frames=_frames(1), key_times=[1.0], prompt_type=prompt_type)
  user = _user_turn(p.text)
  assert user.endswith("What moved?\n" + TEXTS.hints[prompt_type])
  raw = chat.build_video_prompt(records.TASK_ST, "What moved?", _frames(2), [0.0, 1.0], 2.0,
                                TEXTS, key_frames=_frames(1), key_times=[1.0])
  assert _user_turn(raw.text).endswith("What moved?")


def test_image_prompt():
  p = chat.build_image_prompt("Find the cup.", _frames(1)[0], TEXTS, prompt_type="circle")
  assert TEXTS.system[records.TASK_VQA] in p.text
  assert _user_turn(p.text) == (f"{TEXTS.image_label}<|vision_start|><|image_pad|><|vision_end|>"
                                f"\nFind the cup.\n{TEXTS.hints['circle']}")


def test_prompts_file_errors_name_file_and_key(tmp_path):
  raw = json.load(open(chat.DEFAULT_PROMPTS_FILE))
  del raw["system"]["visual QA"]
  path = tmp_path / "p.json"
  path.write_text(json.dumps(raw))
  with pytest.raises(ValueError, match=r"p\.json.*visual QA"):
    chat.PromptTexts.load(str(path))


def test_processor_parity_with_transformers(tokenizer):
  transformers = pytest.importorskip("transformers")
  from transformers.models.qwen2_5_vl import Qwen2_5_VLProcessor
  frames, keys = _frames(3, 112, 196), _frames(1, 112, 196, seed=3)
  p = chat.build_video_prompt(records.TASK_ST, "What is red?", frames, [0.0, 1.0, 2.0], 2.5,
                              TEXTS, key_frames=keys, key_times=[1.2], prompt_type="darken")
  ours = chat.Processor(tokenizer)(p)
  hf = Qwen2_5_VLProcessor(image_processor=transformers.Qwen2VLImageProcessor(),
                           tokenizer=tokenizer)
  ref = hf(text=[p.text], images=p.images, return_tensors="np")
  np.testing.assert_array_equal(ours["image_grid_thw"], ref["image_grid_thw"])
  np.testing.assert_array_equal(ours["image_grid_thw"], [[1, 8, 14]] * 4)
  assert ours["pixel_values"].shape == ref["pixel_values"].shape == (4 * 8 * 14, 1176)
  np.testing.assert_allclose(ours["pixel_values"], ref["pixel_values"], atol=1e-5, rtol=0)
  np.testing.assert_array_equal(ours["input_ids"], ref["input_ids"])
  image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
  assert (ours["input_ids"] == image_id).sum() == 4 * 8 * 14 // 4


def test_processor_parity_image_and_real_frame_size(tokenizer):
  transformers = pytest.importorskip("transformers")
  from transformers.models.qwen2_5_vl import Qwen2_5_VLProcessor
  image = _frames(1, 224, 420, seed=5)[0]  # the size of a 640x360 video frame
  p = chat.build_image_prompt("Find it.", image, TEXTS)
  ours = chat.Processor(tokenizer)(p)
  hf = Qwen2_5_VLProcessor(image_processor=transformers.Qwen2VLImageProcessor(),
                           tokenizer=tokenizer)
  ref = hf(text=[p.text], images=p.images, return_tensors="np")
  np.testing.assert_allclose(ours["pixel_values"], ref["pixel_values"], atol=1e-5, rtol=0)
  np.testing.assert_array_equal(ours["input_ids"], ref["input_ids"])
  assert chat.Processor().tokens_per_image(224, 420) == 120


def test_processor_rejects_unaligned_images():
  with pytest.raises(ValueError, match="multiple of 28"):
    chat.Processor().patchify([np.zeros((30, 56, 3), np.uint8)])


def test_tiny_tokenizer_round_trip(tokenizer):
  ids = tokenizer_lib.special_ids(tokenizer)
  assert ids == tokenizer_lib.TINY_SPECIAL_IDS
  text = ("<|im_start|>assistant\n<think><obj>red ball</obj><box>[1,2,30,40]</box>at<t>3.5</t>s"
          " zebra</think>\n<answer>yes</answer><|im_end|>")
  enc = tokenizer(text, add_special_tokens=False)["input_ids"]
  assert tokenizer.decode(enc) == text
  assert tokenizer.convert_tokens_to_ids("<think>") in enc
  assert tokenizer.eos_token == "<|im_end|>"


@pytest.mark.parametrize("n", [4, 5])
def test_video_mode_patchify_parity(n):
  transformers = pytest.importorskip("transformers")
  frames = np.stack(_frames(n, 56, 84, seed=n))
  ours, grid = chat.Processor().patchify_video(frames)
  ref = transformers.Qwen2VLImageProcessor()(images=None, videos=[list(frames)],
                                             return_tensors="np")
  np.testing.assert_array_equal(grid, ref["video_grid_thw"])
  np.testing.assert_array_equal(grid, [[(n + 1) // 2, 4, 6]])
  np.testing.assert_allclose(ours, ref["pixel_values_videos"], atol=1e-5, rtol=0)


def _released_shape_file(tmp_path):
  """A prompts file in the released template's shape (this test's own wording): frame lines
  "Frame k at t s: " + vision tokens, an integer-seconds closing line, the image straight before
  the question, hints on the line after the question."""
  raw = json.load(open(chat.DEFAULT_PROMPTS_FILE))
  raw.update(frame_label="Frame {index} at {time}s: ", key_frame_label="Frame {index} at {time}s: ",
             duration_line="Length: {whole_seconds} s.", image_label="", image_separator="")
  raw["hints"] = {t: f"[{t} hint]" for t in chat.HINT_TYPES}
  raw["sft"] = {"frame_label": "Frame {index} at {time}: ",
                "system": {records.TASK_VQA: "SFT image system text."}}
  path = tmp_path / "released_shape.json"
  path.write_text(json.dumps(raw))
  return str(path)


def test_prompts_file_expresses_the_released_template(tmp_path):
  texts = chat.PromptTexts.load(_released_shape_file(tmp_path), timestamps="reference")
  vision = "<|vision_start|><|image_pad|><|vision_end|>"
  frames = _frames(4, 28, 28)
  # 2 s of video at 30 fps, 4 frames: fps' = 2, labels 0.0 0.5 1.0 1.5, closing int(4 / 2) = 2.
  p = chat.build_video_prompt(records.TASK_TG, "When?", frames, [0.0, 0.5, 1.0, 1.5], 2.0, texts,
                              prompt_type="raw", sample_fps=4 / 60 * 30)
  assert _user_turn(p.text) == (f"Frame 1 at 0.0s: {vision}\nFrame 2 at 0.5s: {vision}\n"
                                f"Frame 3 at 1.0s: {vision}\nFrame 4 at 1.5s: {vision}\n"
                                "Length: 2 s.\nWhen?\n[raw hint]")
  img = chat.build_image_prompt("Find it.", frames[0], texts, prompt_type="darken")
  assert _user_turn(img.text) == f"{vision}Find it.\n[darken hint]"
  # The file's `sft` entries: the SFT variant's frame label and system text; the rest inherited.
  sft = texts.for_sft()
  assert sft.frame_label == "Frame {index} at {time}: " and sft.duration_line == texts.duration_line
  assert sft.system[records.TASK_VQA] == "SFT image system text."
  assert sft.system[records.TASK_TG] == texts.system[records.TASK_TG] and sft.sft
  q = chat.build_video_prompt(records.TASK_TG, "When?", frames, [0.0, 0.5, 1.0, 1.5], 2.0, sft,
                              sample_fps=2.0)
  assert _user_turn(q.text).startswith(f"Frame 1 at 0.0: {vision}\n")


def test_prompts_file_placeholders_are_checked(tmp_path):
  raw = json.load(open(chat.DEFAULT_PROMPTS_FILE))
  raw["duration_line"] = "The video lasts {minutes} minutes."
  path = tmp_path / "p.json"
  path.write_text(json.dumps(raw))
  with pytest.raises(ValueError, match=r"p\.json.*'duration_line'.*whole_seconds"):
    chat.PromptTexts.load(str(path))
  raw = json.load(open(chat.DEFAULT_PROMPTS_FILE))
  raw["sft"] = {"hint": "x"}
  path.write_text(json.dumps(raw))
  with pytest.raises(ValueError, match=r"'sft' may only override"):
    chat.PromptTexts.load(str(path))


def test_default_hints_are_non_empty_and_distinct():
  assert all(TEXTS.hints[t] for t in chat.HINT_TYPES)
  assert len(set(TEXTS.hints.values())) == len(chat.HINT_TYPES)
  # No hint unless a prompt type is given; `raw` appends its own.
  plain = chat.build_video_prompt(records.TASK_TG, "Q?", _frames(2), [0.0, 1.0], 2.0, TEXTS)
  raw = chat.build_video_prompt(records.TASK_TG, "Q?", _frames(2), [0.0, 1.0], 2.0, TEXTS,
                                prompt_type="raw")
  assert _user_turn(raw.text) == _user_turn(plain.text) + "\n" + TEXTS.hints["raw"]
