"""The cached prefill applies the LM head to the last prompt position only: its program holds no
[rows, T, vocab] array (the full-logits forward would), its temp memory drops by about that
array's bytes, and its logits equal the last column of the full forward."""

from __future__ import annotations

import functools
import re

import jax
import numpy as np
from flax import nnx

from vcoach_jax import model as vm
from vcoach_jax.model import qwen2_5_vl as qwen

B, T = 2, 1024


@functools.partial(jax.jit, static_argnums=0, donate_argnums=3)
def _prefill_all_positions(graphdef, state, inputs, cache):
  """The prefill as it was: the LM head over every position, then the last column kept."""
  logits, cache = nnx.merge(graphdef, state)(inputs, cache)
  return logits[:, -1], cache


def test_prefill_has_no_full_logits():
  # Query-block attention keeps the score arrays small and a wider vocabulary makes the logits the
  # largest array, so the memory figure shows it.
  cfg = vm.ModelConfig.tiny(vocab_size=4096, attention_impl="chunked", attention_chunk=64)
  model = vm.Qwen2_5_VL(cfg, rngs=nnx.Rngs(0))
  ids = np.random.default_rng(0).integers(0, 400, (B, T))
  mask = np.ones((B, T), np.int32)
  mask[0, :100] = 0  # a left-padded row
  inputs = vm.prepare_inputs(cfg, {"input_ids": ids, "attention_mask": mask})
  graphdef, state = nnx.split(model)
  cache = lambda: vm.init_cache(cfg, B, T)  # noqa: E731
  full_logits = f"{B},{T},{cfg.vocab_size}"  # in HLO shapes, e.g. f32[2,1024,512]

  def compiled(fn):
    c = fn.lower(graphdef, state, inputs, cache()).compile()
    return c, re.findall(r"\[([\d,]+)\]", c.as_text())
  now, now_shapes = compiled(qwen._prefill)  # pylint: disable=protected-access
  old, old_shapes = compiled(_prefill_all_positions)
  assert full_logits in old_shapes  # the check would see the array were it there
  assert full_logits not in now_shapes
  logits_bytes = B * T * cfg.vocab_size * 4  # 32 MiB
  old_temp = old.memory_analysis().temp_size_in_bytes  # ~34.1 MB
  now_temp = now.memory_analysis().temp_size_in_bytes  # ~9.3 MB
  print(f"prefill temp bytes: all positions {old_temp}, last only {now_temp}, "
        f"[B, T, vocab] fp32 {logits_bytes}")
  assert old_temp >= logits_bytes and now_temp < logits_bytes / 2, (old_temp, now_temp)

  last, _ = vm.prefill(model, inputs, max_len=T)
  want = vm.logits(model, {"input_ids": ids, "attention_mask": mask})[:, -1]
  np.testing.assert_allclose(np.asarray(last), np.asarray(want), atol=1e-5, rtol=1e-5)
