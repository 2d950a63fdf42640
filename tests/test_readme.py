"""The README opens with the two commands, and .ci/run runs exactly the second."""

import pathlib
import re

ROOT = pathlib.Path(__file__).parents[1]


def _commands():
  return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.DOTALL)[:2]


def test_readme_opens_with_install_run_and_test_commands():
  text = (ROOT / "README.md").read_text()
  first_block = text.index("```bash")
  assert text[:first_block].strip() == "# vcoach_jax"  # nothing before the two commands
  run, test = _commands()
  assert "pip install -e ." in run and ".venv/bin/vcoach " in run
  assert "pytest" in test and "[test]" in test


def test_ci_runs_the_readme_test_command_verbatim():
  _, test = _commands()
  assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_main_job_is_the_demo():
  run, _ = _commands()
  assert run.endswith(".venv/bin/vcoach demo")
  from vcoach_jax import cli  # pylint: disable=g-import-not-at-top
  assert "demo" in cli.COMMANDS
