"""storage: atomic writes leave the old file or the new one, never a partial one."""

import os

import pytest

from vcoach_jax import storage


def test_write_text_replaces_whole_file(tmp_path):
  target = tmp_path / "sub" / "out.jsonl"
  storage.write_text(target, "one\n")
  storage.write_text(target, "two\n")
  assert target.read_text() == "two\n"
  assert sorted(os.listdir(target.parent)) == ["out.jsonl"]


def test_atomic_open_error_keeps_old_file_and_no_temporary(tmp_path):
  target = tmp_path / "out.jsonl"
  target.write_text("old\n")
  with pytest.raises(RuntimeError):
    with storage.atomic_open(target) as f:
      f.write("half")
      raise RuntimeError("disk full")
  assert target.read_text() == "old\n"
  assert os.listdir(tmp_path) == ["out.jsonl"]


def test_remove_temporaries(tmp_path):
  (tmp_path / ".out.jsonl.tmp-abc").write_text("x")
  (tmp_path / "keep.jsonl").write_text("y")
  assert storage.remove_temporaries(tmp_path) == 1
  assert os.listdir(tmp_path) == ["keep.jsonl"]


def test_refuse_same_file(tmp_path):
  inp = tmp_path / "in.jsonl"
  inp.write_text("x\n")
  link = tmp_path / "link.jsonl"
  link.symlink_to(inp)
  for out in (inp, link, str(inp)):
    with pytest.raises(ValueError, match="is the input file"):
      storage.refuse_same_file(out, [inp])
  storage.refuse_same_file(tmp_path / "other.jsonl", [inp])
  assert inp.read_text() == "x\n"


def test_remote_path_kept_as_uri():
  p = storage.path("gs://bucket/run")
  assert os.fspath(p / "metrics") == "gs://bucket/run/metrics"
  assert storage.is_remote(p) and not storage.is_remote("/tmp/x")
