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
                        capture_output=True, text=True, env=env, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  gib = {m[1]: float(m[2]) for m in re.finditer(r"^\s+(\w[\w ]*?)\s+([\d.]+) GiB", proc.stdout,
                                                re.M)}
  return proc.stdout, gib


def _check_plan_block(out: str, values: dict[str, float], devices: int) -> None:
  """The per-device bytes of the step's plan and a verdict per target slice."""
  assert f"mesh              fsdp={devices} ({devices} devices)" in out
  # Every line there (GiB to 3 decimals: the tiny model's outputs round to 0 on 8 devices).
  for key in ("arguments", "outputs", "temporaries", "aliased"):
    assert values[key] >= 0, (key, out)
  assert values["peak estimate"] > 0, out
  assert re.search(r"^parameters\s+[\d,]+", out, re.M)
  # N devices are N chips: a v5p-2N slice (its name counts TensorCores, 2 per chip).
  assert re.search(rf"^v5p-{2 * devices} \({devices} chips\) .*: fits, headroom \+", out,
                   re.M), out
  assert re.search(rf"^{devices}x H100 .*: fits, headroom \+", out, re.M), out
  peak = values["arguments"] + values["temporaries"] + values["outputs"] - values["aliased"]
  assert values["peak estimate"] == pytest.approx(peak, abs=2e-3)


# Slow (two more compilations): the plan's report and FSDP's smaller per-device footprint are
# covered by test_scaling_report_tiny_8_devices (the fsdp=8 plan block, and its train step's
# peak per device below the 1-device program's).
@pytest.mark.slow
def test_plan_tiny_fsdp_shrinks_arguments():
  out4, four = _plan("fsdp=4")
  _check_plan_block(out4, four, 4)
  for key in ("arguments", "outputs", "temporaries"):
    assert four[key] > 0, (key, out4)
  _, one = _plan("fsdp=1")
  assert four["arguments"] < one["arguments"], (four, one)


def _rows(out: str, section: str, label: str) -> list[list[str]]:
  """The cells of each row `label` in the report section starting with `section`."""
  block = out[out.index(section):].split("\n\n")[0]
  lines = [l for l in block.splitlines() if l.strip().startswith(label + "  ")]
  assert lines, (section, label, out)
  return [re.split(r"\s{2,}", line.strip())[1:] for line in lines]


def _row(out: str, section: str, label: str) -> list[str]:
  row, = _rows(out, section, label)
  return row


def _number(cell: str) -> float:
  value, _, unit = cell.partition(" ")
  return float(value) * {"T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3}.get(unit[:1], 1)


def test_scaling_report_tiny_8_devices():
  # Rows divide by 8 (8 prompts x G 4); each prompt holds one 8 x 8-patch image (16 tokens).
  out, values = _plan("fsdp=8", "--devices", "8", "--prompt-length", "64",
                      "--set", "data.batch_size=8", "--set", "sampling.max_new_tokens=8")
  _check_plan_block(out, values, 8)
  assert "scaling report: 8 devices (mesh fsdp=8)" in out and "v5p-16 (8 chips)" in out, out
  for name in ("train step", "vision_tower", "prefill", "decode step"):
    for per_device, ideal, ratio in _rows(out, "dot FLOPs per device", name):
      # Every device runs its own rows, patches and segments: 1/8 of the 1-device work.
      assert 0.95 <= float(ratio) <= 1.05, (name, out)
      assert _number(per_device) > 0 and _number(ideal) > 0
  cells = _row(out, "collective bytes per device", "train step")
  all_reduce, multiple, cpu_multiple = _number(cells[2]), float(cells[-2]), float(cells[-1])
  assert cpu_multiple >= multiple, out  # the CPU backend runs bf16 collectives in f32
  params = _number(re.search(r"fp32 ([\d.]+ \w?)B", out)[1])
  # FSDP gathers weights and reduces gradients (XLA's CPU backend all-reduces them where a TPU
  # reduce-scatters); activations are not all-reduced (with activations following the weights'
  # width split this step all-reduced ~20x the fp32 parameter bytes).
  assert all_reduce < 5 * params and multiple < 12, out
  gathered = _number(_row(out, "collective bytes per device", "decode step")[0])
  assert gathered <= 32 * 512 * 4 + 1024, out  # the [rows, vocab] logits of the top-k only
  n_peak, one_peak = map(_number, _row(out, "peak memory per device", "train step"))
  assert n_peak < one_peak, out


def test_parse_mesh():
  assert plan_cmd.parse_mesh("fsdp=8") == {"fsdp": 8}
  assert plan_cmd.parse_mesh("data=2,fsdp=4,tensor=2") == {"data": 2, "fsdp": 4, "tensor": 2}
  for bad in ("", "fsdp", "model=2", "fsdp=-1", "fsdp=0"):
    with pytest.raises(ValueError, match="--mesh"):
      plan_cmd.parse_mesh(bad)
