"""`--resume` continues exactly: params, optimizer, rng and the data position come back, so an
interrupted run ends where an uninterrupted one does (docs/design.md §12)."""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from conftest import TINY_WORLD  # noqa: E402
from vcoach_jax import config as config_lib  # noqa: E402
from vcoach_jax import metrics_writer  # noqa: E402
from vcoach_jax.sft import train as sft_train  # noqa: E402


def _config(tiny_world):
  """The session's tiny world and tokenizer (conftest), a 4-step SFT schedule."""
  return config_lib.load(None, list(TINY_WORLD) + tiny_world + [
      "data.batch_size=2", "sft.steps=4", "sft.lr=0.003", "checkpoint.every_steps=100",
      "data.shuffle_buffer=8"])


def test_sft_resume_is_exact(tiny_world, tmp_path):
  config = _config(tiny_world)
  straight, _ = sft_train.train(config, str(tmp_path / "a"), steps=4, progress=False)
  # The same run in two sessions: 2 steps, a new process-like run, --resume to 4.
  first, _ = sft_train.train(config, str(tmp_path / "b"), steps=2, progress=False)
  assert first.session.ckpt.all_steps() == [2]
  second, result = sft_train.train(config, str(tmp_path / "b"), steps=4, resume=True,
                                   progress=False)
  assert result.last_step == 4
  for a, b in zip(jax.tree.leaves(straight.session.state),
                  jax.tree.leaves(second.session.state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  a_rows = metrics_writer.read_jsonl(tmp_path / "a" / "metrics" / "metrics.jsonl")
  b_rows = metrics_writer.read_jsonl(tmp_path / "b" / "metrics" / "metrics.jsonl")
  assert [r["step"] for r in b_rows] == [0, 1, 2, 3]
  for ra, rb in zip(a_rows, b_rows):
    assert ra["nll"] == rb["nll"] and ra["num_tokens"] == rb["num_tokens"]
  assert (tmp_path / "b" / "metrics" / "curves.png").stat().st_size > 0
