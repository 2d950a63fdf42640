"""The group-shared prompt forward of `completion_logprobs` (prompt once per prompt, G
completions against its repeated cache) gives the joint forward's log-probs and gradients."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

import rl_testutil as ru
from vcoach_jax.rl import logprobs


def _joint(model, prompt, tokens, mask, g):
  t, n = prompt.input_ids.shape[1], tokens.shape[1]
  h = model.hidden_states(logprobs.sequence_inputs(prompt, tokens, mask, g))
  return logprobs._picked(model, h[:, t - 1:t + n - 1], tokens)  # pylint: disable=protected-access


def test_shared_prompt_forward_matches_the_joint_forward_with_vision():
  model = ru.tiny_model(seed=3)
  batch = ru.rollout_batch(model.config, 3, vision=True, seed=5)
  graphdef, params = nnx.split(model)

  def run(fn):
    def loss(p):
      lp = fn(nnx.merge(graphdef, p), batch.prompt, batch.tokens, batch.mask, ru.G)
      return (lp * batch.mask).sum(), lp
    (_, lp), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return np.asarray(lp), jax.tree.leaves(grads)

  lp_shared, g_shared = run(logprobs.completion_logprobs)
  lp_joint, g_joint = run(_joint)
  m = np.asarray(batch.mask) == 1
  assert m.sum() > 0 and (~m).sum() > 0  # ragged completions
  np.testing.assert_allclose(lp_shared[m], lp_joint[m], rtol=1e-5, atol=2e-5)
  for a, b in zip(g_shared, g_joint):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=2e-5)
