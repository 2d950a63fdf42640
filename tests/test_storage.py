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


# ---- object stores (an offline in-memory gs:// bucket, tests/fake_gcs.py) ----

from fake_gcs import bucket  # noqa: E402,F401  pylint: disable=unused-import,wrong-import-position


def _blob(store, key: str) -> bytes:
  return bytes(store[key].getbuffer())


def test_appender_on_a_bucket_rewrites_whole_file(bucket):  # noqa: F811
  storage.write_text("gs://b/run/m.jsonl", "old\n")
  with storage.Appender("gs://b/run/m.jsonl") as out:
    out.write("one\n")
    assert _blob(bucket, "/b/run/m.jsonl") == b"old\none\n"  # complete after each write
    out.write("two\n")
  assert _blob(bucket, "/b/run/m.jsonl") == b"old\none\ntwo\n"
  assert sorted(bucket) == ["/b/run/m.jsonl"]  # no temporary left


def test_local_mirror_and_copies_to_and_from_a_bucket(bucket, tmp_path, monkeypatch):  # noqa: F811
  monkeypatch.setattr(storage.tempfile, "tempdir", str(tmp_path))
  mirror = storage.LocalMirror("gs://b/tb")
  with open(os.path.join(mirror.local, "events.1"), "wb") as f:
    f.write(b"abc")
  mirror.sync()
  assert _blob(bucket, "/b/tb/events.1") == b"abc"
  with open(os.path.join(mirror.local, "events.1"), "ab") as f:
    f.write(b"def")
  os.makedirs(os.path.join(mirror.local, "sub"))
  with open(os.path.join(mirror.local, "sub", "x"), "wb") as f:
    f.write(b"x")
  mirror.close()
  assert _blob(bucket, "/b/tb/events.1") == b"abcdef" and _blob(bucket, "/b/tb/sub/x") == b"x"
  assert storage.files_under("gs://b/tb") == ["events.1", "sub/x"]
  with pytest.raises(RuntimeError):
    with storage.local_dir_for("gs://b/failed") as local:
      open(os.path.join(local, "half"), "w").close()
      raise RuntimeError("write failed")
  assert not storage.path("gs://b/failed").exists()  # nothing copied on error
  with storage.local_copy("gs://b/tb") as local:
    assert open(os.path.join(local, "sub", "x"), "rb").read() == b"x"
  storage.copy_tree("gs://b/tb", tmp_path / "copy")
  assert (tmp_path / "copy" / "events.1").read_bytes() == b"abcdef"
  assert sorted(os.listdir(tmp_path)) == ["copy"]  # the temporary folders were removed


def test_metrics_on_a_bucket(bucket, tmp_path, monkeypatch):  # noqa: F811
  from vcoach_jax.metrics_writer import MetricsWriter, read_jsonl  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(storage.tempfile, "tempdir", str(tmp_path))
  w = MetricsWriter("gs://b/run/metrics", enabled=True)
  for step in range(3):
    w.write(step, {"loss": 1.0 / (step + 1)})
  w.plot(["loss"], "loss.png")
  w.close()
  assert [r["step"] for r in read_jsonl("gs://b/run/metrics/metrics.jsonl")] == [0, 1, 2]
  names = storage.files_under("gs://b/run/metrics")
  assert "loss.png" in names and any(n.startswith("tensorboard/events.out.tfevents") for n in names)
  assert _blob(bucket, "/b/run/metrics/loss.png")[:8] == b"\x89PNG\r\n\x1a\n"
  resumed = MetricsWriter("gs://b/run/metrics", enabled=True, tensorboard=False)
  assert resumed.drop_from(1) == 2
  assert [r["step"] for r in read_jsonl("gs://b/run/metrics/metrics.jsonl")] == [0]
  assert os.listdir(tmp_path) == []
