"""`vcoach plan` compiles the tiny train step for fake CPU meshes (each in a fresh subprocess:
the device count is fixed when JAX starts) and reports per-device bytes; FSDP over 4 devices
shrinks the per-device arguments (params, optimizer state, reference)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from vcoach_jax.commands import plan as plan_cmd

_ROOT = pathlib.Path(__file__).parent.parent
_SMALL = ["--prompt-length", "128", "--set", "sampling.max_new_tokens=16",
          "--set", "data.batch_size=4", "--set", "data.max_patches=64"]


def _plan(mesh: str, *extra: str) -> tuple[str, dict[str, float]]:
  env = dict(os.environ, USE_TF="0",
             PYTHONPATH=os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, "-m", "vcoach_jax.cli", "plan", "--mesh", mesh,
                         *_SMALL, *extra],
                        capture_output=True, text=True, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  gib = {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\w[\w ]*?)\s+([\d.]+) GiB", proc.stdout,
                                                re.M)}
  return proc.stdout, gib


def test_plan_tiny_fsdp_shrinks_arguments():
  out4, four = _plan("fsdp=4")
  assert "mesh              fsdp=4 (4 devices)" in out4
  for key in ("arguments", "outputs", "temporaries", "peak estimate"):
    assert four[key] > 0, (key, out4)
  assert re.search(r"^parameters\s+[\d,]+", out4, re.M)
  assert re.search(r"^v5p-8 .*: fits, headroom \+", out4, re.M), out4
  assert re.search(r"^8xH100 .*: fits, headroom \+", out4, re.M), out4
  peak = four["arguments"] + four["temporaries"] + four["outputs"] - four["aliased"]
  assert four["peak estimate"] == pytest.approx(peak, abs=2e-3)
  _, one = _plan("fsdp=1")
  assert four["arguments"] < one["arguments"], (four, one)


def test_parse_mesh():
  assert plan_cmd.parse_mesh("fsdp=8") == {"fsdp": 8}
  assert plan_cmd.parse_mesh("data=2,fsdp=4,tensor=2") == {"data": 2, "fsdp": 4, "tensor": 2}
  for bad in ("", "fsdp", "model=2", "fsdp=-1", "fsdp=0"):
    with pytest.raises(ValueError, match="--mesh"):
      plan_cmd.parse_mesh(bad)
