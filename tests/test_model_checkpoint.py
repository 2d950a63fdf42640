"""HF checkpoints in and out: sharded index loading, save_hf -> transformers, tied embeddings,
and the errors promised for bad checkpoint folders."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("USE_TF", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import safetensors.numpy  # noqa: E402
import transformers  # noqa: E402

import qwen_testutil as qt  # noqa: E402
from vcoach_jax import model as vm  # noqa: E402


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  g_img, g_vid = (1, 4, 6), (2, 4, 4)
  rows = [qt.text_row(rng, 3) + qt.vision_run(qt.IMAGE, g_img) + qt.text_row(rng, 2)
          + qt.vision_run(qt.VIDEO, g_vid) + qt.text_row(rng, 3),
          qt.text_row(rng, 6)]
  return qt.make_inputs(rows, images=[g_img], videos=[g_vid], seconds=[0.5])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  hf = qt.hf_model(seed=1)
  path = tmp_path_factory.mktemp("ckpt")
  hf.save_pretrained(path)
  return hf, path


def test_sharded_index_loads_with_parity(saved, tmp_path):
  hf, _ = saved
  hf.save_pretrained(tmp_path, max_shard_size="40KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  assert len(list(tmp_path.glob("*.safetensors"))) > 2
  inputs = _inputs()
  out = np.asarray(vm.logits(vm.load_hf(tmp_path), inputs))
  valid = inputs["attention_mask"].astype(bool)
  assert np.abs(out - qt.torch_logits(hf, inputs))[valid].max() <= 1e-4


def test_save_hf_loads_in_transformers_with_identical_logits(saved, tmp_path):
  hf, path = saved
  jm = vm.load_hf(path)
  vm.save_hf(jm, tmp_path / "out")
  back = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
      tmp_path / "out", attn_implementation="eager").eval()
  for name, p in hf.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[name].numpy(), p.numpy(), err_msg=name)
  inputs = _inputs(1)
  valid = inputs["attention_mask"].astype(bool)
  ref = qt.torch_logits(back, inputs)
  assert np.abs(ref - qt.torch_logits(hf, inputs))[valid].max() == 0.0
  assert np.abs(np.asarray(vm.logits(jm, inputs)) - ref)[valid].max() <= 1e-4


def test_save_hf_shards_with_index(saved, tmp_path):
  _, path = saved
  jm = vm.load_hf(path)
  vm.save_hf(jm, tmp_path, max_shard_bytes=200_000)
  index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 1
  again = vm.load_hf(tmp_path)
  inputs = _inputs(2)
  np.testing.assert_array_equal(np.asarray(vm.logits(again, inputs)),
                                np.asarray(vm.logits(jm, inputs)))


def test_tied_embeddings(tmp_path):
  hf = qt.hf_model(seed=2, tie_word_embeddings=True)
  hf.save_pretrained(tmp_path / "in")
  jm = vm.load_hf(tmp_path / "in")
  assert jm.lm_head is None
  inputs = _inputs(3)
  valid = inputs["attention_mask"].astype(bool)
  assert np.abs(np.asarray(vm.logits(jm, inputs)) - qt.torch_logits(hf, inputs))[valid].max() <= 1e-4
  vm.save_hf(jm, tmp_path / "out")
  back = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
      tmp_path / "out", attn_implementation="eager").eval()
  assert back.config.tie_word_embeddings
  np.testing.assert_array_equal(qt.torch_logits(back, inputs)[valid], qt.torch_logits(hf, inputs)[valid])


# --- Bad checkpoints ----------------------------------------------------------------------------

def _copy(path, dst):
  shutil.copytree(path, dst)
  return dst


def _rewrite(folder, edit):
  f = folder / "model.safetensors"
  tensors = safetensors.numpy.load_file(f)
  edit(tensors)
  safetensors.numpy.save_file(tensors, f)


def test_missing_config(saved, tmp_path):
  folder = _copy(saved[1], tmp_path / "c")
  (folder / "config.json").unlink()
  with pytest.raises(vm.CheckpointError, match="config.json is missing"):
    vm.load_hf(folder)


def test_missing_weights_file(saved, tmp_path):
  folder = _copy(saved[1], tmp_path / "c")
  (folder / "model.safetensors").unlink()
  with pytest.raises(vm.CheckpointError, match="no \\*.safetensors"):
    vm.load_hf(folder)


def test_missing_shard_named_by_index(saved, tmp_path):
  saved[0].save_pretrained(tmp_path / "c", max_shard_size="40KB")
  shard = sorted((tmp_path / "c").glob("model-*.safetensors"))[1]
  shard.unlink()
  with pytest.raises(vm.CheckpointError, match=shard.name):
    vm.load_hf(tmp_path / "c")


def test_missing_and_unexpected_names_are_listed(saved, tmp_path):
  folder = _copy(saved[1], tmp_path / "c")

  def edit(t):
    t["model.layers.0.mlp.gate_proj.weightz"] = t.pop("model.layers.0.mlp.gate_proj.weight")
    del t["visual.merger.ln_q.weight"]
    t["model.extra_thing.weight"] = np.zeros((2, 2), np.float32)
  _rewrite(folder, edit)
  with pytest.raises(vm.CheckpointError) as err:
    vm.load_hf(folder)
  msg = str(err.value)
  assert "missing (2)" in msg and "model.layers.0.mlp.gate_proj.weight'" in msg
  assert "visual.merger.ln_q.weight" in msg
  assert "unexpected (2)" in msg and "model.extra_thing.weight" in msg
  assert "model.layers.0.mlp.gate_proj.weightz" in msg


def test_shapes_that_contradict_config(saved, tmp_path):
  folder = _copy(saved[1], tmp_path / "c")
  cfg = json.loads((folder / "config.json").read_text())
  cfg["intermediate_size"] = 96
  (folder / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(vm.CheckpointError) as err:
    vm.load_hf(folder)
  msg = str(err.value)
  assert "shape mismatches (6)" in msg  # gate/up/down of both layers
  assert "model.layers.1.mlp.down_proj.weight: checkpoint (64, 128) -> (128, 64), " \
         "config.json implies (96, 64)" in msg


def test_save_hf_writes_the_tokenizer(saved, tmp_path):
  from vcoach_jax.data import tokenizer as tk  # pylint: disable=g-import-not-at-top
  _, path = saved
  tk.build_tiny_tokenizer(["<think>a red ball at <t>1.0</t>s</think>"] * 4, tmp_path / "tok",
                          vocab_size=300)
  tok = tk.load_tokenizer(str(tmp_path / "tok"))
  vm.save_hf(vm.load_hf(path), tmp_path / "out", tokenizer=tok)
  again = tk.load_tokenizer(str(tmp_path / "out"))
  text = "<think>the red ball</think><|im_end|>"
  assert again(text)["input_ids"] == tok(text)["input_ids"]
  assert tk.special_ids(again) == tk.special_ids(tok)


@pytest.mark.parametrize("keep", [4, 100, 2000])
def test_truncated_safetensors_names_the_file(saved, tmp_path, keep):
  """Cut inside the length, inside the header, inside the tensor data: one line naming it."""
  folder = _copy(saved[1], tmp_path / "c")
  f = folder / "model.safetensors"
  f.write_bytes(f.read_bytes()[:keep])
  with pytest.raises(ValueError) as e:
    vm.load_hf(folder)
  assert str(f) in str(e.value) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("text", ['{"model_type": "qwen2_5_vl", ', '[1, 2]', '{"vision_config": 3}'])
def test_bad_config_json_names_the_file(saved, tmp_path, text):
  folder = _copy(saved[1], tmp_path / "c")
  (folder / "config.json").write_text(text)
  with pytest.raises(ValueError) as e:
    vm.load_hf(folder)
  assert str(folder / "config.json") in str(e.value) and "\n" not in str(e.value), str(e.value)
