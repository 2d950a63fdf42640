"""tf.data -> fixed-shape host batches -> global arrays; iterator save/restore is exact."""

import os
import threading

os.environ.setdefault("USE_TF", "0")

import numpy as np
import pytest

from vcoach_jax.data import chat
from vcoach_jax.data import pipeline
from vcoach_jax.data import synthetic
from vcoach_jax.data import tfds_stgr
from vcoach_jax.data import tokenizer as tokenizer_lib

SHAPES = pipeline.BatchShapes(batch_size=4, prompt_buckets=(128, 256, 512, 1024),
                              max_prompt_length=1024, max_target_length=192, max_images=10,
                              max_patches=256)
N = 14


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("world")
  tokenizer_lib.build_tiny_tokenizer(synthetic.corpus(n=30), str(root / "tok"), vocab_size=400)
  tok = tokenizer_lib.load_tokenizer(str(root / "tok"))
  tfds_stgr.build_synthetic(str(root / "ds"), synthetic.WorldSpec(seed=2), {"train": (0, N)})
  return tfds_stgr.load(str(root / "ds")), tok


def _pipe(world, **kw):
  builder, tok = world
  kw.setdefault("seed", 5)
  kw.setdefault("shuffle_buffer", 6)
  return pipeline.Pipeline(builder, chat.Processor(tok), chat.PromptTexts.load(), SHAPES, **kw)


def test_fixed_shapes_and_padding(world):
  _, tok = world
  batch = _pipe(world).next_host_batch()
  a = batch.arrays
  length = a["input_ids"].shape[1]
  assert length in SHAPES.prompt_buckets
  assert a["pixel_values"].shape == (4, 256, 1176) and a["image_grid_thw"].shape == (4, 10, 3)
  assert a["target_ids"].shape == (4, 192) and a["target_mask"].sum(1).max() < 192
  image_id = tok.convert_tokens_to_ids("<|image_pad|>")
  for i in range(4):
    n_tok = a["attention_mask"][i].sum()
    assert a["attention_mask"][i, length - n_tok:].all()  # left padding
    grid = a["image_grid_thw"][i, :a["num_images"][i]]
    assert (a["image_grid_thw"][i, a["num_images"][i]:] == 0).all()
    assert grid.prod(-1).sum() == a["num_patches"][i]
    assert (a["input_ids"][i] == image_id).sum() == a["num_patches"][i] // 4
    assert not a["pixel_values"][i, a["num_patches"][i]:].any()
    assert np.abs(a["pixel_values"][i, :a["num_patches"][i]]).sum(-1).min() > 0
    target = tok.decode(a["target_ids"][i, :a["target_mask"][i].sum()])
    assert target.startswith("<think>") and target.endswith("</answer><|im_end|>")
  assert [s["task"] for s in batch.samples] and len(batch.ids) == 4


def test_save_restore_continues_with_the_same_next_batch(world, tmp_path):
  pipe = _pipe(world)
  for _ in range(2):
    pipe.next_host_batch()
  prefix = pipe.save(str(tmp_path / "it"))
  expected = [pipe.next_host_batch() for _ in range(4)]  # crosses an epoch boundary (N = 14)
  fresh = _pipe(world)
  fresh.restore(prefix)
  got = [fresh.next_host_batch() for _ in range(4)]
  for e, g in zip(expected, got):
    assert e.ids == g.ids
    for k in e.arrays:
      np.testing.assert_array_equal(e.arrays[k], g.arrays[k])
  # Without the restore the stream starts elsewhere: the check can fail.
  assert _pipe(world).next_host_batch().ids != expected[0].ids


def test_row_slices_read_only_their_parts_and_together_the_one_process_stream(world, tmp_path):
  """Two processes (row slices of 2 read parts) read disjoint halves of the split, each only
  its own rows; together they are the stream one process reading both parts sees, across
  epochs (N = 14: 7 records a part, 2 rows of each per batch) and across a save written by the
  two and restored by one."""
  single = _pipe(world, parts=2)
  slices = [_pipe(world, parts=2, row_slice=(i, 2)) for i in range(2)]
  seen = [set(), set()]
  for step in range(5):
    whole = single.next_host_batch()
    got = [p.next_host_batch() for p in slices]
    assert [g.rows for g in got] == [(0, 2), (2, 4)] and all(g.size == 4 for g in got)
    assert got[0].ids + got[1].ids == whole.ids, step
    for k in whole.arrays:  # each slice padded to its own bucket: compare the tokens unpadded
      if k not in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(np.concatenate([g.arrays[k] for g in got]), whole.arrays[k])
    for i, g in enumerate(got):
      seen[i] |= set(g.ids)
    if step == 1:
      for i, p in enumerate(slices):
        p.save(str(tmp_path / "it"))
  assert [p.examples_read for p in slices] == [10, 10] and single.examples_read == 20
  assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == N  # 7 records each
  restored = _pipe(world, parts=2)  # the two processes' position, restored by one process
  restored.restore(str(tmp_path / "it"))
  fresh = _pipe(world, parts=2)
  for _ in range(2):
    fresh.next_host_batch()
  assert restored.next_host_batch().ids == fresh.next_host_batch().ids
  with pytest.raises(ValueError, match="read_parts = 2 is not a multiple of the 4 processes"):
    _pipe(world, parts=2, row_slice=(0, 4))
  # One part is the single-process stream as before parts existed (seed + 0).
  assert _pipe(world, parts=1).next_host_batch().ids == _pipe(world).next_host_batch().ids


def test_row_slices_prepare_their_rows_of_the_same_global_batch(world, monkeypatch):
  """Each process's slice holds its rows of the batch one process reads (same stream), and the
  per-host assembly (`rl.hosts`: small arrays exchanged, prompts re-padded to the global length,
  tables built for the whole batch; ids, tasks and per-row results gathered) gives the whole
  batch's inputs."""
  import jax  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import ModelConfig  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import batching  # pylint: disable=g-import-not-at-top
  from vcoach_jax.rl import hosts  # pylint: disable=g-import-not-at-top
  from vcoach_jax.sft import step as sft_step  # pylint: disable=g-import-not-at-top
  whole = _pipe(world, parts=2).next_host_batch()
  parts = [_pipe(world, parts=2, row_slice=(i, 2)).next_host_batch() for i in range(2)]
  assert [p.rows for p in parts] == [(0, 2), (2, 4)]
  assert parts[0].ids + parts[1].ids == whole.ids
  assert all(len(p.examples) == 2 and len(p.samples) == 2 for p in parts)
  for k in ("pixel_values", "image_grid_thw", "num_patches", "target_ids"):
    np.testing.assert_array_equal(np.concatenate([p.arrays[k] for p in parts]), whole.arrays[k])

  # Two "processes" as two threads: `gather_rows` exchanges their trees in process order.
  barrier, trees, local = threading.Barrier(2), {}, threading.local()

  def gather_rows(tree):
    trees[local.index] = tree
    barrier.wait()
    out = jax.tree.map(lambda *xs: np.concatenate(xs), trees[0], trees[1])
    barrier.wait()
    return out

  class Sampler:
    def place_local_pixels(self, own, rows):  # the placement itself: tests/test_rl_placement
      assert own.shape[0] * 2 == rows
      return own
  tok = world[1]
  cfg = ModelConfig.tiny(vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids(
      "<|image_pad|>"), video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
      vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"))
  pad = _pipe(world).pad_id
  got = [None, None]

  def run(i):
    local.index = i
    got[i] = (hosts.global_inputs(parts[i], cfg, Sampler(), pad), hosts.global_ids(parts[i]),
              hosts.global_tasks(parts[i]),
              hosts.for_rows(parts[i], [1, 2, 3], lambda e, r: (r, pipeline.record_of(e)["id"])),
              sft_step.sft_batch(cfg, hosts.global_arrays(
                  parts[i], pad, hosts.SMALL_FIELDS + ("target_ids", "target_mask")), "sequence"))
  monkeypatch.setattr(hosts, "gather_rows", gather_rows)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  want = batching.batch_inputs(cfg, whole.arrays)
  for i in range(2):  # each process: the whole batch's tables, its own rows' pixels
    inputs, ids, tasks, rows, sft = got[i]
    want_sft = sft_step.sft_batch(cfg, whole.arrays, "sequence")  # SFT: the same batch but pixels
    for x, y in zip(jax.tree.leaves(sft._replace(prompt=sft.prompt._replace(pixels=None))),
                    jax.tree.leaves(want_sft._replace(prompt=want_sft.prompt._replace(
                        pixels=None)))):
      np.testing.assert_array_equal(x, y)
    assert sft.prompt.pixels.shape == want_sft.prompt.pixels.shape[:1] + (1,)
    assert ids == whole.ids and tasks == [s["task"] for s in whole.samples]
    assert rows == [(r, whole.ids[r]) for r in (1, 2, 3)]  # each row done where it was read
    assert inputs.input_ids.shape == want.input_ids.shape
    for name in want._fields:
      if name != "pixels":
        for x, y in zip(jax.tree.leaves(getattr(inputs, name)),
                        jax.tree.leaves(getattr(want, name))):
          np.testing.assert_array_equal(x, y, err_msg=name)
  np.testing.assert_array_equal(np.concatenate([g[0].pixels for g in got]), want.pixels)


def test_example_matches_the_processor(world):
  builder, tok = world
  pipe = _pipe(world, shuffle_buffer=1)
  ex = pipe.next_example()
  enc = pipeline.encode_example(ex, chat.Processor(tok), chat.PromptTexts.load(), SHAPES)
  ref = chat.Processor(tok)(pipeline.build_prompt(ex, chat.PromptTexts.load()))
  np.testing.assert_array_equal(enc["pixel_values"], ref["pixel_values"])
  np.testing.assert_array_equal(enc["input_ids"], ref["input_ids"][0])
  w, h = ex["image_size_refine"]
  assert enc["sample"]["image_size_refine"] == [w, h]


def test_targets_in_frame_pixels_and_prompts_follow_the_frame_time_rule(world):
  builder, tok = world
  world_spec = synthetic.WorldSpec(seed=2)
  pipe = _pipe(world, shuffle_buffer=1)
  ref = chat.PromptTexts.load(timestamps="reference")
  seen = set()  # whether the reference order differed from the exact one
  for _ in range(N):
    ex = pipe.next_example()
    index = int(ex["id"].decode().rsplit("-", 1)[1])
    enc = pipeline.encode_example(ex, chat.Processor(tok), chat.PromptTexts.load(), SHAPES)
    # The stored temporal-spatial trace is normalised (STGR); the target cites frame pixels,
    # exactly the world's reference completion.
    assert tok.decode(enc["target_ids"]) == (synthetic.SyntheticWorld(world_spec).sample(index)
                                             .completion + "<|im_end|>")
    task = ex["task"].decode()
    if task == synthetic.records_lib.TASK_ST and len(ex["key_frame_times"]):
      # The reference rule: key frames go before the first frame with int(i / fps') >= their
      # rounded time; the pipeline passes the stored sampling fps.
      fps = float(ex["video_sample_fps"])
      prompt = pipeline.build_prompt(ex, ref)
      slots = chat.frame_times.reference_schedule(len(ex["frames"]), fps, ex["key_frame_times"])
      assert prompt.is_key_frame == [s.kind == "key" for s in slots]
      exact = pipeline.build_prompt(ex, chat.PromptTexts.load())
      seen.add(prompt.is_key_frame != exact.is_key_frame)  # e.g. a key frame at 0.5 s
  assert True in seen  # the two rules place some key frame differently


def test_limits_raise_with_the_record_id(world):
  builder, tok = world
  small = pipeline.BatchShapes(batch_size=1, max_patches=4)
  ex = _pipe(world, shuffle_buffer=1).next_example()
  rid = ex["id"].decode()
  with pytest.raises(ValueError, match=rf"record id '{rid}': \d+ patches exceed.*max_patches"):
    pipeline.encode_example(ex, chat.Processor(tok), chat.PromptTexts.load(), small)


def test_to_global(world):
  jax = pytest.importorskip("jax")
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  batch = _pipe(world).next_host_batch()
  arrays = pipeline.to_global(batch.arrays, mesh)
  assert arrays["input_ids"].shape == batch.arrays["input_ids"].shape
  np.testing.assert_array_equal(np.asarray(arrays["pixel_values"]), batch.arrays["pixel_values"])
  assert arrays["pixel_values"].sharding.spec == jax.sharding.PartitionSpec(("data",))


def test_prepare_synthetic_command_and_pipeline_from_config(tmp_path):
  from vcoach_jax import cli
  from vcoach_jax import config as config_lib
  out = tmp_path / "syn"
  sets = ["--set", "synthetic.num_train=6", "--set", "synthetic.num_eval=2"]
  assert cli.main(["prepare", "--synthetic", "--out", str(out)] + sets) == 0
  tokenizer_lib.build_tiny_tokenizer(synthetic.corpus(n=12), str(tmp_path / "tok"), 300)
  tok = tokenizer_lib.load_tokenizer(str(tmp_path / "tok"))
  config = config_lib.load(None, ["data.batch_size=2", "data.max_patches=256",
                                  "data.max_images=12", "data.split=eval", "data.source=tfds"])
  pipe = pipeline.Pipeline.from_config(config, tok, str(out), )
  batch = pipe.next_host_batch()
  assert batch.arrays["pixel_values"].shape == (2, 256, 1176)
  assert all(i.startswith("syn-0-100000") for i in batch.ids)  # the eval split's records


def test_cli_strict_exit_code(tmp_path, capsys):
  from vcoach_jax import cli
  src = tmp_path / "r.json"
  src.write_text('[{"id": "x9", "task": "nope", "video_path": "a.mp4", "question": "q", '
                 '"answer": "a"}]')
  code = cli.main(["prepare", "--json", str(src), "--media-root", str(tmp_path), "--out",
                   str(tmp_path / "o"), "--strict", "--no-progress"])
  assert code == 2
  assert "record id 'x9': field 'task' = \"nope\"" in capsys.readouterr().err


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    tokenizer_lib.load_tokenizer(str(tmp_path))


def test_synthetic_source_builds_the_world_on_first_use(tmp_path):
  from vcoach_jax import config as config_lib
  config = config_lib.load(None, ["synthetic.num_train=4", "synthetic.num_eval=1",
                                  "data.batch_size=2", "data.max_patches=256",
                                  "data.max_images=12", f"data.tfds_dir={tmp_path / 'w'}"])
  tok = tokenizer_lib.from_config(config, str(tmp_path / "tok"))
  pipe = pipeline.Pipeline.from_config(config, tok, )
  assert len(set(pipe.next_host_batch().ids + pipe.next_host_batch().ids)) == 4
