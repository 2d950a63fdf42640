"""On 8 simulated CPU devices (fsdp=4 x tensor=2) the sharded VisionCoach step, with image
inputs in both branches, equals the single-device step, its batch rows are placed over fsdp,
params and optimizer moments stay sharded, and a checkpoint restores onto the same shardings;
with the decoder layers scanned and rematerialised (`-m slow`) the same steps end where the
unrolled ones do. Runs in a subprocess so the rest of the session keeps one device."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8")
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    from jax.sharding import PartitionSpec as P
    assert jax.device_count() == 8
    import rl_testutil as ru
    from vcoach_jax.parallel import mesh as mesh_lib
    from vcoach_jax.rl import train_step as ts

    cfg = ru.test_config(**{{"optim.lr": 2e-5, "data.batch_size": 4}})
    cfg.parallel.mesh = (("data", 1), ("fsdp", 4), ("tensor", 2))
    # Both branches with images: the vision tower runs in the sharded program too.
    raw = ru.rollout_batch(ru.tiny_model().config, 4, vision=True)
    prompted = ru.rollout_batch(ru.tiny_model().config, 4, seed=7, prompted=True, vision=True)
    assert raw.prompt.pixels is not None and prompted.prompt.pixels is not None
    rng = jax.random.key(0)
    results = []
    for mesh in (None, mesh_lib.make_mesh(dict(cfg.parallel.mesh))):
      step, state, ref = ts.setup(cfg, ru.tiny_model(), mesh, group_size=ru.G)
      for _ in range(2):
        state, m = step(state, ref, raw, prompted, rng)
      results.append((jax.tree.map(np.asarray, state.params), m, state))
    (p1, m1, _), (p2, m2, sharded) = results
    placed = step.programs[4].place(ts.StepBatch(raw, prompted))
    assert placed.raw.tokens.sharding.spec == P("fsdp", None), placed.raw.tokens.sharding
    assert placed.raw.prompt.pixels.sharding.is_fully_replicated
    for key in ("loss", "gspo", "kl", "nll", "grad_norm"):
      np.testing.assert_allclose(m2[key], m1[key], rtol=1e-5, atol=1e-6, err_msg=key)
    diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, p2)))
    assert diff <= 1e-5, diff
    q = sharded.params["model"]["layers"][0]["self_attn"]["q_proj"]["kernel"][...]
    assert q.sharding.spec == P("fsdp", "tensor"), q.sharding
    assert np.prod(q.addressable_shards[0].data.shape) * 8 == q.size
    mu = sharded.opt_state[1][0].mu["model"]["layers"][0]["self_attn"]["q_proj"]["kernel"][...]
    assert mu.sharding.spec == P("fsdp", "tensor"), mu.sharding
    # Checkpoint round trip onto the same shardings.
    from vcoach_jax.checkpointing import Checkpointer
    ckpt = Checkpointer({ckpt!r}, keep=1)
    ckpt.save(2, sharded, rng)
    back = ckpt.restore(sharded).state
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(sharded)):
      assert a.sharding == b.sharding, (a.sharding, b.sharding)
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if not {scanned!r}:
      print("SHARDED_STEP_OK", diff, float(m2["loss"]))
      sys.exit(0)
    # The same two steps with the decoder layers scanned (and rematerialised), sharded: the
    # stacked weights (same initial values, layer by layer) end where the unrolled ones do.
    mesh = mesh_lib.make_mesh(dict(cfg.parallel.mesh))
    step, state, ref = ts.setup(cfg, ru.tiny_model(scan_layers=True, remat_policy="full"), mesh,
                                group_size=ru.G)
    for _ in range(2):
      state, m3 = step(state, ref, raw, prompted, rng)
    for key in ("loss", "gspo", "kl", "nll", "grad_norm"):
      np.testing.assert_allclose(m3[key], m1[key], rtol=1e-5, atol=1e-6, err_msg=key)
    stacked = state.params["model"]["layers"]["mlp"]["down_proj"]["kernel"][...]
    assert stacked.sharding.spec == P(None, "tensor", "fsdp"), stacked.sharding
    for i in range(stacked.shape[0]):
      np.testing.assert_allclose(
          np.asarray(stacked)[i], p1["model"]["layers"][i]["mlp"]["down_proj"]["kernel"][...],
          atol=1e-5)
    print("SHARDED_STEP_OK", diff, float(m2["loss"]))
""")


def _run(tmp_path, scanned: bool):
  tests = pathlib.Path(__file__).parent
  env = dict(os.environ, USE_TF="0",
             PYTHONPATH=os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")]))
  script = _SCRIPT.format(tests=str(tests), ckpt=str(tmp_path / "ckpt"), scanned=scanned)
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                        timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  assert "SHARDED_STEP_OK" in proc.stdout


def test_sharded_step_equals_single_device(tmp_path):
  _run(tmp_path, scanned=False)


# Slow (a third compilation of the sharded step): the scanned layers' sharded forward is covered
# by tests/test_model_sharding.py (it equals the single-device one; stacked weights sharded
# P(None, "fsdp", "tensor")), their gradients with remat by tests/test_model_scan.py (equal to
# the unrolled model's, layer by layer), and the sharded step by the test above.
@pytest.mark.slow
def test_scanned_sharded_step_equals_unrolled(tmp_path):
  _run(tmp_path, scanned=True)
