"""`vcoach` prints no TensorFlow start-up lines and no TFDS deprecation notices (TensorFlow only
moves data here); other log lines still print."""

from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys

from vcoach_jax import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
# What TensorFlow and TFDS print unasked (TensorFlow 2.20, TFDS 4.9): the oneDNN notice (twice,
# each after absl's pre-InitializeLog line), the CPU-feature notice, the FeatureConnector.dtype
# deprecation notices.
NOISE = ("oneDNN custom operations", "cpu_feature_guard", "absl::InitializeLog",
         ".dtype` is deprecated")


def test_a_command_that_starts_tensorflow_prints_no_start_up_lines(tmp_path):
  """`vcoach prepare --synthetic` imports TensorFlow and TFDS and writes a TFDS dataset, in a
  fresh process with none of cli.TF_QUIET_ENV set (as a user's shell)."""
  env = {k: v for k, v in os.environ.items() if k not in cli.TF_QUIET_ENV}
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]]
                                                     if os.environ.get("PYTHONPATH") else []))
  out = tmp_path / "world"
  proc = subprocess.run(
      [sys.executable, "-m", "vcoach_jax.cli", "prepare", "--synthetic", "--out", str(out),
       "--no-progress", "--set", "synthetic.num_train=2", "--set", "synthetic.num_eval=1"],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "wrote the synthetic world (2 train, 1 eval)" in proc.stdout
  assert any(out.rglob("*.tfrecord*")), list(out.rglob("*"))  # TFDS ran
  assert not [line for line in proc.stderr.splitlines() if any(n in line for n in NOISE)], (
      proc.stderr[-3000:])


def test_tfds_deprecation_notices_are_dropped_other_absl_lines_pass(caplog):
  """The notices TFDS logs while decoding examples (its own `log_tf_warning`), through absl."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core.features import feature  # pylint: disable=g-import-not-at-top
  cli.quiet_tensorflow()
  cli.quiet_tensorflow()  # idempotent: one filter
  assert sum(isinstance(f, cli._DropTfdsDeprecation)  # pylint: disable=protected-access
             for f in logging.getLogger("absl").filters) == 1
  with caplog.at_level(logging.INFO):
    feature.log_tf_warning("FeatureConnector")
    feature.log_tf_warning("TensorInfo")
    absl_logging.warning("`FeatureConnector.np_dtype` is fine; this line is a real warning")
    absl_logging.error("a real error")
  assert [r.getMessage() for r in caplog.records] == [
      "`FeatureConnector.np_dtype` is fine; this line is a real warning", "a real error"]
