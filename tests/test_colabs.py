"""The notebooks of colabs/: each executes top to bottom without an error (nbclient, the python3
kernel of this interpreter, cwd = the repository root), and the committed files are exactly what
colabs/build_notebooks.py writes (no outputs, no drift)."""

import pathlib
import subprocess
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLABS = ROOT / "colabs"
CELL_TIMEOUT = 300  # seconds per cell


def execute(name: str) -> nbformat.NotebookNode:
  """Runs a notebook in a fresh kernel; raises `CellExecutionError` on the first failing cell."""
  nb = nbformat.read(COLABS / name, as_version=4)
  nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                          resources={"metadata": {"path": str(ROOT)}}).execute()
  return nb


def outputs(nb) -> str:
  """All stream and plain-text outputs of the executed notebook, joined."""
  parts = []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      parts.append(out.get("text", "") or out.get("data", {}).get("text/plain", ""))
  return "\n".join(parts)


def images(nb) -> int:
  return sum("image/png" in out.get("data", {}) for cell in nb.cells
             for out in cell.get("outputs", []))


def test_committed_notebooks_are_the_generated_ones_without_outputs():
  rc = subprocess.run([sys.executable, str(COLABS / "build_notebooks.py"), "--check"],
                      capture_output=True, text=True, check=False)
  assert rc.returncode == 0, rc.stdout + rc.stderr
  for path in sorted(COLABS.glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path


def test_rewards_in_jax_notebook():
  text = outputs(execute("rewards_in_jax.ipynb"))
  assert "vmapped segment reward == compute: True" in text
  assert "our jitted grounding sum == compute: True" in text
  assert "speed-up" in text


def test_visual_prompts_notebook():
  nb = execute("visual_prompts.ipynb")
  text = outputs(nb)
  assert "inside unchanged: True" in text and "prompt types: raw, darken" in text
  assert images(nb) >= 4  # the sampled frames, the sheet of every type, darken, prompted keys


@pytest.mark.slow
def test_quickstart_notebook():
  """The demo end to end (`demo_config(fast=True)`), its plots and `vcoach eval` on its policy.

  Slow (minutes): tests/test_demo.py runs the same `vcoach_jax.demo.run` in the fast suite and
  tests/test_eval_sampler.py the same `vcoach eval` path; this adds only the notebook around them.
  """
  nb = execute("quickstart.ipynb")
  text = outputs(nb)
  assert "VisionCoach RL" in text and "synthetic: 8 item(s)" in text
  assert images(nb) >= 2
