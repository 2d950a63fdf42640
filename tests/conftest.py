"""Shared test setup: transformers must not import TensorFlow; test data paths."""

import os
import pathlib

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA_DIR = pathlib.Path(__file__).parent / "data"


def free_port() -> int:
  """A TCP port nobody listens on now (the coordinator of a multi-process test)."""
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]
