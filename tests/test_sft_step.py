"""The SFT step: its loss is the token cross-entropy of the targets (checked against a direct
computation from full logits) and it learns a fixed batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rl_testutil as ru
from vcoach_jax.model.qwen2_5_vl import ModelInputs
from vcoach_jax.rl.logprobs import completion_logprobs
from vcoach_jax.sft import sequence
from vcoach_jax.sft import step as sft


def _teacher_forced(prompt, target, tmask):
  """(prompt length, ids, ModelInputs) of prompt + target in one sequence: the direct forward."""
  t, n = prompt.input_ids.shape[1], target.shape[1]
  ids = np.concatenate([prompt.input_ids, target], 1)
  pos = np.concatenate([prompt.positions, np.broadcast_to(
      (t + np.arange(n))[None, None] + prompt.rope_deltas[None, :, None], (3, len(target), n))], 2)
  full = ModelInputs(ids, np.concatenate([prompt.attention_mask, tmask.astype(bool)], 1),
                     pos.astype(np.int32), prompt.rope_deltas)
  return t, ids, full


def test_sft_loss_matches_direct_cross_entropy_and_learns():
  cfg = ru.test_config(**{"sft.lr": 1e-2, "sft.steps": 50})
  model = ru.tiny_model(seed=4)
  prompt = ru.prompt_inputs(model.config, 2, vision=False)
  rng = np.random.default_rng(0)
  target = rng.integers(1, 400, size=(2, 5)).astype(np.int32)
  tmask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.int32)
  batch = sft.SFTBatch(prompt, target, tmask)
  # Direct: full forward over prompt + target, log-softmax, pick the target tokens.
  t, ids, full = _teacher_forced(prompt, target, tmask)
  graphdef, params = nnx.split(model)

  @jax.jit
  def both(params):
    m = nnx.merge(graphdef, params)
    return jax.nn.log_softmax(m(full)[0], -1)[:, t - 1:-1], sft.sft_loss(m, batch)
  logp, (loss, m) = both(params)
  picked = np.take_along_axis(np.asarray(logp), target[..., None], -1)[..., 0]
  direct = -(picked * tmask).sum() / tmask.sum()
  np.testing.assert_allclose(loss, direct, rtol=1e-5)
  assert float(m["num_tokens"]) == 7
  step, state = sft.setup(cfg, model)
  losses = []
  for _ in range(5):
    state, m = step(state, batch, jax.random.key(0))
    losses.append(float(m["loss"]))
  assert float(m["lr"]) < 1e-2 and float(m["skipped"]) == 0
  assert losses[-1] < 0.7 * losses[0], losses


def test_loss_masks_on_a_tiny_tokenized_example():
  cfg = ru.tiny_model().config
  vs, img, vid, ve = (cfg.vision_start_token_id, cfg.image_token_id, cfg.video_token_id,
                      cfg.vision_end_token_id)
  ids = np.array([[0, 0, 7, 8, vs, img, img, ve, 9],
                  [5, vs, vid, vid, ve, 6, 7, 8, 9]], np.int32)
  attn = np.array([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9], np.int32)
  tmask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], np.int32)
  arrays = {"input_ids": ids, "attention_mask": attn, "target_mask": tmask,
            "target_ids": np.ones((2, 4), np.int32)}
  prompt, target = sequence.loss_masks(arrays, cfg, "sequence")
  # Pads, image/video placeholders and each row's first token carry no loss; the vision
  # start/end markers and the text do (the released SFT masks only the placeholders).
  np.testing.assert_array_equal(prompt, [[0, 0, 0, 1, 1, 0, 0, 1, 1],
                                         [0, 1, 0, 0, 1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(target, tmask)
  prompt, target = sequence.loss_masks(arrays, cfg, "assistant")  # today's mask
  assert not prompt.any() and (target == tmask).all()
  with pytest.raises(ValueError, match="sft.loss_on"):
    sequence.loss_masks(arrays, cfg, "all")


def test_sequence_loss_matches_direct_cross_entropy_and_learns():
  cfg = ru.test_config(**{"sft.lr": 1e-2, "sft.steps": 50, "sft.loss_on": "sequence"})
  model = ru.tiny_model(seed=4)
  prompt = ru.prompt_inputs(model.config, 2, vision=False)
  rng = np.random.default_rng(1)
  target = rng.integers(1, 400, size=(2, 5)).astype(np.int32)
  tmask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)
  pmask = sequence.prompt_loss_mask(np.asarray(prompt.input_ids), np.asarray(prompt.attention_mask),
                                    (model.config.image_token_id,))
  batch = sft.SFTBatch(prompt, target, tmask, pmask)
  t, ids, full = _teacher_forced(prompt, target, tmask)
  graphdef, params = nnx.split(model)

  @jax.jit
  def both(params):
    m = nnx.merge(graphdef, params)
    chunked = sequence.sequence_logprobs(m, prompt, target, tmask, chunk=3)  # 3 ∤ length
    return jax.nn.log_softmax(m(full)[0], -1)[:, :-1], chunked, sft.sft_loss(m, batch)
  logp, chunked, (loss, m) = both(params)
  picked = np.take_along_axis(np.asarray(logp), ids[:, 1:, None], -1)[..., 0]
  mask = np.concatenate([pmask, tmask], 1)[:, 1:]
  np.testing.assert_allclose(np.asarray(chunked) * mask, picked * mask, rtol=1e-5, atol=1e-5)
  direct = -(picked * mask).sum() / mask.sum()
  np.testing.assert_allclose(loss, direct, rtol=1e-5)
  assert float(m["num_tokens"]) == mask.sum() > tmask.sum()
  # The chunked, recomputed LM head has the gradient of the direct loss.
  def direct_loss(params):
    lp = jax.nn.log_softmax(nnx.merge(graphdef, params)(full)[0], -1)[:, :-1]
    lp = jnp.take_along_axis(lp, ids[:, 1:, None], -1)[..., 0]
    return -(lp * mask).sum() / mask.sum()
  g_direct = jax.jit(jax.grad(direct_loss))(params)
  g_ours = jax.jit(jax.grad(lambda p: sft.sft_loss(nnx.merge(graphdef, p), batch)[0]))(params)
  for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_direct)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  step, state = sft.setup(cfg, model)
  losses = []
  for _ in range(2):  # the step runs with the prompt mask (and learns)
    state, m = step(state, batch, jax.random.key(0))
    losses.append(float(m["loss"]))
  assert losses[1] < losses[0], losses


def test_grad_accumulation_weighs_micro_batches_by_tokens():
  """Micro-batches with 9 and 2 target tokens: the accumulated update is the whole batch's
  token-mean update (not the mean of the two micro-batch means)."""
  cfg = ru.test_config(**{"sft.lr": 1e-2, "optim.eps": 1.0, "optim.weight_decay": 0.0})
  prompt = ru.prompt_inputs(ru.tiny_model().config, 4, vision=True)
  rng = np.random.default_rng(1)
  target = rng.integers(1, 400, size=(4, 5)).astype(np.int32)
  tmask = np.array([[1] * 5, [1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]], np.int32)
  batch = sft.SFTBatch(prompt, target, tmask)
  out = []
  for k in (1, 2):
    with cfg.unlocked():
      cfg.optim.grad_accum = k
    step, state = sft.setup(cfg, ru.tiny_model(seed=5))
    start = jax.device_get(state.params)
    state, m = step(state, batch, jax.random.key(0))
    out.append((jax.device_get(state.params), m))
  (p1, m1), (p2, m2) = out
  np.testing.assert_allclose(m2["loss"], m1["loss"], rtol=1e-5)
  assert float(m2["num_tokens"]) == float(m1["num_tokens"]) == 11
  moved = max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(start)))
  assert moved > 1e-4  # the step moved the weights (the comparison below is not vacuous)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), p2, p1)


def test_sft_schedule_takes_the_sft_lr_warmup_and_steps():
  from vcoach_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.rl import optim  # pylint: disable=g-import-not-at-top
  config = config_lib.load("configs/default.py", ["sft.lr=0.01", "sft.steps=100",
                                                  "sft.warmup_steps=10", "optim.warmup_steps=0",
                                                  "optim.lr=0.5"])
  o = sft.sft_optim_config(config)
  assert (o.lr, o.total_steps, o.warmup_steps) == (0.01, 100, 10)
  schedule = optim.learning_rate_schedule(o)
  assert float(schedule(0)) == 0.0 and float(schedule(5)) == pytest.approx(0.005)
  assert float(schedule(10)) == pytest.approx(0.01) and float(schedule(100)) == pytest.approx(0.0)
  assert config.optim.warmup_steps == 0  # RL's schedule keeps its own


def test_box_weights_weigh_the_coordinates_and_the_loss_is_their_weighted_mean():
  # ids: 7 = <box>, 8 = </box>; the coordinates (and their brackets/commas) lie between.
  ids = np.array([[3, 7, 4, 5, 8, 6, 7, 4, 8], [3, 3, 3, 3, 3, 0, 0, 0, 0]], np.int32)
  w = sft.box_weights(ids, (7, 8), 4.0)
  np.testing.assert_array_equal(w, [[1, 1, 4, 4, 1, 1, 1, 4, 1], [1] * 9])
  assert sft.box_weights(ids, (7, 8), 1.0) is None and sft.box_weights(ids, None, 4.0) is None
  model = ru.tiny_model(seed=4)
  prompt = ru.prompt_inputs(model.config, 2, vision=False)
  tmask = np.array([[1] * 9, [1] * 5 + [0] * 4], np.int32)
  graphdef, params = nnx.split(model)
  plain, weighted = jax.jit(lambda p: (
      sft.sft_loss(nnx.merge(graphdef, p), sft.SFTBatch(prompt, ids, tmask)),
      sft.sft_loss(nnx.merge(graphdef, p), sft.SFTBatch(prompt, ids, tmask, None, w))))(params)
  lp = np.asarray(jax.jit(lambda p: completion_logprobs(nnx.merge(graphdef, p), prompt, ids,
                                                       tmask, 1))(params))
  np.testing.assert_allclose(weighted[0], -(lp * w * tmask).sum() / (w * tmask).sum(), rtol=1e-5)
  np.testing.assert_allclose(weighted[1]["nll"], plain[0], rtol=1e-6)  # the metric: unweighted
  assert float(weighted[1]["num_tokens"]) == 14
