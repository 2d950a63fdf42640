"""Two JAX processes (2 CPU devices each, `jax.distributed` over gloo, one 4-device fsdp x tensor
mesh spanning both):

- `load_hf` gives each process only its own shards, the sharded forward equals a single-device
  forward, and `save_hf` from both processes writes (from process 0) exactly the original tensors;
- `vcoach sft --distributed` trains exactly as one process does: same losses, same exported
  weights, one metrics file, one checkpoint with its data position.

One file, so that xdist runs them one after the other: two multi-process jobs at once on a
2-core machine starved one of them past the coordination service's shutdown barrier.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import safetensors.numpy
from conftest import free_port

import qwen_testutil as qt


def finish(procs: list[subprocess.Popen], timeout: float, done: str) -> list[str]:
  """The outputs of processes started together, each checked for exit 0 and for `done`
  (`{i}`: the process's index); on a timeout every one of them is killed (a peer left waiting
  would hold its port)."""
  outs = []
  for i, proc in enumerate(procs):
    try:
      outs.append(proc.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      tails = [p.communicate()[0][-2000:] for p in procs]
      raise AssertionError(f"timed out after {timeout} s; the processes' last output:\n"
                           + "\n----\n".join(tails)) from None
    assert proc.returncode == 0 and done.format(i=i) in outs[-1], outs[-1][-4000:]
  return outs


def metrics(workdir: pathlib.Path) -> list[dict]:
  """The per-step records of a run's metrics file."""
  with (workdir / "metrics" / "metrics.jsonl").open() as f:
    return [json.loads(line) for line in f]

_WORKER = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=2")
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
  script.write_text(_WORKER.format(addr=f"localhost:{free_port()}", ckpt=str(ckpt),
                                   saved=str(saved), inputs=str(tmp_path / "inputs.npz")))
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parent))
  procs = [subprocess.Popen([sys.executable, str(script), str(i)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
  finish(procs, 240, "worker {i} ok")

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


ARGS = ["sft", "--steps", "2", "--no-progress", "--set", "data.batch_size=4",
        "--set", "synthetic.num_train=16", "--set", "synthetic.num_eval=4",
        "--set", "data.read_parts=2"]  # the same batches for 1 and 2 processes


def _vcoach(args, env, **kw):
  return subprocess.Popen([sys.executable, "-m", "vcoach_jax.cli", *args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


# Slow: three training processes at once on a 2-core machine already loaded by the other xdist
# worker once missed JAX's 2-minute topology exchange. `test_two_process_load_forward_save`
# covers the multi-process load / save / barrier code; the 8-device step tests cover the
# host-batch placement; what only this test covers is process 0 writing the run's files.
@pytest.mark.slow
def test_two_process_sft_equals_one_process(tmp_path: pathlib.Path):
  env = dict(os.environ, USE_TF="0", XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                                              + " --xla_force_host_platform_device_count=2"))
  addr = f"localhost:{free_port()}"
  multi = [_vcoach(ARGS + ["--workdir", str(tmp_path / "multi"), "--distributed",
                           "--coordinator", addr, "--num-processes", "2", "--process-id", str(i)],
                   env) for i in range(2)]

  done = "SFT done (2 steps"
  finish(multi, 400, done)  # then the reference, so that at most two trainings share the cores
  finish([_vcoach(ARGS + ["--workdir", str(tmp_path / "single")], dict(os.environ, USE_TF="0"))],
         400, done)
  m_multi, m_single = metrics(tmp_path / "multi"), metrics(tmp_path / "single")
  assert [r["host_rows"] for r in m_multi] == [2, 2]  # each process prepared half of each batch
  assert [r["host_rows"] for r in m_single] == [4, 4]
  assert [r["step"] for r in m_multi] == [0, 1]  # written once, by process 0
  for a, b in zip(m_multi, m_single):
    for key in ("loss", "grad_norm", "lr"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
  w_multi = safetensors.numpy.load_file(str(tmp_path / "multi/policy/model.safetensors"))
  w_single = safetensors.numpy.load_file(str(tmp_path / "single/policy/model.safetensors"))
  assert set(w_multi) == set(w_single)
  for name, x in w_single.items():
    np.testing.assert_allclose(w_multi[name], x, atol=1e-6, err_msg=name)
  # The step-2 checkpoint, with the data position each process wrote (its own read part)
  # before it committed.
  assert sorted(p.name for p in (tmp_path / "multi/checkpoints").iterdir()) == ["2"]
  for part in range(2):
    assert (tmp_path / f"multi/checkpoints_data_iter/2/ckpt-part{part}-of-2.index").is_file()



_RL_WORKER = textwrap.dedent("""
    import os, sys
    pid, n = int(sys.argv[1]), int(sys.argv[2])
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={{4 // n}}"
    os.environ["USE_TF"] = "0"
    import jax
    if n > 1:
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
      jax.distributed.initialize({addr!r}, num_processes=n, process_id=pid)
    import numpy as np
    from vcoach_jax import config as config_lib
    from vcoach_jax.rl import rollout as rollout_lib
    from vcoach_jax.rl import train as rl_train

    real = rollout_lib.score
    scored_here = []

    def score(rollouts, samples, g, options):  # a reward that varies with the completion (a
      got = real(rollouts, samples, g, options)  # random policy's real rewards are all 0)
      acc = np.asarray([len(t) % 3 / 2 for t in rollouts.texts])
      scored_here.append(len(rollouts.texts))
      print("worker", pid, "scored", len(rollouts.texts), flush=True)  # progress
      return rollout_lib.Scored(got.rollouts, dict(got.per_reward, ans_acc=acc),
                                got.total + acc.astype(np.float32))
    rollout_lib.score = score
    config = config_lib.with_overrides(config_lib.default_config(), {overrides!r})
    workdir = sys.argv[3]
    run, result = rl_train.train(config, workdir, steps=2, progress=False)
    run.export(workdir + "/policy")
    print("worker", pid, "read", run.pipe.examples_read, "scored", scored_here, "ok",
          flush=True)
""")

RL_OVERRIDES = ["data.batch_size=4", "synthetic.num_train=16", "synthetic.num_eval=4",
                "sampling.num_samples=2", "sampling.max_new_tokens=12", "rl.k1=0.8",
                "optim.lr=1e-3", "data.read_parts=2"]


# Slow, as above. Each process prepares and scores only its half of every batch (`host_rows`,
# and the rows each process scored), the rest is exchanged: the run equals one process on the
# same 4-device mesh, coaching included.
@pytest.mark.slow
def test_two_process_rl_equals_one_process(tmp_path: pathlib.Path):
  script = tmp_path / "rl_worker.py"
  script.write_text(_RL_WORKER.format(addr=f"localhost:{free_port()}", overrides=RL_OVERRIDES))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(pathlib.Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]))

  def start(pid, n, run):
    return subprocess.Popen([sys.executable, str(script), str(pid), str(n), str(tmp_path / run)],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

  multi = finish([start(i, 2, "multi") for i in range(2)], 900, " ok")
  single = finish([start(0, 1, "single")], 900, " ok")
  # Raw rows scored by each process: 2 prompts x G 2 (then its prompted batches, all rows).
  assert all("scored [4" in out for out in multi) and "scored [8" in single[0], multi + single
  # Records read: each process its 2 rows of each of the 2 batches, one process all 4.
  assert all("read 4 " in out for out in multi) and "read 8 " in single[0], multi + single
  m_multi, m_single = metrics(tmp_path / "multi"), metrics(tmp_path / "single")
  assert [r["step"] for r in m_multi] == [0, 1]  # written once, by process 0
  assert [r["host_rows"] for r in m_multi] == [2, 2]
  assert [r["host_rows"] for r in m_single] == [4, 4]
  assert any(r["frac_hard"] > 0 for r in m_single)  # the prompted branch ran
  for a, b in zip(m_multi, m_single):
    for key in ("loss", "grad_norm", "reward_total", "reward_ans_acc", "frac_hard", "nll", "kl",
                "gspo", "completion_tokens"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
  w_multi = safetensors.numpy.load_file(str(tmp_path / "multi/policy/model.safetensors"))
  w_single = safetensors.numpy.load_file(str(tmp_path / "single/policy/model.safetensors"))
  for name, x in w_single.items():
    np.testing.assert_allclose(w_multi[name], x, atol=1e-6, err_msg=name)
