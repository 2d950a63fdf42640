"""LoRA adapters (unmerged == merged, merged save loads in transformers) and bf16 vs fp32."""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import transformers  # noqa: E402
from flax import nnx  # noqa: E402

import qwen_testutil as qt  # noqa: E402
from vcoach_jax import model as vm  # noqa: E402
from vcoach_jax.model import lora  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  hf = qt.hf_model(seed=5)
  path = tmp_path_factory.mktemp("ckpt")
  hf.save_pretrained(path)
  return hf, path


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  g_vid = (2, 4, 6)
  rows = [qt.text_row(rng, 3) + qt.vision_run(qt.VIDEO, g_vid) + qt.text_row(rng, 4),
          qt.text_row(rng, 7)]
  return qt.make_inputs(rows, videos=[g_vid], seconds=[0.5])


def _randomise_lora(model):
  """B starts at zero (a no-op adapter); give it values so the test can see the delta."""
  key = jax.random.key(7)
  for _, linear in lora.lora_linears(model):
    key, sub = jax.random.split(key)
    b = linear.lora.b
    b.set_value(0.05 * jax.random.normal(sub, b.get_value().shape, b.get_value().dtype))


def test_lora_unmerged_merged_and_saved(ckpt, tmp_path):
  hf, path = ckpt
  inputs = _inputs()
  valid = inputs["attention_mask"].astype(bool)
  jm = vm.load_hf(path)
  base = np.asarray(vm.logits(jm, inputs))
  n = lora.apply_lora(jm, rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj", "attn.qkv"))
  assert n == 2 * 3 + 3 * 2  # text: 2 layers x 3; vision: 3 blocks x (mlp.down_proj, attn.qkv)
  assert len(nnx.state(jm, nnx.LoRAParam)) > 0
  # B = 0: a fresh adapter changes nothing.
  np.testing.assert_allclose(np.asarray(vm.logits(jm, inputs)), base, atol=1e-6)
  _randomise_lora(jm)
  unmerged = np.asarray(vm.logits(jm, inputs))
  assert np.abs(unmerged - base)[valid].max() > 1e-2
  vm.save_hf(jm, tmp_path / "merged")  # writes merged weights, leaves the adapters in place
  assert lora.lora_linears(jm)
  back = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
      tmp_path / "merged", attn_implementation="eager").eval()
  assert np.abs(qt.torch_logits(back, inputs) - unmerged)[valid].max() <= 1e-4
  lora.merge_lora(jm)
  assert not lora.lora_linears(jm)
  assert np.abs(np.asarray(vm.logits(jm, inputs)) - unmerged)[valid].max() <= 1e-4


def test_lora_targets_must_match(ckpt):
  jm = vm.load_hf(ckpt[1])
  with pytest.raises(ValueError, match="no linear layer matches"):
    lora.apply_lora(jm, rank=2, alpha=2.0, targets=("nonexistent_proj",))


def test_bf16_forward_within_bf16_noise_of_fp32(ckpt):
  _, path = ckpt
  inputs = _inputs(1)
  valid = inputs["attention_mask"].astype(bool)
  ref = np.asarray(vm.logits(vm.load_hf(path), inputs))[valid]
  m16 = vm.load_hf(path, dtype=jnp.bfloat16)
  assert m16.model.layers[0].mlp.up_proj.kernel.get_value().dtype == jnp.bfloat16
  out = np.asarray(vm.logits(m16, inputs))[valid]
  assert out.dtype == np.float32
  # Relative to the logit scale; bf16 has an 8-bit mantissa (eps 2^-8 ~ 0.4%).
  scale = np.abs(ref).max()
  err = np.abs(out - ref).max() / scale
  assert err < 0.05, err
  assert np.mean(np.argmax(out, -1) == np.argmax(ref, -1)) > 0.9
