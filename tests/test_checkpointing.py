"""Checkpoints: a train state (params + AdamW state), rng, step, config and data position
round-trip exactly, onto the same shardings; keep-last-k prunes old steps."""

from __future__ import annotations

import jax
import numpy as np

import rl_testutil as ru
from vcoach_jax import config as config_lib
from vcoach_jax.checkpointing import Checkpointer
from vcoach_jax.rl import optim, update


def _state(seed):
  cfg = ru.test_config()
  tx = optim.make_optimizer(cfg.optim)
  _, state = update.init_train_state(ru.tiny_model(seed=seed), tx, freeze_vision=True)
  # Make the optimizer state non-trivial.
  return state.replace(step=state.step + 7,
                       opt_state=jax.tree.map(lambda x: x + 0.5, state.opt_state))


def test_save_restore_identical_and_keep_last_k(tmp_path):
  config = config_lib.load(None, ["rl.alpha=0.2"])
  state, other = _state(0), _state(1)
  rng = jax.random.key(42)
  ckpt = Checkpointer(tmp_path / "ckpt", keep=2)
  written = []

  def data_save(prefix):
    written.append(prefix)
    with open(prefix + ".index", "w") as f:
      f.write("position 3")
  for step in (10, 20, 30):
    ckpt.save(step, state, rng, config=config, data_save=data_save, extra={"batch": step})
  assert ckpt.all_steps() == [20, 30]  # keep-last-2 pruned step 10
  assert not (tmp_path / "ckpt" / "10").exists()
  restored = ckpt.restore(other)  # target: a different state of the same structure
  assert restored.step == 30 and restored.extra == {"batch": 30}
  assert restored.config["rl"]["alpha"] == 0.2
  assert restored.data_path == written[-1]
  assert open(restored.data_path + ".index").read() == "position 3"
  np.testing.assert_array_equal(jax.random.key_data(restored.rng), jax.random.key_data(rng))
  assert jax.tree.structure(restored.state) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(state)):
    assert a.dtype == b.dtype and a.sharding == b.sharding
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  older = ckpt.restore(other, step=20)
  assert older.step == 20
  ckpt.close()
