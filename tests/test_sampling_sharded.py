"""On 8 simulated CPU devices (data 2 x fsdp 2 x tensor 2, and fsdp 8) the sampler gives the same
rollouts as on one device for a fixed key (sampled, with a repetition penalty: its seen-id carry
is sharded by rows too), decoding from each weights layout; at fsdp 8 the compiled decode loop
gathers no weight (its only all-gather is the [rows, vocab] logits for the top-k). Runs in a
subprocess so the test session keeps one device."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8")
    sys.path.insert(0, {tests!r})
    import dataclasses
    import jax, numpy as np
    from flax import nnx
    assert jax.device_count() == 8, jax.devices()
    import qwen_testutil as qt
    import hlo_testutil as ht
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
    def check(got):
      np.testing.assert_array_equal(got.tokens, want.tokens)
      np.testing.assert_array_equal(got.mask, want.mask)
      diff = np.abs(got.logprobs - want.logprobs).max()
      assert diff <= 1e-5, diff
      return diff
    sampler = Sampler(sharded, None, mesh, end_ids=[505], pad_id=0)
    for layout in ("as_trained", "tensor"):
      diff = check(sampler.generate(inputs, dataclasses.replace(config, weights_layout=layout),
                                    key))

    # fsdp 8: the default layout (replicated here: CPU devices report no memory limit).
    mesh8 = mesh_lib.make_mesh({{"fsdp": 8}})
    fsdp8 = mesh_lib.shard_model(vm.Qwen2_5_VL(cfg, rngs=nnx.Rngs(3)), mesh8)
    sampler8 = Sampler(fsdp8, None, mesh8, end_ids=[505], pad_id=0)
    check(sampler8.generate(inputs, config, key))
    assert sampler8._weights.last_layout == "replicated"
    weight_shapes = {{",".join(map(str, x.shape)) for x in jax.tree.leaves(nnx.state(fsdp8))
                     if x.ndim >= 1}}
    def gathered(layout):  # (bytes all-gathered per decode step, shapes of those arrays)
      hlo = sampler8.lower(inputs, dataclasses.replace(config, weights_layout=layout),
                           key).compile().as_text()
      body = ht.decode_loop(hlo)
      return ht.collective_bytes(hlo, body, "all-gather"), ht.collective_shapes(
          hlo, body, "all-gather")
    before, _ = gathered("as_trained")
    after, shapes = gathered("auto")
    rows, vocab = 4 * config.num_samples, cfg.vocab_size
    assert not set(shapes) & weight_shapes, (shapes, weight_shapes)
    # Left: the [rows, vocab] fp32 logits for the top-k and a few bytes of per-row state.
    assert f"{{rows}},{{vocab}}" in shapes and after <= rows * vocab * 4 + 1024, (after, shapes)
    print("GATHERED_PER_STEP", before, after)
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
  print(proc.stdout)
