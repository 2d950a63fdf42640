"""The training commands' shared flags: multi-host flags need --distributed; bad configs stop
at start with the key's name (before anything is built)."""

from __future__ import annotations

import pytest

from vcoach_jax import cli


@pytest.mark.parametrize("command", ["sft", "train"])
def test_multi_host_flags_need_distributed(command, tmp_path, capsys):
  code = cli.main([command, "--workdir", str(tmp_path), "--coordinator", "host:1234"])
  assert code == 2
  assert "need --distributed" in capsys.readouterr().err
  assert not any(tmp_path.iterdir())  # nothing was written


@pytest.mark.parametrize("command", ["sft", "train"])
def test_unknown_config_key_is_refused_at_start(command, tmp_path, capsys):
  code = cli.main([command, "--workdir", str(tmp_path), "--set", "optim.learning_rate=1e-3"])
  assert code == 2
  assert "optim.learning_rate" in capsys.readouterr().err
