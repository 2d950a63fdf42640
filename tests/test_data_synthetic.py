"""The synthetic world: deterministic, all six tasks, its own answers score the maximum."""

import os

os.environ.setdefault("USE_TF", "0")

import re

import numpy as np
import pytest

from vcoach_jax.data import records
from vcoach_jax.data import synthetic
from vcoach_jax.data import tokenizer as tokenizer_lib

OPTIONS = {"spatial_iou_mode": "avg", "identity_match_mode": "soft",
           "spatial_norm_mode": "matched", "correct_tempgate": True}
# Maximum total reward per task (docs/design.md §7).
MAX_TOTAL = {records.TASK_ST: 4.0, records.TASK_TG_MCQ: 4.0, records.TASK_TG: 3.0,
             records.TASK_VQA: 3.0, records.TASK_MCQ: 2.0, records.TASK_FREE: 2.0}
HARD = synthetic.WorldSpec(seed=3, distractors=3, occlusion=0.5, max_frames=16, max_objects=3,
                           height=84, width=112)


def test_deterministic_from_seed():
  a, b = synthetic.SyntheticWorld(HARD).sample(5), synthetic.SyntheticWorld(HARD).sample(5)
  assert a.record == b.record and a.completion == b.completion
  np.testing.assert_array_equal(a.frames, b.frames)
  c = synthetic.SyntheticWorld(synthetic.WorldSpec(seed=4)).sample(5)
  assert c.record != a.record


def test_records_cover_all_tasks_and_validate():
  world = synthetic.SyntheticWorld(HARD)
  samples = [world.sample(i) for i in range(12)]
  assert {s.record["task"] for s in samples} == set(records.TASKS)
  for s in samples:
    assert records.validate_record(s.record) == s.record
    t = len(s.times)
    assert s.frames.shape == ((1,) if s.record["task"] == records.TASK_VQA else (t,)) + (84, 112, 3)
    if s.record["task"] != records.TASK_VQA:
      assert 4 <= t <= 16 and t % 2 == 0
      np.testing.assert_allclose(np.diff(s.times), 0.5)


def test_key_items_are_where_the_object_is_drawn():
  world = synthetic.SyntheticWorld(synthetic.WorldSpec(seed=1, occlusion=0.0))
  checked = 0
  for i in range(0, 60, 6):  # the temporal-spatial samples
    s = world.sample(i)
    assert s.record["task"] == records.TASK_ST and s.record["key_frames"]
    for kf in s.record["key_frames"]:
      for name, boxes in s.record["key_items"][str(kf["idx"])].items():
        colour, shape = name.split()
        x1, y1, x2, y2 = np.round(np.array(boxes[0]) * [84, 56, 84, 56]).astype(int)
        patch = s.frames[kf["idx"], y1:y2, x1:x2].reshape(-1, 3)
        hits = (patch == synthetic.COLOURS[colour]).all(-1).mean()
        assert hits > 0.3, (name, shape, hits)
        checked += 1
  assert checked >= 10


def test_reference_answers_score_the_maximum_for_every_task():
  rewards = pytest.importorskip("vcoach_jax.rewards")
  world = synthetic.SyntheticWorld(HARD)
  samples = [world.sample(i) for i in range(36)]
  inputs = [records.reward_sample(s.record, (s.frames.shape[2], s.frames.shape[1]),
                                  step_percent=0.1) for s in samples]
  tasks = [s.record["task"] for s in samples]
  per = rewards.compute([s.completion for s in samples], inputs, OPTIONS)
  total = rewards.total(per, tasks)
  for i, task in enumerate(tasks):
    assert total[i] >= MAX_TOTAL[task] - 1e-3, (task, {k: v[i] for k, v in per.items()})
  # Someone else's completion scores less: the test can fail.
  shuffled = [samples[(i + 6) % len(samples)].completion for i in range(len(samples))]
  worse = rewards.total(rewards.compute(shuffled, inputs, OPTIONS), tasks)
  assert worse.mean() < total.mean() - 0.5


def test_spec_checks():
  with pytest.raises(ValueError, match="multiples of 28"):
    synthetic.SyntheticWorld(synthetic.WorldSpec(height=60))
  with pytest.raises(ValueError, match="unknown task"):
    synthetic.SyntheticWorld(synthetic.WorldSpec(tasks=("video QA",)))
  with pytest.raises(ValueError, match="synthetic.background"):
    synthetic.SyntheticWorld(synthetic.WorldSpec(background="noise"))
  with pytest.raises(ValueError, match=r"synthetic.grid 14 must .* \(max_size 18\)"):
    synthetic.SyntheticWorld(synthetic.WorldSpec(grid=14))


def test_tiny_tokenizer_over_the_corpus(tmp_path):
  tokenizer_lib.build_tiny_tokenizer(synthetic.corpus(n=60), str(tmp_path), vocab_size=512)
  tok = tokenizer_lib.load_tokenizer(str(tmp_path))
  s = synthetic.SyntheticWorld().sample(0)
  ids = tok(s.completion, add_special_tokens=False)["input_ids"]
  assert tok.decode(ids) == s.completion
  assert len(ids) < len(s.completion) / 2  # the BPE learnt the world's words


def test_tokenizer_from_config(tmp_path):
  from vcoach_jax import config as config_lib
  config = config_lib.load(None, ["synthetic.num_train=20", "data.tiny_vocab_size=300"])
  tok = tokenizer_lib.from_config(config, str(tmp_path / "tok"))
  assert len(tok) <= 300 + len(tokenizer_lib.GROUNDING_TAGS)
  assert tokenizer_lib.special_ids(tok)["<|video_pad|>"] == 13
  again = tokenizer_lib.from_config(config, str(tmp_path / "tok"))  # reused, not rebuilt
  assert again.get_vocab() == tok.get_vocab()
  # The prompts' fixed wording is in the corpus: a system text is a few words' worth of tokens.
  from vcoach_jax.data import chat  # pylint: disable=g-import-not-at-top
  system = chat.PromptTexts.load().system["temporal QA"]
  config = config_lib.load(None, ["synthetic.num_train=20", "data.tiny_vocab_size=700"])
  tok = tokenizer_lib.from_config(config, str(tmp_path / "tok700"))
  assert len(tok(system, add_special_tokens=False)["input_ids"]) < len(system) / 3
  # ... and so is the SFT's wording and the chat roles.
  sft_system = chat.PromptTexts.load().for_sft().system[records.TASK_ST]
  assert len(tok(sft_system, add_special_tokens=False)["input_ids"]) < len(sft_system) / 3
  assert [len(tok(r, add_special_tokens=False)["input_ids"]) for r in tokenizer_lib.ROLES] == \
      [1, 1, 1]


def test_lookalike_distractors_share_the_asked_shape():
  free = ("General video QA Free-form",)  # its trace lists every object of the clip
  alike = synthetic.SyntheticWorld(synthetic.WorldSpec(tasks=free, distractors=2, lookalike=1.0))
  plain = synthetic.SyntheticWorld(synthetic.WorldSpec(tasks=free, distractors=2))

  def shapes(world, i):
    names = world.sample(i).record["reasoning_process"].split(": ")[1].split(".")[0]
    return {n.split()[1] for n in names.split(", ")}
  assert all(len(shapes(alike, i)) == 1 for i in range(12))
  assert any(len(shapes(plain, i)) > 1 for i in range(12))
  # lookalike = 0 draws nothing more: the default world is unchanged.
  assert synthetic.SyntheticWorld(synthetic.WorldSpec(lookalike=0.0)).sample(5).completion == \
      synthetic.SyntheticWorld().sample(5).completion


ST = (records.TASK_ST,)


def test_grid_centres_each_object_in_a_cell():
  spec = synthetic.WorldSpec(grid=28, min_size=20, max_size=20, max_speed=8.0, max_frames=8)
  world = synthetic.SyntheticWorld(spec)
  seen = set()
  for i in range(40):
    s = world.sample(i)
    boxes = re.findall(r"<box>\[(\d+),(\d+),(\d+),(\d+)\]</box>", s.completion)
    for x1, y1, x2, y2 in (tuple(map(int, b)) for b in boxes):
      w, h = x2 - x1, y2 - y1
      assert (x1 - (28 - w) // 2) % 28 == 0 and (y1 - (28 - h) // 2) % 28 == 0, s.completion
      assert x2 <= spec.width and y2 <= spec.height
      if w == h == 20:
        seen.add((x1, y1))
  # Every cell of the 3 x 2 grid is used, at its centre: 6 boxes in all.
  assert seen == {(x, y) for x in (4, 32, 60) for y in (4, 32)}
  # Off the grid objects sit anywhere.
  free = synthetic.SyntheticWorld(synthetic.WorldSpec(min_size=20, max_size=20))
  corners = {int(x) for i in range(12)
             for x in re.findall(r"<box>\[(\d+),", free.sample(i).completion)}
  assert corners - {4, 32, 60}


def test_gradient_background_tells_the_position():
  plain = synthetic.SyntheticWorld(synthetic.WorldSpec(tasks=ST)).sample(3)
  world = synthetic.SyntheticWorld(synthetic.WorldSpec(tasks=ST, background="gradient"))
  ramp, other = world.sample(3), world.sample(4)
  assert plain.completion == ramp.completion  # the scene is the same, only the backdrop differs
  empty = np.all(plain.frames == plain.frames[:, :1, :1], axis=-1)  # background pixels
  t, = np.nonzero(empty[:, 0, 0] & empty[:, 0, -1] & empty[:, -1, 0])[0][:1]
  # One fixed ramp in every clip: grey 30 at the top left, +120 red to the right, +120 blue down.
  assert ramp.frames[t, 0, 0].tolist() == [30, 30, 30]
  assert ramp.frames[t, 0, -1].tolist() == [150, 30, 30]
  assert ramp.frames[t, -1, 0].tolist() == [30, 30, 150]
  both = empty[t] & np.all(other.frames[0] == ramp.frames[t], axis=-1)
  assert both.mean() > 0.5  # where neither clip has an object, their pixels are the same
  objects = plain.frames.max(-1) > 180
  np.testing.assert_array_equal(ramp.frames[objects], plain.frames[objects])  # objects keep colour


def test_colours_and_shapes_limit_the_names():
  spec = synthetic.WorldSpec(tasks=ST, named=True, colours=3, shapes=2, distractors=2,
                             lookalike=0.5)
  world = synthetic.SyntheticWorld(spec)
  words = {w for i in range(40)
           for w in re.findall(r"<obj>([^<]*)</obj>", world.sample(i).completion)}
  assert {w.split()[0] for w in words} <= {"red", "green", "blue"}
  assert {w.split()[1] for w in words} <= {"ball", "cube"}
  assert len(words) == 6  # every name occurs
  with pytest.raises(ValueError, match="synthetic.colours 9"):
    synthetic.SyntheticWorld(synthetic.WorldSpec(colours=9))


def test_lookalikes_appear_after_the_asked_object(monkeypatch):
  """The question asks for the first object of its shape: look-alikes come after it."""
  tracks = [synthetic.Track("red ball", "red", "ball", [None, [0, 0, 4, 4], [1, 1, 5, 5], None]),
            synthetic.Track("blue ball", "blue", "ball", [[9, 9, 13, 13]] * 4),
            synthetic.Track("blue cube", "blue", "cube", [[9, 9, 13, 13]] * 4)]
  synthetic._after_the_target(tracks)  # pylint: disable=protected-access
  assert tracks[1].visible() == [2, 3] and tracks[2].visible() == [0, 1, 2, 3]
  calls = []
  monkeypatch.setattr(synthetic, "_after_the_target", lambda t: calls.append(t[0].name))
  world = synthetic.SyntheticWorld(synthetic.WorldSpec(tasks=(records.TASK_TG,) + ST))
  world.sample(0)  # temporal QA: not called
  asked = world.sample(1).record["answer"][len("the "):]
  assert calls == [asked]


def test_named_question_cites_the_named_object_and_its_lookalikes_share_its_colour():
  spec = synthetic.WorldSpec(tasks=ST, named=True, distractors=2, lookalike=1.0)
  world = synthetic.SyntheticWorld(spec)
  for i in range(6):
    s = world.sample(i)
    name = next(iter(s.record["key_items"][str(s.record["key_frames"][0]["idx"])]))
    assert f"the {name} " in s.record["question"] and s.record["answer"].startswith(f"the {name}")
    assert set(re.findall(r"<obj>([^<]*)</obj>", s.completion)) == {name}
  # The look-alikes wear the asked colour in another shape: the asked colour covers more pixels
  # than the asked object alone on some frame of most clips.
  def spread(s):
    colour = np.array(synthetic.COLOURS[s.record["answer"].split()[1]])
    boxes = re.findall(r"<box>\[(\d+),(\d+),(\d+),(\d+)\]</box>", s.completion)
    ys, xs = np.nonzero(np.all(s.frames[s.record["key_frames"][-1]["idx"]] == colour, axis=-1))
    x1, y1, x2, y2 = map(int, boxes[-1])
    return bool(np.any((xs < x1) | (xs >= x2) | (ys < y1) | (ys >= y2)))
  assert sum(spread(world.sample(i)) for i in range(12)) >= 6
  # off by default: the default world's questions ask which object of a shape comes first
  assert "shows up first" in synthetic.SyntheticWorld(synthetic.WorldSpec(tasks=ST)).sample(0) \
      .record["question"]


def test_writing_the_world_prints_no_tfds_bars(tmp_path, capfd):
  """The demo's `--no-progress` output has no TFDS bars: writing the world keeps them off."""
  from vcoach_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  config = config_lib.load(None, ["synthetic.num_train=4", "synthetic.num_eval=2"])
  builder = tfds_stgr.synthetic_from_config(config, str(tmp_path / "data"))
  err = capfd.readouterr().err
  assert builder.info.splits["train"].num_examples == 4
  assert "Shuffling" not in err and "Generating" not in err and "examples/s" not in err, err[-500:]
