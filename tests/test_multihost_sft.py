"""`vcoach sft --distributed` in two processes (2 CPU devices each, one 4-device mesh over
both, gloo collectives) trains exactly as one process does: same losses, same exported weights,
one metrics file, one checkpoint with its data position."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import safetensors.numpy

ARGS = ["sft", "--steps", "2", "--no-progress", "--set", "data.batch_size=4",
        "--set", "synthetic.num_train=16", "--set", "synthetic.num_eval=4"]


def _vcoach(args, env, **kw):
  return subprocess.Popen([sys.executable, "-m", "vcoach_jax.cli", *args], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_process_sft_equals_one_process(tmp_path: pathlib.Path):
  env = dict(os.environ, USE_TF="0", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  addr = f"localhost:{_free_port()}"
  multi = [_vcoach(ARGS + ["--workdir", str(tmp_path / "multi"), "--distributed",
                           "--coordinator", addr, "--num-processes", "2", "--process-id", str(i)],
                   env) for i in range(2)]
  single = _vcoach(ARGS + ["--workdir", str(tmp_path / "single")],
                   dict(os.environ, USE_TF="0"))
  for proc in multi + [single]:
    try:
      out = proc.communicate(timeout=400)[0]
    except subprocess.TimeoutExpired:
      for p in multi + [single]:
        p.kill()
      raise
    assert proc.returncode == 0 and "SFT done (2 steps" in out, out[-4000:]

  def metrics(run):
    return [json.loads(line) for line in (tmp_path / run / "metrics" / "metrics.jsonl").open()]
  m_multi, m_single = metrics("multi"), metrics("single")
  assert [r["step"] for r in m_multi] == [0, 1]  # written once, by process 0
  for a, b in zip(m_multi, m_single):
    for key in ("loss", "grad_norm", "lr"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
  w_multi = safetensors.numpy.load_file(str(tmp_path / "multi/policy/model.safetensors"))
  w_single = safetensors.numpy.load_file(str(tmp_path / "single/policy/model.safetensors"))
  assert set(w_multi) == set(w_single)
  for name, x in w_single.items():
    np.testing.assert_allclose(w_multi[name], x, atol=1e-6, err_msg=name)
  # The step-2 checkpoint, with the data position that process 0 wrote before it committed.
  assert sorted(p.name for p in (tmp_path / "multi/checkpoints").iterdir()) == ["2"]
  assert (tmp_path / "multi/checkpoints_data_iter/2/ckpt.index").is_file()
