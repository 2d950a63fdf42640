"""The checkable numbers of the VisionCoach losses and coaching rules (docs/design.md §8.3-8.4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vcoach_jax.rl import coaching, distill, gspo
from vcoach_jax.rl.advantages import group_advantages

GSPO_KW = dict(eps_low=0.2, eps_high=0.2, beta=0.0)


def test_group_advantages_known_values():
  a = group_advantages(jnp.array([4.0, 2, 2, 0, 1, 1, 1, 1]), 4)
  np.testing.assert_allclose(a[:4], [1.22467, 0, 0, -1.22467], atol=1e-5)
  np.testing.assert_array_equal(a[4:], 0.0)
  with pytest.raises(ValueError):
    group_advantages(jnp.ones(4), 1)


def test_hardness_is_strict_and_per_task():
  r = np.array([3, 2, 2, 1.5, 3, 2, 2, 2, 2.21, 2.21, 2.21, 2.21])
  np.testing.assert_array_equal(coaching.hard_prompts(r, 4), [True, False, False])
  hard = coaching.hard_prompts(r, 4, tasks=["a", "b", "c"], k1_per_task={"b": 2.5})
  np.testing.assert_array_equal(hard, [True, True, False])


def test_candidates_answer_rule_and_ties():
  raw = np.array([0.2, 0.4, 0.0, 0.2])  # mean 0.2
  assert coaching.select_positives(raw, np.array([0.1, 0.5, 0.3, 0.9]),
                                   np.array([0.1, 0.5, 0.3, 0.9])) == [3, 1]
  none = np.array([0.2, 0.1, 0.0, 0.2])
  assert coaching.select_positives(raw, none, none) == []
  tie = np.array([0.5, 0.9, 0.9, 0.9])
  assert coaching.select_positives(raw, tie, tie) == [1, 2]
  w = coaching.positive_weights(np.tile(raw, 2), np.r_[[0.1, 0.5, 0.3, 0.9], [0.1, 0.5, 0.3, 0.9]],
                                np.array([True, False]), 4)
  np.testing.assert_array_equal(w, [0, 0.5, 0, 0.5, 0, 0, 0, 0])
  w = coaching.positive_weights(raw, none, np.array([True]), 4)
  np.testing.assert_array_equal(w, 0.0)


def test_candidates_total_rule():
  raw_acc, p_acc = np.array([0.0, 0, 0, 0]), np.array([0.0, 1, 0, 0])
  raw_tot, p_tot = np.array([1.0, 1, 1, 1]), np.array([2.0, 0.5, 1.5, 1])
  w = coaching.positive_weights(raw_acc, p_acc, np.array([True]), 4, rule="total",
                                raw_total=raw_tot, prompted_total=p_tot, num_positives=1)
  np.testing.assert_array_equal(w, [1, 0, 0, 0])  # rollout 1 has acc but total below the mean
  with pytest.raises(ValueError, match="needs raw_total"):
    coaching.positive_weights(raw_acc, p_acc, np.array([True]), 4, rule="total")


def test_k3_kl_value_and_clamp():
  np.testing.assert_allclose(gspo.k3_kl(jnp.array(-1.0), jnp.array(-1.5)), 0.106531, atol=1e-6)
  big = gspo.k3_kl(jnp.array(-100.0), jnp.array(0.0))  # lp_ref - lp = 100 -> clamped to 10
  np.testing.assert_allclose(big, np.exp(10.0) - 11.0, rtol=1e-6)


def test_gspo_log_ratio_clamp_makes_no_inf():
  lp = jnp.zeros((1, 3))
  old = jnp.full((1, 3), -20.0)  # log-ratio 20 -> clamped to 10
  loss, m = gspo.gspo_loss(lp, old, None, jnp.ones((1, 3)), jnp.array([-1.0]),
                           eps_low=0.2, eps_high=0.2, beta=0.0)
  np.testing.assert_allclose(m["ratio_mean"], np.exp(10.0), rtol=1e-6)
  np.testing.assert_allclose(loss, np.exp(10.0), rtol=1e-6)  # -min(r A, clip(r) A) with A=-1
  grad = jax.grad(lambda x: gspo.gspo_loss(x, old, None, jnp.ones((1, 3)), jnp.array([-1.0]),
                                           **GSPO_KW)[0])(lp)
  assert np.isfinite(grad).all()


def test_gspo_mu1_gradient_is_minus_advantage_times_mean_grad():
  rng = np.random.default_rng(0)
  w = jnp.asarray(rng.standard_normal((3, 5)))
  x = jnp.asarray(rng.standard_normal((4, 3)))
  mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
  adv = jnp.array([1.0, -0.5, 2.0, 0.0])
  lp_fn = lambda w: jax.nn.log_softmax(x @ w, axis=-1)  # noqa: E731  [4, 5] "token" log-probs
  loss_fn = lambda w: gspo.gspo_loss(lp_fn(w), None, None, mask, adv, **GSPO_KW)[0]  # noqa: E731
  assert abs(float(loss_fn(w)) + float(adv.mean())) < 1e-6  # ratio == 1 in value
  direct = jax.grad(lambda w: -jnp.mean(adv * gspo.masked_mean(lp_fn(w), mask)))(w)
  np.testing.assert_allclose(jax.grad(loss_fn)(w), direct, atol=1e-6)


@pytest.mark.parametrize("adv,shift,zero", [(1.0, 0.5, True), (1.0, -0.5, False),
                                            (-1.0, -0.5, True), (-1.0, 0.5, False)])
def test_gspo_clipping_zeroes_gradient_outside_band(adv, shift, zero):
  old = jnp.full((1, 4), -1.0)
  lp = old + shift  # ratio e^{+-0.5}: outside [0.8, 1.2]
  grad = jax.grad(lambda lp: gspo.gspo_loss(lp, old, None, jnp.ones((1, 4)), jnp.array([adv]),
                                            **GSPO_KW)[0])(lp)
  assert (np.abs(grad).max() == 0) == zero
  _, m = gspo.gspo_loss(lp, old, None, jnp.ones((1, 4)), jnp.array([adv]), **GSPO_KW)
  assert float(m["clip_frac"]) == float(zero)


def test_gspo_kl_term_and_aggregation():
  lp = jnp.array([[-1.0, -1.0, 5.0], [-1.0, -1.0, -1.0]])
  ref = jnp.array([[-1.5, -1.5, 0.0], [-1.0, -1.0, -1.0]])
  mask = jnp.array([[1, 1, 0], [1, 1, 1]])
  loss, m = gspo.gspo_loss(lp, None, ref, mask, jnp.zeros(2), eps_low=0.2, eps_high=0.2,
                           beta=0.04)
  # sequence 0: two tokens with kl 0.106531 (masked third ignored), sequence 1: zero.
  np.testing.assert_allclose(m["kl"], 0.106531 / 2, atol=1e-6)
  np.testing.assert_allclose(loss, 0.04 * 0.106531 / 2, atol=1e-7)


def test_nll_of_positives_and_combination():
  lp = jnp.array([[-1.0, -2.0, -3.0], [-0.5, 0.0, 0.0], [-9.0, -9.0, -9.0]])
  mask = jnp.array([[1, 1, 1], [1, 0, 0], [1, 1, 1]])
  nll, m = distill.nll_loss(lp, mask, jnp.array([0.5, 0.5, 0.0]), num_prompts=1)
  np.testing.assert_allclose(nll, 1.25, atol=1e-6)
  assert float(m["num_positives"]) == 2
  zero, _ = distill.nll_loss(lp, mask, jnp.zeros(3), num_prompts=1)
  assert float(zero) == 0.0
  assert abs(float(distill.combine(jnp.array(0.3), jnp.array(2.0), 0.1)) - 0.5) < 1e-6
  assert abs(float(distill.combine(jnp.array(0.3), jnp.array(jnp.nan), 0.1)) - 0.3) < 1e-6
  bad = lp.at[0, 0].set(jnp.nan)
  nll, m = distill.nll_loss(bad, mask, jnp.array([0.5, 0.5, 0.0]), num_prompts=1)
  np.testing.assert_allclose(nll, 0.25, atol=1e-6)  # the NaN row counts as zero
  assert float(m["nll_nonfinite"]) == 1
