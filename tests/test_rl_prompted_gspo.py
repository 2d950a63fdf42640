"""The `coach` method's prompted GSPO term (coaching without self-distillation): prompted rollouts
of hard prompts enter GSPO as their own groups; rows with advantage 0 (easy prompts, the padding
rows of the prompted batch) change nothing, so the gradient changes iff some hard row has a
nonzero advantage."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import rl_testutil as ru
from vcoach_jax import config as config_lib
from vcoach_jax.rl import train_step as ts
from vcoach_jax.rl.gspo import masked_mean


def _grads(model, raw, prompted, cfg):
  """(loss, metrics, gradient leaves), jitted as the update is (one compilation per layout)."""
  graphdef, params = nnx.split(model)

  def loss(p, raw, prompted):
    return ts.visioncoach_loss(nnx.merge(graphdef, p), None, raw, prompted, cfg)
  (value, metrics), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, raw, prompted)
  return float(value), metrics, jax.tree.leaves(g)


def _same(a, b) -> bool:
  return all(np.allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-7) for x, y in zip(a, b))


def test_prompted_gspo_term_changes_the_gradient_iff_a_hard_row_has_advantage():
  model = ru.tiny_model(seed=4)
  raw = ru.rollout_batch(model.config, 2)
  base = ru.rollout_batch(model.config, 2, seed=7, prompted=True)
  # alpha = 0 and beta = 0: the only possible effect of the prompted batch is the new term.
  off = ts.LossConfig(group_size=ru.G, alpha=0.0, beta=0.0)
  on = dataclasses.replace(off, prompted_gspo=True)
  loss_off, _, g_off = _grads(model, raw, base._replace(advantages=None), off)

  # Prompt 0 hard with a spread of prompted rewards, prompt 1 easy (a padding row: advantage 0).
  adv = np.zeros((2 * ru.G,), np.float32)
  adv[:ru.G] = np.asarray(base.advantages[:ru.G])
  assert np.abs(adv).max() > 0
  loss_on, m_on, g_on = _grads(model, raw, base._replace(advantages=adv), on)
  assert not _same(g_on, g_off)
  # At mu = 1 the term's value is -mean over all B*G rows of A (ratio == 1): padding rows are 0.
  np.testing.assert_allclose(float(m_on["gspo_prompted"]), -adv.sum() / adv.size, atol=1e-6)
  np.testing.assert_allclose(loss_on, loss_off + float(m_on["gspo_prompted"]), atol=1e-6)

  # Its gradient is that of -sum_rows(A * mean_t lp) / (B*G) under the prompted input.
  graphdef, params = nnx.split(model)

  def surrogate(p):
    lp = ts.completion_logprobs(nnx.merge(graphdef, p), base.prompt, base.tokens, base.mask,
                                ru.G)
    return -jnp.sum(adv * masked_mean(lp, base.mask)) / adv.size
  g_sur = jax.tree.leaves(jax.jit(jax.grad(surrogate))(params))
  for a, b, c in zip(g_on, g_off, g_sur):
    np.testing.assert_allclose(np.asarray(a) - np.asarray(b), np.asarray(c), atol=1e-5)

  # All advantages 0 (no hard prompt with a reward spread): exactly the gradient without the term.
  loss_zero, m_zero, g_zero = _grads(model, raw, base._replace(advantages=np.zeros_like(adv)), on)
  assert _same(g_zero, g_off) and loss_zero == loss_off and float(m_zero["gspo_prompted"]) == 0.0
  # ... and the flag off ignores the prompted advantages.
  _, _, g_ignored = _grads(model, raw, base._replace(advantages=adv), off)
  assert _same(g_ignored, g_off)


def test_the_method_sets_the_loss_constants():
  """`rl.method`: coach = prompted GSPO without NLL, full = NLL without prompted GSPO, gspo =
  no prompted branch at all (the update has only the program without one)."""
  loss = lambda method: ts.LossConfig.from_config(  # noqa: E731
      config_lib.load(None, [f"rl.method={method}"]))
  assert loss("coach").prompted_gspo and loss("coach").alpha == 0.0
  assert not loss("full").prompted_gspo and loss("full").alpha == 0.1
  assert not loss("gspo").prompted_gspo
  cfg = ru.test_config(**{"rl.method": "gspo"})
  step = ts.make_step(cfg, None, optax.sgd(0.1))
  assert list(step.programs) == [None]
  cfg = ru.test_config(**{"data.batch_size": 4, "optim.grad_accum": 2})
  assert set(ts.make_step(cfg, None, optax.sgd(0.1)).programs) == {None, 2, 4}
  try:
    config_lib.load(None, ["rl.method=distill"])
  except ValueError as e:
    assert "rl.method" in str(e) and "coach" in str(e)
  else:
    raise AssertionError("an unknown rl.method was accepted")


def test_a_compact_prompted_batch_gives_the_padded_layouts_loss_and_gradient():
  """The trainer passes only the hard prompts (P rows, a power of two <= B): one hard prompt in
  a 1-row prompted batch must train exactly as in a B-row batch whose other row is padding."""
  model = ru.tiny_model(seed=4)
  raw = ru.rollout_batch(model.config, 2)
  full = ru.rollout_batch(model.config, 2, seed=7, prompted=True)
  adv = np.zeros((2 * ru.G,), np.float32)
  adv[:ru.G] = np.asarray(full.advantages[:ru.G])
  w = np.asarray(full.weights).copy()
  w[ru.G:] = 0.0  # prompt 1 is padding: weight 0, advantage 0
  padded = full._replace(advantages=adv, weights=w)
  first = lambda x: None if x is None else np.asarray(x)[:ru.G]  # noqa: E731
  p = full.prompt
  compact = full._replace(
      prompt=p._replace(input_ids=p.input_ids[:1], attention_mask=p.attention_mask[:1],
                        positions=p.positions[:, :1], rope_deltas=p.rope_deltas[:1]),
      tokens=first(full.tokens), mask=first(full.mask), old_logprobs=first(full.old_logprobs),
      advantages=adv[:ru.G], weights=w[:ru.G])
  for cfg in (ts.LossConfig(group_size=ru.G, alpha=0.1, beta=0.0),
              ts.LossConfig(group_size=ru.G, alpha=0.0, beta=0.0, prompted_gspo=True)):
    loss_p, m_p, g_p = _grads(model, raw, padded, cfg)
    loss_c, m_c, g_c = _grads(model, raw, compact, cfg)
    np.testing.assert_allclose(loss_c, loss_p, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(float(m_c["nll"]), float(m_p["nll"]), rtol=1e-6)
    for a, b in zip(g_c, g_p):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
