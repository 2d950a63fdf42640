"""The jitted VisionCoach train step on a tiny Qwen2.5-VL: it learns on a fixed batch, the
gradient reaches the vision tower unless frozen, the non-finite guard skips, micro-batch
accumulation equals one big batch, mu > 1 uses the stored old log-probs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rl_testutil as ru
from vcoach_jax.rl import optim, train_step as ts, update
from vcoach_jax.rl.gspo import masked_mean

RNG = jax.random.key(0)


def _objective(step, state, raw):
  """mean_i A_i * mean_t log p: what the GSPO gradient ascends at mu = 1."""
  lp = ts.rollout_logprobs(step, state, raw)
  return float(jnp.mean(raw.advantages * masked_mean(lp, raw.mask)))


def _vision_leaf(state):
  return np.asarray(state.params["visual"]["blocks"][0]["attn"]["qkv"]["kernel"][...]) \
      if "visual" in state.params else np.asarray(
          state.frozen["visual"]["blocks"][0]["attn"]["qkv"]["kernel"][...])


def test_step_learns_on_fixed_batch_updates_vision_and_skips_nonfinite():
  cfg = ru.test_config()
  model = ru.tiny_model()
  step, state, ref = ts.setup(cfg, model, group_size=ru.G)
  raw = ru.rollout_batch(model.config, 2, vision=True)
  prompted = ru.rollout_batch(model.config, 2, vision=True, seed=5, prompted=True)
  vision0 = _vision_leaf(state)
  before = _objective(step, state, raw)
  losses = []
  for _ in range(4):
    state, m = step(state, ref, raw, prompted, RNG)
    losses.append(float(m["loss"]))
    assert float(m["skipped"]) == 0.0 and float(m["num_positives"]) == 2.0
  assert losses[-1] < losses[0] - 0.02, losses
  assert _objective(step, state, raw) > before + 0.1
  assert int(state.step) == 4
  assert np.abs(_vision_leaf(state) - vision0).max() > 0  # the gradient reaches the vision tower
  # A NaN advantage: the update is skipped, params and optimizer state unchanged.
  kept = jax.tree.map(np.asarray, (state.params, state.opt_state))
  bad = raw._replace(advantages=raw.advantages.copy())
  bad.advantages[1] = np.nan
  state, m = step(state, ref, bad, prompted, RNG)
  assert float(m["skipped"]) == 1.0 and int(state.step) == 4
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, (state.params,
                                                                        state.opt_state)), kept)


def test_frozen_vision_is_outside_the_optimizer():
  cfg = ru.test_config(**{"optim.freeze_vision": True})
  model = ru.tiny_model(seed=1)
  step, state, ref = ts.setup(cfg, model, group_size=ru.G)
  assert "visual" not in state.params and "visual" in state.frozen
  assert "visual" not in jax.tree_util.keystr(jax.tree_util.tree_flatten_with_path(
      state.opt_state)[0])
  vision0 = _vision_leaf(state)
  state, m = step(state, ref, ru.rollout_batch(model.config, 2), None, RNG)
  assert float(m["skipped"]) == 0.0 and int(state.step) == 1
  np.testing.assert_array_equal(_vision_leaf(state), vision0)


@pytest.mark.parametrize("vision", [False, True])
def test_grad_accumulation_equals_one_big_batch(vision):
  """Also with remat (the reference forward runs outside the differentiated function); the
  step cuts the whole batch into micro-batches itself, and runs the prompts of all of them in
  one forward (`rl.prompt_once`: with images, their patches and segment tables merged back),
  or, with `optim.prompt_once` off, each micro-batch its own: the same update all three ways."""
  cfg = ru.test_config()
  model = ru.tiny_model(seed=2, remat_policy="full")
  raw = ru.rollout_batch(model.config, 4, vision=vision)
  prompted = ru.rollout_batch(model.config, 4, vision=vision, seed=3, prompted=True)
  tx, schedule = optax.sgd(0.5), optim.learning_rate_schedule(cfg.optim)
  loss_cfg = ts.LossConfig(group_size=ru.G)
  outs = []
  for k, once in ((1, True), (2, True), (2, False)):
    graphdef, state = update.init_train_state(ru.tiny_model(seed=2, remat_policy="full"), tx)
    ref = ts.reference_params(model)
    step = update.jit_update(ts.update_fn(graphdef, loss_cfg, tx, schedule, k, once),
                             grad_accum=k)
    state, m = step(state, ref, ts.StepBatch(raw, prompted), RNG)  # cut into k micro-batches
    outs.append((state.params, m))
  (p1, m1), *others = outs
  for p2, m2 in others:
    for key in ("loss", "gspo", "kl", "nll", "grad_norm"):
      np.testing.assert_allclose(m2[key], m1[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert float(m2["num_positives"]) == float(m1["num_positives"]) == 4.0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), p2, p1)


def test_mu2_passes_use_stored_old_logprobs():
  cfg = ru.test_config(**{"rl.mu": 2, "optim.lr": 2e-3, "rl.beta": 0.0})
  model = ru.tiny_model(seed=3)
  step, state, ref = ts.setup(cfg, model, group_size=ru.G)
  assert step.loss_config.use_old_logprobs
  raw = ru.rollout_batch(model.config, 2)
  raw = raw._replace(old_logprobs=np.asarray(ts.rollout_logprobs(step, state, raw)))
  state, hist = ts.run_passes(step, state, ref, [(raw, None)], RNG, mu=3)
  assert len(hist) == 3
  np.testing.assert_allclose(hist[0]["ratio_mean"], 1.0, atol=1e-5)
  np.testing.assert_allclose(hist[0]["gspo"], -np.mean(raw.advantages), atol=1e-5)
  assert abs(float(hist[2]["ratio_mean"]) - 1.0) > 1e-3  # later passes see the moved policy
  assert float(hist[2]["gspo"]) < float(hist[0]["gspo"])


def test_stack_microbatches_pads_segment_tables():
  cfg = ru.tiny_model().config
  a = ru.rollout_batch(cfg, 1, vision=True)
  b = ru.rollout_batch(cfg, 1, vision=True, seed=3)
  _, s_b, l_b = b.prompt.windows.gather.shape  # [blocks, segments, slots]
  b = b._replace(prompt=b.prompt._replace(windows=update.pad_segments(
      b.prompt.windows, 2 * s_b, l_b)))
  stacked = update.stack_microbatches([a, b])
  assert stacked.tokens.shape == (2,) + a.tokens.shape
  assert stacked.prompt.windows.gather.shape == (2,) + b.prompt.windows.gather.shape
  _, s, l = a.prompt.windows.gather.shape
  np.testing.assert_array_equal(stacked.prompt.windows.gather[0, :, :s, :l],
                                a.prompt.windows.gather)
  assert not stacked.prompt.windows.valid[0, :, s:].any()
  split = update.split_rows(ru.rollout_batch(cfg, 2), 2)
  assert split.prompt.positions.shape[:2] == (2, 3) and split.tokens.shape[0] == 2
