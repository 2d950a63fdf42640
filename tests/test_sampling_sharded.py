"""On 8 simulated CPU devices (data 2 x fsdp 2 x tensor 2) the sampler gives the same rollouts
as on one device for a fixed key (sampled, with a repetition penalty: its seen-id carry is
sharded by rows too). Runs in a subprocess so the test session keeps one device."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    from flax import nnx
    assert jax.device_count() == 8, jax.devices()
    import qwen_testutil as qt
    from vcoach_jax import model as vm
    from vcoach_jax.parallel import mesh as mesh_lib
    from vcoach_jax.sampling import Sampler, SamplingConfig

    cfg = vm.ModelConfig.tiny()
    single = vm.Qwen2_5_VL(cfg, rngs=nnx.Rngs(3))
    mesh = mesh_lib.make_mesh({{"data": 2, "fsdp": 2, "tensor": 2}})
    sharded = mesh_lib.shard_model(vm.Qwen2_5_VL(cfg, rngs=nnx.Rngs(3)), mesh)
    rng = np.random.default_rng(0)
    g = (2, 4, 4)
    rows = [qt.text_row(rng, 2 + i) + qt.vision_run(qt.VIDEO, g) + qt.text_row(rng, 2)
            for i in range(2)] + [qt.text_row(rng, 6), qt.text_row(rng, 3)]
    inputs = vm.prepare_inputs(cfg, qt.make_inputs(rows, videos=[g, g], seconds=[1.0, 1.0]))
    config = SamplingConfig(max_new_tokens=8, num_samples=2, repetition_penalty=1.3)
    key = jax.random.key(1)
    want = Sampler(single, None, end_ids=[505], pad_id=0).generate(inputs, config, key)
    got = Sampler(sharded, None, mesh, end_ids=[505], pad_id=0).generate(inputs, config, key)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.mask, want.mask)
    diff = np.abs(got.logprobs - want.logprobs).max()
    assert diff <= 1e-5, diff
    # The weights really are sharded (heads over tensor, width over fsdp).
    q = sharded.model.layers[0].self_attn.q_proj.kernel.get_value()
    assert len(q.sharding.device_set) == 8 and q.addressable_shards[0].data.size * 4 == q.size
    print("SHARDED_SAMPLER_OK", diff)
""")


def test_sharded_sampler_equals_single_device():
  tests = pathlib.Path(__file__).parent
  env = dict(os.environ, USE_TF="0",
             PYTHONPATH=os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(tests=str(tests))],
                        capture_output=True, text=True, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  assert "SHARDED_SAMPLER_OK" in proc.stdout
