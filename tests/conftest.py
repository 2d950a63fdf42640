"""Shared test setup: transformers must not import TensorFlow; test data paths."""

import os
import pathlib

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA_DIR = pathlib.Path(__file__).parent / "data"
