"""Fault injection on checkpoints: flipped bytes, a truncated or deleted data file, a damaged
data position, non-finite parameters and a full disk are never loaded silently; each gives one
line naming the step and the file or array; the intact older step still restores exactly."""

from __future__ import annotations

import errno
import os
import subprocess
import types

import jax
import numpy as np
import ml_collections
import pytest

import rl_testutil as ru
from vcoach_jax import checkpointing
from vcoach_jax import training_loop
from vcoach_jax.checkpointing import CheckpointError, Checkpointer
from vcoach_jax.checkpoint_integrity import first_line
from vcoach_jax.rl import optim, update


@pytest.fixture(scope="module")
def state():
  tx = optim.make_optimizer(ru.test_config().optim)
  _, s = update.init_train_state(ru.tiny_model(seed=0), tx, freeze_vision=True)
  return s


def _data_save(prefix):
  """A real TF checkpoint as the data position (what `Pipeline.save` writes)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.train.Checkpoint(position=tf.Variable(np.arange(4096, dtype=np.int64))).write(prefix)


def _data_restore(prefix):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  v = tf.Variable(np.zeros(4096, dtype=np.int64))
  tf.train.Checkpoint(position=v).read(prefix).assert_consumed()
  assert v.numpy()[-1] == 4095


def _two_steps(tmp_path, state, step2_state=None) -> Checkpointer:
  ckpt = Checkpointer(tmp_path / "ckpt", keep=3)
  ckpt.save(1, state, jax.random.key(1), data_save=_data_save)
  ckpt.save(2, step2_state or state, jax.random.key(2), data_save=_data_save)
  return ckpt


def _largest_data_file(ckpt, step) -> str:
  root = os.path.join(os.fspath(ckpt.step_dir(step)), "state")
  files = [os.path.join(r, f) for r, _, fs in os.walk(root) for f in fs if "/d/" in r + "/"]
  return max(files, key=os.path.getsize)


def _assert_one_line_and_intact(ckpt, state, error: str, *needles):
  assert "\n" not in error and "checkpoint step 2" in error, error
  for needle in needles:
    assert needle in error, (needle, error)
  reports = []
  restored = ckpt.restore_intact(state, data_restore=_data_restore, report=reports.append)
  assert restored.step == 1
  assert len(reports) == 2 and "skipping checkpoint step 2" in reports[0]
  assert reports[1] == "resuming from the newest intact checkpoint, step 1"
  for a, b in zip(jax.tree.leaves(restored.state), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_flipped_bytes_are_a_checksum_mismatch(tmp_path, state):
  ckpt = _two_steps(tmp_path, state)
  path = _largest_data_file(ckpt, 2)
  data = bytearray(open(path, "rb").read())
  for i in range(64):
    data[len(data) // 2 + i] ^= 0x5A
  open(path, "wb").write(bytes(data))
  with pytest.raises(CheckpointError) as e:
    ckpt.restore(state, data_restore=_data_restore)
  _assert_one_line_and_intact(ckpt, state, str(e.value), "does not match the checksum", "array ")


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_truncated_or_deleted_file_is_named(tmp_path, state, damage):
  ckpt = _two_steps(tmp_path, state)
  path = _largest_data_file(ckpt, 2)
  if damage == "delete":
    os.remove(path)
  else:
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 3])
  with pytest.raises(CheckpointError) as e:
    ckpt.restore(state)
  word = "is missing" if damage == "delete" else "truncated"
  _assert_one_line_and_intact(ckpt, state, str(e.value), path, word)


def test_damaged_step_without_file_list_is_unreadable_in_one_line(tmp_path, state):
  ckpt = _two_steps(tmp_path, state)
  os.remove(os.path.join(os.fspath(ckpt.step_dir(2)), "files.json"))  # e.g. killed after commit
  os.remove(_largest_data_file(ckpt, 2))
  with pytest.raises(CheckpointError) as e:
    ckpt.restore(state)
  _assert_one_line_and_intact(ckpt, state, str(e.value), "is unreadable", "could not be read")


def test_truncated_data_position_is_named(tmp_path, state):
  ckpt = _two_steps(tmp_path, state)
  folder = os.fspath(ckpt.data_root / "2")
  data_file = [f for f in os.listdir(folder) if ".data-" in f][0]
  path = os.path.join(folder, data_file)
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])
  with pytest.raises(CheckpointError) as e:
    ckpt.restore(state, data_restore=_data_restore)
  _assert_one_line_and_intact(ckpt, state, str(e.value), "data-position file", data_file)


def test_unreadable_data_position_without_manifest_is_one_line(tmp_path, state):
  ckpt = _two_steps(tmp_path, state)
  with pytest.raises(CheckpointError, match=r"step 2 .*: the data position .* is unreadable"):
    ckpt.restore(state, data_restore=lambda prefix: _data_restore(prefix + "-gone"))


def test_non_finite_parameters_are_refused(tmp_path, state):
  bad = state.replace(params=jax.tree.map(lambda x: x.at[(0,) * x.ndim].set(np.inf)
                                          if x.dtype == np.float32 else x, state.params))
  ckpt = _two_steps(tmp_path, state, step2_state=bad)
  with pytest.raises(CheckpointError) as e:
    ckpt.restore(state)
  _assert_one_line_and_intact(ckpt, state, str(e.value), "holds NaN or infinite values")


def _session(ckpt, state):
  return training_loop.Session(
      config=ml_collections.ConfigDict({"optim": {"total_steps": 2}}),  # the schedule
      state=state, rng=None, pipe=types.SimpleNamespace(restore=_data_restore), ckpt=ckpt,
      writer=None)


def test_resume_refuses_a_corrupt_latest_step_and_latest_intact_falls_back(tmp_path, state,
                                                                            capsys):
  ckpt = _two_steps(tmp_path, state)
  os.remove(_largest_data_file(ckpt, 2))
  with pytest.raises(CheckpointError, match="--resume=latest-intact"):
    training_loop.restore(_session(ckpt, state), "latest")
  assert training_loop.restore(_session(ckpt, state), checkpointing.LATEST_INTACT) == 1
  out = capsys.readouterr().out
  assert "skipping checkpoint step 2" in out and "newest intact checkpoint, step 1" in out


@pytest.fixture
def small_disk(tmp_path):
  """A 1.4 MB tmpfs (one tiny step fits, a second does not), or None where mounting fails."""
  mount = tmp_path / "disk"
  mount.mkdir()
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1400k", "tmpfs", str(mount)],
                        capture_output=True, check=False)
  if done.returncode != 0:
    yield None
    return
  try:
    yield mount
  finally:
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_during_save(tmp_path, state, small_disk, monkeypatch):
  folder = small_disk or tmp_path
  ckpt = Checkpointer(folder / "ckpt", keep=3)
  ckpt.save(1, state, jax.random.key(1), data_save=_data_save)
  if small_disk is None:  # no mount allowed here: the write fails as a full disk would
    real = ckpt._manager.save  # pylint: disable=protected-access

    def full(step, *a, **k):
      (folder / "ckpt" / f"{step}.orbax-checkpoint-tmp-1").mkdir()
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(ckpt._manager, "save", full)  # pylint: disable=protected-access
  with pytest.raises(CheckpointError) as e:
    ckpt.save(2, state, jax.random.key(2), data_save=_data_save)
  msg = str(e.value)
  assert "\n" not in msg and "saving checkpoint step 2" in msg, msg
  assert "No space left on device" in msg and "temporary files were removed" in msg
  assert sorted(os.listdir(folder / "ckpt")) == ["1"]  # no *.orbax-checkpoint-tmp left
  assert sorted(os.listdir(folder / "ckpt_data_iter")) == ["1"]
  if small_disk is None:
    monkeypatch.setattr(ckpt._manager, "save", real)  # pylint: disable=protected-access
  restored = ckpt.restore(state, data_restore=_data_restore)
  assert restored.step == 1


def test_a_long_error_line_keeps_the_os_reason_from_its_middle():
  """TensorStore's write errors can put the OS's reason between a long start and a page of spec
  (seen in a suite run: the shortened line lost "No space left on device")."""
  line = ("RESOURCE_EXHAUSTED: Error writing \"w/0\" in OCDBT database at local file \"/ckpt/"
          + "d" * 200 + "\": Failed to write 532407 bytes to file 19: No space left on device "
          "[os_error_code='28'] " + "{\"spec\": " + "x" * 300 + "}")
  short = first_line(ValueError(line))
  assert len(short) < 400 and short.startswith("RESOURCE_EXHAUSTED: Error writing")
  assert "No space left on device [os_error_code='28']" in short and short.endswith("x}")
  assert first_line(ValueError("short: reason")) == "short: reason"
