"""A broken config file or a folder given as one stops the CLI with one line naming the file
(exit 2, no traceback)."""

from __future__ import annotations

import pytest

from vcoach_jax import cli


@pytest.mark.parametrize("text,needle", [
    ("def get_config(arg=None)\n  return None\n", "line 1: syntax error"),
    ("import os\n\nx = undefined_name\n", "line 3: NameError"),
])
def test_broken_config_file_is_one_line(tmp_path, capsys, text, needle):
  path = tmp_path / "broken.py"
  path.write_text(text)
  code = cli.main(["sft", "--workdir", str(tmp_path / "w"), "--config", str(path)])
  err = capsys.readouterr().err
  assert code == 2
  assert err.count("\n") == 1 and str(path) in err and needle in err, err
  assert "Traceback" not in err
  assert not (tmp_path / "w").exists()


def test_config_folder_is_refused(tmp_path, capsys):
  code = cli.main(["train", "--workdir", str(tmp_path / "w"), "--config", str(tmp_path)])
  err = capsys.readouterr().err
  assert code == 2 and "is a folder; pass a config file" in err and str(tmp_path) in err, err
