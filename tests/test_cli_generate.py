"""`vcoach generate` end to end on a tiny random checkpoint + the tiny tokenizer + a real clip."""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import pytest

from conftest import DATA_DIR
from vcoach_jax import cli
from vcoach_jax import model as vm
from vcoach_jax.data import chat
from vcoach_jax.data import tokenizer as tokenizer_lib
from vcoach_jax.data import video as video_lib
from vcoach_jax.sampling import Sampler, SamplingConfig

VIDEO = str(DATA_DIR / "example_22s_640x360.mp4")
QUESTION = "Where is the red ball when it stops?"
SMALL = ["--set", "video.max_frames=4", "--set", "video.pixels_factor=2",
         "--max-new-tokens", "6"]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
  """A random tiny model whose special ids are the tiny tokenizer's, saved with its tokenizer:
  the session's `tiny_checkpoint` (conftest)."""
  return str(tiny_checkpoint)


def test_greedy_answer_equals_sampler_on_the_same_prompt(checkpoint, capsys):
  assert cli.main(["generate", "--checkpoint", checkpoint, "--video", VIDEO,
                   "--question", QUESTION, *SMALL]) == 0
  captured = capsys.readouterr()
  assert "4 frames" in captured.err and "greedy" in captured.err
  # The same prompt built by hand (§6 frames, §8.2 prompt) and sampled greedily.
  spec = video_lib.VideoSpec(max_frames=4, pixels_factor=2)
  video = video_lib.decode_video(VIDEO, spec)
  prompt = chat.build_video_prompt("temporal-spatial free-form QA", QUESTION, list(video.frames),
                                   list(video.timestamps), video.duration,
                                   chat.PromptTexts.load())
  assert "Frame 4 at" in prompt.text and QUESTION in prompt.text and "Hint" not in prompt.text
  tok = tokenizer_lib.load_tokenizer(checkpoint)
  model = vm.load_hf(checkpoint)
  inputs = vm.prepare_inputs(model.config, chat.Processor(tok)(prompt))
  want = Sampler(model, tok).generate(inputs, SamplingConfig(greedy=True, max_new_tokens=6),
                                      jax.random.key(0))
  assert captured.out == want.texts[0] + "\n"


def test_several_samples_and_bad_input(checkpoint, capsys, tmp_path):
  assert cli.main(["generate", "--checkpoint", checkpoint, "--video", VIDEO, "--question",
                   QUESTION, "--num-samples", "2", "--seed", "3", *SMALL]) == 0
  out = capsys.readouterr().out
  assert out.count("--- sample ") == 2
  missing = str(tmp_path / "nope.mp4")
  assert cli.main(["generate", "--checkpoint", checkpoint, "--video", missing, "--question",
                   "q"]) == 2
  assert missing in capsys.readouterr().err
  # A tokenizer from another model: the image-token ids disagree.
  bad = tmp_path / "bad"
  bad.mkdir()
  shutil.copytree(checkpoint, bad, dirs_exist_ok=True)
  cfg = json.loads((pathlib.Path(checkpoint) / "config.json").read_text())
  cfg["image_token_id"] += 1
  (bad / "config.json").write_text(json.dumps(cfg))
  assert cli.main(["generate", "--checkpoint", str(bad), "--video", VIDEO, "--question", "q",
                   *SMALL]) == 2
  assert "<|image_pad|>" in capsys.readouterr().err
