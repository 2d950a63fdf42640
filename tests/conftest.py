"""Shared test setup: transformers must not import TensorFlow; test data paths; the tiny world
of the end-to-end command tests."""

import os
import pathlib

import pytest

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA_DIR = pathlib.Path(__file__).parent / "data"
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"  # the shipped configs


def free_port() -> int:
  """A TCP port nobody listens on now (the coordinator of a multi-process test)."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


# A small synthetic world and its tiny tokenizer, written once per test process and shared by the
# end-to-end command tests through these `--set` values (paths only: every other setting is the
# config's).
TINY_WORLD = ("synthetic.num_train=16", "synthetic.num_eval=4")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> list[str]:
  """`--set` overrides (`data.tfds_dir`, `data.tokenizer_dir`) of the shared tiny world."""
  from vcoach_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("tiny_world")
  config = config_lib.load(None, list(TINY_WORLD))
  tfds_stgr.synthetic_from_config(config, str(root / "data"))
  experiment.tokenizer(config, root)
  return [f"data.tfds_dir={root / 'data'}", f"data.tokenizer_dir={root / 'tokenizer'}"]


def set_args(overrides) -> list[str]:
  """["--set", o1, "--set", o2, ...]."""
  return [arg for o in overrides for arg in ("--set", o)]
