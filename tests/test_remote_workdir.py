"""A work folder on an object store: `vcoach sft` and `vcoach train` (2 steps each, then
`--resume` for one more) with `--workdir gs://bucket/...` leave every file in the bucket and
none on local disk. The bucket is `fake_gcs` (offline, in memory, reached through epath's fsspec
backend and TensorStore's GCS driver); the synthetic dataset is a local input."""

from __future__ import annotations

import io
import json
import os
import tempfile

import pytest
from PIL import Image

import fake_gcs
from conftest import TINY_WORLD
from fake_gcs import bucket  # noqa: F401  pylint: disable=unused-import
from vcoach_jax import cli

# The world and SFT schedule of tests/test_trainer_resume.py (the shared tiny world's sizes, a
# 4-step schedule at lr 0.003, batch 2): the same SFT program, compiled once for both tests
# through the suite's compilation cache.
OVERRIDES = list(TINY_WORLD) + [
    "data.batch_size=2", "data.shuffle_buffer=8", "sft.lr=0.003", "sft.steps=4",
    "sampling.num_samples=2", "sampling.max_new_tokens=16", "checkpoint.every_steps=100"]


def _files(store, prefix: str) -> list[str]:
  return sorted(k[len(prefix):] for k in store if k.startswith(prefix))


def _run(*args: str) -> None:
  argv = list(args) + ["--no-progress"]
  for item in OVERRIDES:
    argv += ["--set", item]
  assert cli.main(argv) == 0, argv


def _local_files(folder) -> list[str]:
  return sorted(os.path.relpath(os.path.join(r, f), folder)
                for r, _, fs in os.walk(folder) for f in fs)


def _check_run(store, root: str, steps: list[int]) -> None:
  files = _files(store, root)
  for step in steps:
    assert f"checkpoints/{step}/files.json" in files
    assert f"checkpoints/{step}/state/manifest.ocdbt" in files
    assert any(f.startswith(f"checkpoints/{step}/state/ocdbt.process_0/d/") for f in files)
    assert f"checkpoints_data_iter/{step}/ckpt.index" in files
  for name in ("metrics/metrics.jsonl", "metrics/curves.png", "policy/config.json",
               "policy/model.safetensors", "policy/tokenizer.json"):
    assert name in files, (name, files)
  assert any(f.startswith("metrics/tensorboard/events.out.tfevents.") for f in files)
  assert not [f for f in files if ".tmp-" in f or "orbax-checkpoint-tmp" in f]
  rows = [json.loads(line) for line in
          bytes(store[root + "metrics/metrics.jsonl"].getbuffer()).decode().splitlines()]
  assert [r["step"] for r in rows] == [0, 1, 2]  # the resumed step once
  png = Image.open(io.BytesIO(bytes(store[root + "metrics/curves.png"].getbuffer())))
  assert png.format == "PNG" and png.size[0] > 300  # a real chart (matplotlib), written whole


@pytest.fixture
def local_disk(tmp_path, monkeypatch):
  """(cwd, temporary folder, data folder): the run's working folder and TMPDIR are watched; the
  synthetic dataset is a local input."""
  cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
  for d in (cwd, tmp):
    d.mkdir()
  monkeypatch.chdir(cwd)
  monkeypatch.setenv("TMPDIR", str(tmp))
  monkeypatch.setattr(tempfile, "tempdir", str(tmp))
  yield cwd, tmp, ["--set", f"data.tfds_dir={tmp_path / 'data'}"]
  assert _local_files(cwd) == [] and _local_files(tmp) == []  # temporaries removed
  assert not os.path.exists(os.path.join(os.getcwd(), "gs:"))


def _sft(data_flag, *extra) -> None:
  # The 4-step schedule stopped after 2 steps, then resumed for a third.
  _run("sft", "--workdir", "gs://bucket/sft", "--steps", "2", *data_flag)
  # The resumed session also reads its starting policy from the bucket (load_hf, tokenizer).
  _run("sft", "--workdir", "gs://bucket/sft", "--steps", "3", "--resume", *data_flag, *extra)
  _check_run(fake_gcs.FakeGCSFileSystem.store, "/bucket/sft/", [2, 3])
  sft_files = _files(fake_gcs.FakeGCSFileSystem.store, "/bucket/sft/")
  for name in ("tokenizer/tokenizer.json", "init/config.json", "init/model.safetensors",
               "init/tokenizer.json"):
    assert name in sft_files


def test_sft_on_a_bucket_writes_nothing_locally(bucket, local_disk):
  del bucket
  _sft(local_disk[2], "--set", "model.checkpoint=gs://bucket/sft/init")


@pytest.mark.slow
def test_sft_and_train_on_a_bucket_write_nothing_locally(bucket, local_disk):
  data_flag = local_disk[2]
  _sft(data_flag)
  policy = ["--set", "model.checkpoint=gs://bucket/sft/policy"]
  policy += ["--set", "optim.total_steps=3"]
  _run("train", "--workdir", "gs://bucket/rl", "--steps", "2", *data_flag, *policy)
  _run("train", "--workdir", "gs://bucket/rl", "--steps", "3", "--resume", *data_flag, *policy)
  _check_run(bucket, "/bucket/rl/", [2, 3])
