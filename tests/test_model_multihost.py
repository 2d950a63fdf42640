"""Two JAX processes (2 CPU devices each, joined by `jax.distributed` over gloo) load one HF
checkpoint onto a 4-device fsdp x tensor mesh that spans both: each process holds only its own
shards, the sharded forward equals a single-device forward, and `save_hf` from both processes
writes (from process 0) exactly the tensors of the original checkpoint."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import safetensors.numpy

import qwen_testutil as qt

_WORKER = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ["USE_TF"] = "0"
    pid = int(sys.argv[1])
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize({addr!r}, num_processes=2, process_id=pid)
    import numpy as np
    from jax.experimental import multihost_utils
    from vcoach_jax import model as vm
    from vcoach_jax.parallel import mesh as mesh_lib

    assert jax.device_count() == 4 and jax.local_device_count() == 2
    inputs = dict(np.load({inputs!r}))
    mesh = mesh_lib.make_mesh({{"fsdp": 2, "tensor": 2}})
    sharded = vm.load_hf({ckpt!r}, mesh=mesh)
    local = vm.load_hf({ckpt!r})  # this process's own single-device copy, as the reference

    q = sharded.model.layers[0].self_attn.q_proj.kernel.get_value()
    ref_q = np.asarray(local.model.layers[0].self_attn.q_proj.kernel.get_value())
    assert not q.is_fully_addressable
    assert q.sharding.spec == jax.P("fsdp", "tensor"), q.sharding
    assert len(q.addressable_shards) == 2
    for shard in q.addressable_shards:
      assert shard.data.shape == (ref_q.shape[0] // 2, ref_q.shape[1] // 2)
      np.testing.assert_array_equal(np.asarray(shard.data), ref_q[shard.index])

    with mesh:
      out = vm.logits(sharded, inputs)
    out = np.asarray(multihost_utils.process_allgather(out, tiled=True))
    ref = np.asarray(vm.logits(local, inputs))
    valid = inputs["attention_mask"].astype(bool)
    diff = float(np.abs(out - ref)[valid].max())
    assert diff <= 1e-5, diff
    vm.save_hf(sharded, {saved!r}, max_shard_bytes=300_000)
    print("worker", pid, "ok", diff)
""")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_process_load_forward_save(tmp_path: pathlib.Path):
  ckpt, saved = tmp_path / "ckpt", tmp_path / "saved"
  qt.hf_model(seed=5).save_pretrained(ckpt)
  rng = np.random.default_rng(1)
  g_vid = (2, 4, 4)
  rows = [qt.text_row(rng, 3) + qt.vision_run(qt.VIDEO, g_vid) + qt.text_row(rng, 2),
          qt.text_row(rng, 6)]
  inputs = qt.make_inputs(rows, videos=[g_vid], seconds=[2.0])
  np.savez(tmp_path / "inputs.npz", **{k: np.asarray(v) for k, v in inputs.items()})
  script = tmp_path / "worker.py"
  script.write_text(_WORKER.format(addr=f"localhost:{_free_port()}", ckpt=str(ckpt),
                                   saved=str(saved), inputs=str(tmp_path / "inputs.npz")))
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parent))
  procs = [subprocess.Popen([sys.executable, str(script), str(i)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=240)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0 and f"worker {i} ok" in out, out[-3000:]

  # Process 0 wrote a sharded folder (several safetensors + index) with the original tensors.
  assert (saved / "model.safetensors.index.json").exists()
  assert len(list(saved.glob("model-*.safetensors"))) > 1
  assert not list(saved.glob(".part-*"))
  original = safetensors.numpy.load_file(str(ckpt / "model.safetensors"))
  written = {}
  for f in saved.glob("model-*.safetensors"):
    written.update(safetensors.numpy.load_file(str(f)))
  assert set(written) == set(original)
  for name, x in original.items():
    np.testing.assert_array_equal(written[name], x, err_msg=name)
