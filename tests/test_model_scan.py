"""`scan_layers=True`: decoder layers and vision blocks stacked on a leading axis, each run by one
`lax.scan` (vision blocks pick window or full attention by `lax.cond`).

Same checkpoint, same numbers as the unrolled model: logits at parity with transformers, KV-cache
decode, gradients layer by layer, LoRA, `save_hf` back to the HF layout, and load errors that
name the missing layer's tensor.
"""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import safetensors.numpy  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import qwen_testutil as qt  # noqa: E402
from vcoach_jax import model as vm  # noqa: E402
from vcoach_jax.model import lora  # noqa: E402
from vcoach_jax.model.hf_checkpoint import CheckpointError  # noqa: E402
from vcoach_jax.model.qwen2_5_vl import prepare_inputs  # noqa: E402
from vcoach_jax.parallel import mesh as mesh_lib  # noqa: E402
from vcoach_jax.rl import optim  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  path = tmp_path_factory.mktemp("scan_ckpt")
  hf = qt.hf_model(seed=7, num_hidden_layers=3)
  hf.save_pretrained(path)
  return hf, path


def _inputs():
  rng = np.random.default_rng(2)
  g_img, g_vid = (1, 4, 6), (2, 4, 4)
  rows = [qt.text_row(rng, 3) + qt.vision_run(qt.IMAGE, g_img) + qt.text_row(rng, 2)
          + qt.vision_run(qt.VIDEO, g_vid) + qt.text_row(rng, 1), qt.text_row(rng, 6)]
  return qt.make_inputs(rows, images=[g_img], videos=[g_vid], seconds=[1.5])


def test_stacked_weights_and_their_sharding(ckpt):
  _, path = ckpt
  model = vm.load_hf(path, scan_layers=True)
  q = model.model.layers.self_attn.q_proj.kernel
  assert q.get_value().shape == (3, 64, 64)
  assert model.visual.blocks.attn.qkv.kernel.get_value().shape == (3, 32, 96)  # 3 blocks
  assert q.get_metadata()["logical_axes"] == ("layers", "embed", "heads")
  assert mesh_lib.logical_to_spec(q.get_metadata()["logical_axes"]) == P(None, "fsdp", "tensor")
  # Stacked biases and norm scales are 2-D but still get no weight decay.
  mask = {tuple(p): v.get_value() for p, v in nnx.to_flat_state(
      optim.decay_mask(nnx.state(model, nnx.Param)))}
  assert not mask[("model", "layers", "self_attn", "q_proj", "bias")]
  assert not mask[("model", "layers", "input_layernorm", "weight")]
  assert mask[("model", "layers", "self_attn", "q_proj", "kernel")]
  assert mask[("model", "embed_tokens")]
  assert not mask[("visual", "blocks", "attn", "qkv", "bias")]


def test_logits_and_decode_match(ckpt):
  hf, path = ckpt
  model = vm.load_hf(path, scan_layers=True, remat_policy="full")
  inputs = _inputs()
  ref = qt.torch_logits(hf, inputs)
  out = np.asarray(vm.logits(model, inputs))
  valid = inputs["attention_mask"].astype(bool)
  assert np.abs(out - ref)[valid].max() <= 1e-4

  t = inputs["input_ids"].shape[1]
  last, cache = vm.prefill(model, inputs, max_len=t + 4)
  np.testing.assert_allclose(np.asarray(last), ref[:, -1], atol=1e-4, rtol=0)
  token = np.asarray([5, 9])
  full = dict(inputs, input_ids=np.concatenate([inputs["input_ids"], token[:, None]], 1),
              attention_mask=np.concatenate([inputs["attention_mask"], np.ones((2, 1), int)], 1))
  step, cache = vm.decode_step(model, token, cache)
  np.testing.assert_allclose(np.asarray(step), qt.torch_logits(hf, full)[:, -1], atol=1e-4,
                             rtol=0)


def test_gradients_equal_the_unrolled_model_layer_by_layer(ckpt):
  _, path = ckpt
  unrolled = vm.load_hf(path)
  scanned = vm.load_hf(path, scan_layers=True, remat_policy="full")
  prepared = prepare_inputs(unrolled.config, _inputs())
  cot = jax.random.normal(jax.random.key(0), prepared.input_ids.shape + (512,))

  def grads(model):
    graphdef, params = nnx.split(model)

    def loss(params):
      logits, _ = nnx.merge(graphdef, params)(prepared)
      return jnp.sum(logits * cot)
    return jax.jit(jax.grad(loss))(params)
  g_u, g_s = grads(unrolled), grads(scanned)
  flat_s = {tuple(p): v.get_value() for p, v in nnx.to_flat_state(g_s)}
  stacked = (("model", "layers"), ("visual", "blocks"))
  seen = set()
  for p, v in nnx.to_flat_state(g_u):
    p = tuple(p)
    key = p[:2] + p[3:] if p[:2] in stacked else p
    got = flat_s[key][p[2]] if p[:2] in stacked else flat_s[key]
    np.testing.assert_allclose(np.asarray(got), np.asarray(v.get_value()), atol=2e-4, rtol=1e-4,
                               err_msg=str(p))
    seen.add(key)
  assert seen == set(flat_s)  # every stacked tensor compared, layer by layer


def test_lora_on_stacked_layers_saves_merged_weights_transformers_loads(ckpt, tmp_path):
  _, path = ckpt
  model = vm.load_hf(path, scan_layers=True)
  targets = (r"model\.layers\.self_attn\.q_proj", r"model\.layers\.mlp\.down_proj")
  assert lora.apply_lora(model, rank=2, alpha=4.0, targets=targets) == 2
  b = model.model.layers.self_attn.q_proj.lora.b
  assert b.get_value().shape == (3, 2, 64)
  for linear in (model.model.layers.self_attn.q_proj, model.model.layers.mlp.down_proj):
    shape = linear.lora.b.get_value().shape
    linear.lora.b.set_value(jax.random.normal(jax.random.key(shape[-1]), shape) * 0.1)
  inputs = _inputs()
  out = np.asarray(vm.logits(model, inputs))
  vm.save_hf(model, tmp_path)
  names = set(safetensors.numpy.load_file(str(tmp_path / "model.safetensors")))
  assert "model.layers.2.mlp.down_proj.weight" in names and not any("lora" in n for n in names)
  hf = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
      tmp_path, torch_dtype=torch.float32).eval()
  ref = qt.torch_logits(hf, inputs)
  valid = inputs["attention_mask"].astype(bool)
  assert np.abs(out - ref)[valid].max() <= 1e-4
  # Each layer's slice had its own adapter: the merged deltas differ from layer to layer.
  before = safetensors.numpy.load_file(str(path / "model.safetensors"))
  after = safetensors.numpy.load_file(str(tmp_path / "model.safetensors"))
  deltas = [after[f"model.layers.{i}.self_attn.q_proj.weight"]
            - before[f"model.layers.{i}.self_attn.q_proj.weight"] for i in range(3)]
  assert all(np.abs(d).max() > 1e-3 for d in deltas)
  assert np.abs(deltas[0] - deltas[1]).max() > 1e-3
  np.testing.assert_array_equal(after["model.layers.2.self_attn.k_proj.weight"],
                                before["model.layers.2.self_attn.k_proj.weight"])


def test_missing_layer_tensor_is_named(ckpt, tmp_path):
  _, path = ckpt
  tensors = safetensors.numpy.load_file(str(path / "model.safetensors"))
  del tensors["model.layers.1.mlp.up_proj.weight"]
  safetensors.numpy.save_file(tensors, str(tmp_path / "model.safetensors"),
                              metadata={"format": "pt"})
  (tmp_path / "config.json").write_text((path / "config.json").read_text())
  with pytest.raises(CheckpointError, match=r"missing \(1\).*model\.layers\.1\.mlp\.up_proj"):
    vm.load_hf(tmp_path, scan_layers=True)


def test_sampler_on_scanned_layers_equals_unrolled(ckpt):
  """The sampler's one-program prefill + while-loop decode runs the scan inside its loop."""
  from vcoach_jax.sampling import Sampler, SamplingConfig  # pylint: disable=g-import-not-at-top
  _, path = ckpt
  raw = _inputs()
  outs = []
  for scan in (False, True):
    model = vm.load_hf(path, scan_layers=scan)
    sampler = Sampler(model, None, end_ids=(505,), pad_id=0)
    cfg = SamplingConfig(temperature=1.0, top_p=0.95, top_k=50, max_new_tokens=6,
                         num_samples=2)
    outs.append(sampler.generate(prepare_inputs(model.config, raw), cfg, jax.random.key(3)))
  np.testing.assert_array_equal(outs[0].tokens, outs[1].tokens)
  np.testing.assert_allclose(outs[0].logprobs, outs[1].logprobs, atol=1e-5)
