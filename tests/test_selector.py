"""VP-Selector (docs/design.md §8.6): the text form learns a visible property of the question, the
VL form trains through the same head and loop, checkpoints round-trip, the cache is what the
trainer reads; `build-data` labels synthetic records and resumes."""

from __future__ import annotations

import json
import time

import jax
import numpy as np
import pytest
from flax import nnx

from vcoach_jax.data import chat
from vcoach_jax.data import pipeline
from vcoach_jax.data import synthetic
from vcoach_jax.data import tfds_stgr
from vcoach_jax.data import tokenizer as tk
from vcoach_jax.model import build
from vcoach_jax.model import lora
from vcoach_jax.model.qwen2_5_vl import Qwen2_5_VL
from vcoach_jax.prompting import selector as sl

WORLD = synthetic.WorldSpec(seed=1, max_frames=4)
# Short wording keeps sequences short (the tiny BPE spells unseen words byte by byte).
SHORT = sl.SelectorTexts("Pick:", "{instruction} {question} / {objects}")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  d = tmp_path_factory.mktemp("tok")
  tk.build_tiny_tokenizer(synthetic.corpus(WORLD, n=60), str(d), vocab_size=400)
  return tk.load_tokenizer(str(d))


@pytest.fixture(scope="module")
def backbone(tok):
  """One tiny Qwen2.5-VL with LoRA (building it eagerly costs seconds); tests take clones."""
  model = Qwen2_5_VL(build.preset_config("tiny", tok), rngs=nnx.Rngs(0))
  lora.apply_lora(model, rank=8, alpha=16.0, rngs=nnx.Rngs(1))
  return model


def _selector(backbone, num_classes=2, text_only=True, seed=2):
  return (sl.Selector(nnx.clone(backbone), num_classes, text_only=text_only, rngs=nnx.Rngs(seed)),
          backbone.config)


def test_input_text_names_sorted_objects():
  texts = sl.SelectorTexts.load()
  record = {"question": "Where is it?", "key_items": {
      "3": {"red ball": [[0, 0, 1, 1]], "blue cube": [[0, 0, 1, 1]]}, "5": {"red ball": [[0] * 4]}}}
  text = sl.input_text(record, texts)
  assert text.startswith(texts.instruction)
  assert text.endswith("Question: Where is it?\nObjects: blue cube, red ball")


def test_text_batch_left_pads_to_a_power_of_two():
  a = sl.text_batch([[5, 6, 7], [8] * 9], pad_id=0, max_length=64)
  assert a["input_ids"].shape == (2, 16)
  assert a["input_ids"][0, -3:].tolist() == [5, 6, 7] and a["attention_mask"][0].sum() == 3
  b = sl.text_batch([list(range(1, 100))], pad_id=0, max_length=32)
  assert b["input_ids"][0].tolist() == list(range(68, 100))  # the last 32 tokens


def test_last_non_pad_token_is_read(tok, backbone):
  """A row left-padded and the same row right-padded give the same class probabilities."""
  from vcoach_jax.model import batching
  sel, cfg = _selector(backbone)
  ids = tok("When is the red ball on screen?")["input_ids"]
  n, t = len(ids), len(ids) + 5
  arrays = {"input_ids": np.zeros((2, t), np.int32), "attention_mask": np.zeros((2, t), np.int32)}
  arrays["input_ids"][0, -n:], arrays["attention_mask"][0, -n:] = ids, 1
  arrays["input_ids"][1, :n], arrays["attention_mask"][1, :n] = ids, 1
  probs = sl.predict(sel, batching.batch_inputs(cfg, arrays))
  np.testing.assert_allclose(probs[0], probs[1], atol=1e-5)
  assert abs(probs[0, 0] - 0.5) > 1e-4  # not trivially uniform


def test_text_selector_learns_a_visible_property_of_the_question(tok, backbone, tmp_path):
  """Labels: `darken` when the temporal-spatial question says "left", else `raw`. 64 train /
  32 held-out records; chance is ~0.5, the trained selector is well above it."""
  world = synthetic.SyntheticWorld(WORLD)
  records = [world.sample(6 * i).record for i in range(96)]  # temporal-spatial questions
  labels = np.array([int("left" in r["question"]) for r in records])
  assert 0.3 < labels.mean() < 0.7
  sel, cfg = _selector(backbone)
  frozen_before = nnx.state(sel, nnx.Not(sl.TRAINABLE))
  mk = sl.text_inputs_fn(records, tok, SHORT, cfg, 128)
  train, held = np.arange(64), np.arange(64, 96)
  before = sl.predict_all(sel, lambda i: mk(held[i]), len(held), 16).argmax(1)
  start = time.time()
  history = sl.fit(sel, lambda i: mk(train[i]), labels[train], steps=60, batch_size=16, lr=3e-3)
  seconds = time.time() - start
  probs = sl.predict_all(sel, lambda i: mk(held[i]), len(held), 16)
  accuracy = float((probs.argmax(1) == labels[held]).mean())
  print(f"text selector: held-out accuracy {accuracy:.3f} (before training "
        f"{(before == labels[held]).mean():.3f}), final loss {history[-1]['loss']:.4f}, "
        f"{seconds:.1f} s for 60 steps")
  assert accuracy >= 0.85
  assert history[-1]["loss"] < history[0]["loss"]
  # Only the LoRA adapters and the head moved; the text form has no vision tower.
  frozen_after = nnx.state(sel, nnx.Not(sl.TRAINABLE))
  for (p, a), (_, b) in zip(nnx.to_flat_state(frozen_before), nnx.to_flat_state(frozen_after)):
    np.testing.assert_array_equal(np.asarray(a.get_value()), np.asarray(b.get_value()), str(p))
  assert sel.backbone.visual is None
  # The checkpoint holds the trained adapters and head: a fresh selector restores them.
  sl.save(sel, tmp_path / "ckpt", {"mode": "text", "types": ["raw", "darken"]})
  fresh, _ = _selector(backbone)
  meta = sl.restore(fresh, tmp_path / "ckpt")
  assert meta["types"] == ["raw", "darken"] and meta["num_classes"] == 2
  np.testing.assert_allclose(sl.predict_all(fresh, lambda i: mk(held[i]), len(held), 16), probs,
                             atol=1e-5)
  wrong, _ = _selector(backbone, num_classes=3)
  with pytest.raises(ValueError, match="2 classes"):
    sl.restore(wrong, tmp_path / "ckpt")


def test_vl_selector_trains_on_video_prompts(tok, backbone):
  """The paper form: frames + question through the vision tower, k = 5 prompt types."""
  world = synthetic.SyntheticWorld(WORLD)
  examples = []
  for i in (0, 1, 6, 7):
    s = world.sample(i)
    size = (s.frames.shape[2], s.frames.shape[1])
    keys = np.asarray(s.key_frame_images).reshape(-1, size[1], size[0], 3)
    examples.append(tfds_stgr.example(s.record, s.frames, s.times, keys, size, size, 2.0, 2.0))
  sel, cfg = _selector(backbone, num_classes=5, text_only=False)
  shapes = pipeline.BatchShapes(batch_size=2, prompt_buckets=(256, 512), max_prompt_length=512,
                                max_target_length=96, max_images=8, max_patches=256)
  texts = sl.vl_texts(chat.PromptTexts.load(), sl.SelectorTexts.load().instruction)
  mk = sl.vl_inputs_fn(examples, chat.Processor(tok), texts, shapes, cfg)
  inputs = mk(np.array([0, 2]))
  assert inputs.pixels is not None
  labels = np.array([4, 0, 2, 1])
  history = sl.fit(sel, mk, labels, steps=6, batch_size=2, lr=1e-2)
  assert history[-1]["loss"] < history[0]["loss"]
  probs = sl.predict_all(sel, mk, 4, 2)
  assert probs.shape == (4, 5) and np.allclose(probs.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("on_mesh", [False, True])
def test_training_steps_compile_once(tok, backbone, on_mesh):
  """Step 2 reuses step 1's program: the state comes out of the step on the shardings it went in
  with (on a mesh as `from_config` places it, the optimizer's count and the replicated head used
  to come back differently placed, a second compilation as long as the first)."""
  from vcoach_jax.parallel import mesh as mesh_lib
  sel, cfg = _selector(backbone)
  if on_mesh:
    mesh_lib.shard_model(sel, mesh_lib.make_mesh())
  world = synthetic.SyntheticWorld(WORLD)
  mk = sl.text_inputs_fn([world.sample(i).record for i in range(4)], tok, SHORT, cfg, 128)
  jitted, _, state = sl.train_setup(sel, lr=1e-3, steps=3, batch_size=4)
  losses = []
  for i in range(3):
    state, m = jitted(state, None, sl.Batch(mk(np.arange(4)), np.array([0, 1, 0, 1], np.int32)),
                      jax.random.key(i))
    losses.append(float(m["loss"]))
    assert float(m["skipped"]) == 0.0  # the trainers' non-finite guard runs here too
  assert jitted.fn._cache_size() == 1  # pylint: disable=protected-access
  assert losses[2] < losses[0]


def test_cache_round_trip_and_choose(tmp_path):
  sl.write_cache(tmp_path / "c.json", {"a": "darken", "b": "raw"})
  cache = sl.load_cache(tmp_path / "c.json")
  assert sl.choose(cache, "a") == "darken" and sl.choose(cache, "zzz") == "raw"
  assert sl.choose(cache, "a", has_key_items=False) == "raw" and sl.choose(None, "a") == "raw"
  (tmp_path / "bad.json").write_text(json.dumps({"a": "blur"}))
  with pytest.raises(ValueError, match="record id 'a'"):
    sl.load_cache(tmp_path / "bad.json")


def test_cache_in_the_released_form(tmp_path):
  # The released selector writes its class (0 = raw, 1 = darken); its trainer also reads the
  # type names, two of which are this project's under other names.
  released = {"000001": 1, "000002": 0, "7": "numpro", "8": "api_prompt", "9": "circle",
              "10": "raw"}
  (tmp_path / "released.json").write_text(json.dumps(released))
  cache = sl.load_cache(tmp_path / "released.json")
  assert cache == {"000001": "darken", "000002": "raw", "7": "numbers", "8": "attention",
                   "9": "circle", "10": "raw"}
  assert sl.choose(cache, "000001") == "darken" and sl.choose(cache, "8") == "attention"
  for bad in ({"a": 2}, {"a": True}, {"a": "blur"}, {"a": None}):
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"bad\.json.*record id 'a'"):
      sl.load_cache(tmp_path / "bad.json")
  (tmp_path / "list.json").write_text("[1, 0]")
  with pytest.raises(ValueError, match="JSON object"):
    sl.load_cache(tmp_path / "list.json")


# --- build-data ------------------------------------------------------------------------------

from vcoach_jax import config as config_lib  # noqa: E402
from vcoach_jax.prompting import selector_data as sd  # noqa: E402

TYPES = ("raw", "darken", "circle", "numbers", "attention")


def _examples(indices):
  world = synthetic.SyntheticWorld(WORLD)
  out, completions = [], {}
  for i in indices:
    s = world.sample(i)
    size = (s.frames.shape[2], s.frames.shape[1])
    keys = np.asarray(s.key_frame_images).reshape(-1, size[1], size[0], 3)
    out.append(tfds_stgr.example(s.record, s.frames, s.times, keys, size, size, 2.0, 2.0))
    completions[s.record["id"]] = s.completion
  return out, completions


def _build_kwargs(tok):
  return dict(processor=chat.Processor(tok), texts=chat.PromptTexts.load(),
              shapes=pipeline.BatchShapes(batch_size=5, prompt_buckets=(256, 512),
                                          max_prompt_length=512, max_target_length=96,
                                          max_images=8, max_patches=256),
              reward_options=config_lib.reward_options(config_lib.load()), types=TYPES,
              progress=False)


def test_best_type_prefers_raw_on_ties():
  types = ("raw", "darken", "circle")
  assert sd.best_type({"raw": 1.0, "darken": 1.0, "circle": 0.5}, types) == "raw"
  assert sd.best_type({"raw": 0.0, "darken": 1.0, "circle": 1.0}, types) == "darken"
  assert sd.best_type({"raw": 0.0, "darken": 0.2, "circle": 1.5}, types) == "circle"


def test_build_data_labels_by_score_and_resumes(tok, backbone, tmp_path):
  """Two proxy reasoners: a tiny random model (greedy, all types score alike -> raw) and an
  oracle that answers correctly only on the circle-prompted input; the average picks circle.
  An interrupted run (limit) resumes without redoing rows and survives a cut last line."""
  examples, completions = _examples([0, 6, 12, 1])  # three temporal-spatial, one temporal MCQ
  circle_hint = chat.PromptTexts.load().hints["circle"]

  def oracle(arrays):
    """Answers `current` record's reference completion when the input ends with the circle hint."""
    out = []
    for ids, mask in zip(arrays["input_ids"], arrays["attention_mask"]):
      text = tok.decode(ids[mask == 1])
      out.append(completions[current[0]] if circle_hint in text else "no idea")
    return out

  current = [None]
  model = nnx.clone(backbone)
  random_reasoner = sd.greedy_reasoner(model, tok, max_new_tokens=4)

  def run(limit=None):
    def tracked():
      for e in examples:
        current[0] = e["id"]
        yield e
    return sd.build_data(tracked(), [random_reasoner, oracle], str(tmp_path / "labels.jsonl"),
                         limit=limit, **_build_kwargs(tok))

  first = run(limit=2)
  assert first["new"] == 2
  with open(tmp_path / "labels.jsonl", "a") as f:
    f.write('{"id": "cut-off", "lab')  # an interruption mid-line
  second = run()
  assert second["skipped"] == 2 and second["new"] == 2
  rows = [json.loads(line) for line in open(tmp_path / "labels.jsonl")]
  assert sorted(r["id"] for r in rows) == sorted(e["id"] for e in examples)
  by_id = {r["id"]: r for r in rows}
  for e in examples[:3]:
    row = by_id[e["id"]]
    assert row["reason"] == "scored" and row["label"] == "circle", row
    assert row["scores"]["circle"] > row["scores"]["raw"]
  assert by_id[examples[3]["id"]]["label"] == "raw"  # no key items: never prompted
  assert second["circle"] == 3 and second["raw"] == 1
  # The 2-class selector reads the same file relabelled among its own types.
  kept, labels = sd.read_labelled(str(tmp_path / "labels.jsonl"), ("raw", "darken"))
  assert len(kept) == 4 and set(labels.tolist()) <= {0, 1}


def test_select_command_is_registered(capsys):
  from vcoach_jax import cli
  with pytest.raises(SystemExit) as e:
    cli.main(["select", "--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  assert "build-data" in out and "predict" in out and "--workdir" in out
