"""Small units: mesh rules, vision segment tables, config round trip, attention implementations."""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import qwen_testutil as qt  # noqa: E402
from vcoach_jax import model as vm  # noqa: E402
from vcoach_jax.model import layers as lyr  # noqa: E402
from vcoach_jax.model.vision import segments_from_ids, vision_aux  # noqa: E402
from vcoach_jax.parallel import mesh as mesh_lib  # noqa: E402


def test_logical_to_spec_rules():
  assert mesh_lib.logical_to_spec(("embed", "mlp")) == P("fsdp", "tensor")
  assert mesh_lib.logical_to_spec(("norm",)) == P(None)
  # A mesh axis is used once: the second vit_mlp dim stays replicated.
  assert mesh_lib.logical_to_spec(("vit_mlp", "vit_mlp")) == P("tensor", None)
  assert mesh_lib.logical_to_spec(("batch", None)) == P(("data", "fsdp"), None)


def test_make_mesh_sizes_and_errors():
  mesh = mesh_lib.make_mesh({"fsdp": -1})
  assert mesh.shape == {"data": 1, "fsdp": jax.device_count(), "tensor": 1}
  with pytest.raises(ValueError, match="unknown mesh axes"):
    mesh_lib.make_mesh({"model": 1})
  with pytest.raises(ValueError, match="needs"):
    mesh_lib.make_mesh({"fsdp": jax.device_count() + 1})
  with pytest.raises(ValueError, match="unknown mesh axes"):
    mesh_lib.rules_from_config([("embed", ("fsdpp",))])


def test_segments_gather_and_inverse():
  ids = np.array([2, 0, 1, 0, 2, 2, 1])
  seg = segments_from_ids(ids)
  assert seg.gather.shape == (3, 3)
  np.testing.assert_array_equal(seg.valid.sum(1), [2, 2, 3])
  np.testing.assert_array_equal(ids[seg.gather][seg.valid], np.repeat([0, 1, 2], [2, 2, 3]))
  np.testing.assert_array_equal(seg.gather.reshape(-1)[seg.inverse], np.arange(len(ids)))


def test_window_segments_of_a_grid_the_window_does_not_divide():
  cfg = vm.ModelConfig.tiny().vision  # window 56 px = 2x2 merged units
  aux = vision_aux(cfg, np.array([[2, 6, 10]]))  # 3x5 merged units per frame, 2 frames
  sizes = sorted(aux.windows.valid[0].sum(1).tolist())  # one block
  # per frame: windows of 2x2, 2x2, 2x1, 1x2, 1x2, 1x1 merged units (x4 patches each)
  assert sizes == sorted([16, 16, 8, 8, 8, 4] * 2)
  assert aux.frames.valid.shape == (1, 2, 60)


def test_config_round_trip_through_hf_json():
  hf_cfg = qt.hf_config().to_dict()
  cfg = vm.ModelConfig.from_hf(hf_cfg)
  assert cfg.mrope_section == (2, 3, 3) and cfg.vision.fullatt_block_indexes == (0, 2)
  assert vm.ModelConfig.from_hf(cfg.to_hf()) == cfg
  with pytest.raises(ValueError, match="mrope_section"):
    vm.ModelConfig.from_hf(dict(hf_cfg, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 1]}))


def test_config_from_the_json_transformers_5_writes():
  """transformers 5 nests the text fields under `text_config` and writes `rope_parameters` (with
  `rope_theta` inside) instead of `rope_scaling`: the same model either way."""
  want = vm.ModelConfig.tiny(rope_theta=10000.0)
  v4 = want.to_hf()
  text = {k: v for k, v in v4.items() if k not in (
      "vision_config", "rope_scaling", "rope_theta", "image_token_id", "video_token_id",
      "vision_start_token_id", "vision_end_token_id", "architectures", "model_type")}
  text["rope_parameters"] = {"mrope_section": [2, 3, 3], "rope_theta": 10000.0,
                             "rope_type": "default", "type": "mrope"}
  v5 = {k: v4[k] for k in ("vision_config", "image_token_id", "video_token_id", "model_type",
                           "vision_start_token_id", "vision_end_token_id")}
  v5["text_config"] = text
  got = vm.ModelConfig.from_hf(v5)
  assert got.mrope_section == (2, 3, 3) and got.rope_theta == 10000.0
  assert got == want


def test_tiny_wide_preset_is_tiny_wider_and_round_trips():
  from vcoach_jax.model import build  # pylint: disable=g-import-not-at-top
  tiny, wide = build.preset_config("tiny"), build.preset_config("tiny_wide")
  assert (wide.hidden_size, wide.num_hidden_layers, wide.vision.hidden_size) == (128, 3, 64)
  assert wide.vision.out_hidden_size == wide.hidden_size and wide.vocab_size == tiny.vocab_size
  assert vm.ModelConfig.from_hf(wide.to_hf()) == wide
  assert wide.head_dim == 32 and 2 * sum(wide.mrope_section) == wide.head_dim


def test_tiny_deep_preset_is_tiny_with_four_layers_and_round_trips():
  from vcoach_jax.model import build  # pylint: disable=g-import-not-at-top
  tiny, deep = build.preset_config("tiny"), build.preset_config("tiny_deep")
  assert deep.num_hidden_layers == 4 and deep.replace(num_hidden_layers=2) == tiny
  assert vm.ModelConfig.from_hf(deep.to_hf()) == deep


def test_attention_impls_agree():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(k1, (2, 5, 4, 8))
  k = jax.random.normal(k2, (2, 5, 2, 8))
  v = jax.random.normal(k3, (2, 5, 2, 8))
  mask = np.tril(np.ones((5, 5), bool))[None].repeat(2, 0)
  mask[1, :, 0] = False  # a padded key
  a = lyr.attention(q, k, v, mask, "xla")
  b = lyr.attention(q, k, v, mask, "dot_product_attention")
  np.testing.assert_allclose(np.asarray(a)[:, 1:], np.asarray(b)[:, 1:], atol=1e-5)


def test_chunked_attention_equals_plain_values_and_gradients():
  """13 queries in blocks of 4 (the last padded), a padded key and a query row with no key."""
  k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
  q = jax.random.normal(k1, (2, 13, 4, 8))
  k = jax.random.normal(k2, (2, 13, 2, 8))
  v = jax.random.normal(k3, (2, 13, 2, 8))
  cot = jax.random.normal(k4, (2, 13, 4, 8))
  mask = np.tril(np.ones((13, 13), bool))[None].repeat(2, 0)
  mask[1, :, 0] = False
  mask[1, 0] = False  # query 0 of row 1 attends nothing: finite, equal in both

  def loss(impl):
    return lambda q, k, v: jnp.sum(lyr.attention(q, k, v, mask, impl, chunk=4) * cot)
  plain = lyr.attention(q, k, v, mask, "xla")
  chunked = jax.jit(lambda q, k, v: lyr.attention(q, k, v, mask, "chunked", chunk=4))(q, k, v)
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(plain), atol=1e-6)
  grads_plain = jax.grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
  grads_chunked = jax.jit(jax.grad(loss("chunked"), argnums=(0, 1, 2)))(q, k, v)
  for a, b in zip(grads_chunked, grads_plain):
    assert np.isfinite(np.asarray(a)).all()
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  # No block of the chunked program holds more than [B, K, G, chunk, S] scores.
  hlo = jax.jit(lambda q, k, v: lyr.attention(q, k, v, mask, "chunked", chunk=4)).lower(
      q, k, v).as_text()
  assert "2x2x2x4x13" in hlo and "2x2x2x13x13" not in hlo


def test_from_config_builds_the_default_tiny_model():
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import build  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).parents[1] / "configs" / "default.py"
  spec = importlib.util.spec_from_file_location("_default_cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.model.lora_rank = 2
  model, mesh = build.from_config(config)
  assert mesh.shape["fsdp"] == jax.device_count()
  assert model.config == vm.ModelConfig.tiny()
  # text: 2 layers x (q, k, v, o, gate, up, down); vision: 2 blocks x (gate, up, down)
  assert len(build.lora.lora_linears(model)) == 2 * 7 + 2 * 3
  cfg = model.config
  grid = (2, 4, 4)
  row = ([1, 2] + [cfg.vision_start_token_id] + [cfg.video_token_id] * 8
         + [cfg.vision_end_token_id, 3])
  inputs = qt.make_inputs([row], videos=[grid])
  out = np.asarray(vm.logits(model, inputs))
  assert out.shape == (1, len(row), cfg.vocab_size) and np.isfinite(out).all()
