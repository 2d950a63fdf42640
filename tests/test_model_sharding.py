"""On 8 simulated CPU devices (fsdp=4 x tensor=2) the sharded forward equals the single-device
forward, and the parameters really are sharded (decoder layers unrolled and scanned). Runs in a
subprocess so that the rest of the test session keeps one device."""

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
    os.environ["USE_TF"] = "0"
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    from jax.sharding import PartitionSpec as P
    assert jax.device_count() == 8, jax.devices()
    import qwen_testutil as qt
    from vcoach_jax import model as vm
    from vcoach_jax.parallel import mesh as mesh_lib

    hf = qt.hf_model(seed=4)
    hf.save_pretrained({ckpt!r})
    rng = np.random.default_rng(0)
    g_img, g_vid = (1, 4, 6), (2, 4, 4)
    rows = [qt.text_row(rng, 3) + qt.vision_run(qt.IMAGE, g_img) + qt.text_row(rng, 2)
            + qt.vision_run(qt.VIDEO, g_vid), qt.text_row(rng, 5)]
    inputs = qt.make_inputs(rows, images=[g_img], videos=[g_vid], seconds=[2.0])

    single = vm.load_hf({ckpt!r})
    mesh = mesh_lib.make_mesh({{"fsdp": 4, "tensor": 2}})
    sharded = vm.load_hf({ckpt!r}, mesh=mesh)

    layer = sharded.model.layers[0]
    expect = {{
        "q_proj": (layer.self_attn.q_proj.kernel, P("fsdp", "tensor")),
        "o_proj": (layer.self_attn.o_proj.kernel, P("tensor", "fsdp")),
        "down_proj": (layer.mlp.down_proj.kernel, P("tensor", "fsdp")),
        "embed": (sharded.model.embed_tokens, P("tensor", "fsdp")),
        "lm_head": (sharded.lm_head.kernel, P("fsdp", "tensor")),
        "vit_qkv": (sharded.visual.blocks[0].attn.qkv.kernel, P("fsdp", "tensor")),
        "norm": (layer.input_layernorm.weight, P(None)),
    }}
    for name, (var, spec) in expect.items():
      x = var.get_value()
      assert x.sharding.spec == spec, (name, x.sharding)
      assert x.sharding.mesh.shape == {{"data": 1, "fsdp": 4, "tensor": 2}}, name
      if name != "norm":
        shard_shape = x.addressable_shards[0].data.shape
        assert np.prod(shard_shape) * 8 == x.size, (name, shard_shape, x.shape)
    assert len(single.model.layers[0].self_attn.q_proj.kernel.get_value().devices()) == 1

    with mesh:
      out = np.asarray(vm.logits(sharded, inputs))
    ref = np.asarray(vm.logits(single, inputs))
    valid = inputs["attention_mask"].astype(bool)
    diff = np.abs(out - ref)[valid].max()
    assert diff <= 1e-5, diff

    # Scanned layers: the stacked axis stays replicated, the rest shards as above.
    scanned = vm.load_hf({ckpt!r}, mesh=mesh, scan_layers=True)
    q = scanned.model.layers.self_attn.q_proj.kernel.get_value()
    assert q.sharding.spec == P(None, "fsdp", "tensor"), q.sharding
    assert q.addressable_shards[0].data.shape == (q.shape[0], q.shape[1] // 4, q.shape[2] // 2)
    with mesh:
      out_scan = np.asarray(vm.logits(scanned, inputs))
    diff_scan = np.abs(out_scan - ref)[valid].max()
    assert diff_scan <= 1e-5, diff_scan
    print("SHARDED_OK", diff, diff_scan)
""")


def test_sharded_forward_equals_single_device(tmp_path):
  tests = pathlib.Path(__file__).parent
  script = _SCRIPT.format(tests=str(tests), ckpt=str(tmp_path / "ckpt"))
  env = dict(os.environ, USE_TF="0",
             PYTHONPATH=os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  assert "SHARDED_OK" in proc.stdout
