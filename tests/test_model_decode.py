"""Prefill + one-token decode steps reproduce the full forward's logits."""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")

import numpy as np  # noqa: E402

import qwen_testutil as qt  # noqa: E402
from vcoach_jax import model as vm  # noqa: E402


def test_prefill_then_decode_equals_full_forward(tmp_path):
  hf = qt.hf_model(seed=3)
  hf.save_pretrained(tmp_path)
  jm = vm.load_hf(tmp_path)
  rng = np.random.default_rng(0)
  g_vid, g_img = (2, 4, 4), (1, 4, 6)
  prompts = [qt.text_row(rng, 2) + qt.vision_run(qt.VIDEO, g_vid) + qt.text_row(rng, 3),
             qt.text_row(rng, 1) + qt.vision_run(qt.IMAGE, g_img) + qt.text_row(rng, 1)]
  steps = 4
  new_tokens = rng.integers(1, 400, size=(2, steps))
  prompt = qt.make_inputs(prompts, images=[g_img], videos=[g_vid], seconds=[1.5])
  full = dict(prompt)
  full["input_ids"] = np.concatenate([prompt["input_ids"], new_tokens], 1)
  full["attention_mask"] = np.concatenate([prompt["attention_mask"], np.ones_like(new_tokens)], 1)
  ref = np.asarray(vm.logits(jm, full))  # [B, T + steps, V]
  # The full forward itself matches transformers.
  valid = full["attention_mask"].astype(bool)
  assert np.abs(ref - qt.torch_logits(hf, full))[valid].max() <= 1e-4

  t = prompt["input_ids"].shape[1]
  last, cache = vm.prefill(jm, prompt, max_len=t + steps + 3)
  np.testing.assert_allclose(np.asarray(last), ref[:, t - 1], atol=1e-4, rtol=0)
  for s in range(steps):
    step_logits, cache = vm.decode_step(jm, new_tokens[:, s], cache)
    np.testing.assert_allclose(np.asarray(step_logits), ref[:, t + s], atol=1e-4, rtol=0,
                               err_msg=f"decode step {s}")
  assert int(cache.index) == t + steps
  np.testing.assert_array_equal(np.asarray(cache.valid[:, :t + steps]), valid)
  assert not np.asarray(cache.valid[:, t + steps:]).any()
