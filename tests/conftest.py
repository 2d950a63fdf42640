"""Shared test setup: transformers must not import TensorFlow; one JAX compilation cache per test
run; test data paths; the tiny world of the end-to-end command tests."""

import os
import pathlib
import shutil
import sys
import tempfile

import pytest

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA_DIR = pathlib.Path(__file__).parent / "data"
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"  # the shipped configs


def _unoptimised_cpu_code() -> None:
  """XLA's CPU backend without LLVM's optimisation passes (`--xla_backend_optimization_level=0`,
  added to XLA_FLAGS, which the xdist workers and the processes tests start inherit): the suite's
  programs are tiny and run a few times each, so compiling them is most of its time, and LLVM's
  passes were about half of that (tests/test_sft_step.py: 82 -> 46 CPU seconds). The programs
  compute the same values. A level already in XLA_FLAGS is kept."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "--xla_backend_optimization_level" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


def pytest_configure(config):
  """One persistent JAX compilation cache for the whole run, shared by the xdist workers and the
  processes tests start (they inherit the environment): many files compile the same tiny-model
  programs (SFT and RL steps, the sampler), and a trainer built twice in one test compiles its
  programs twice. Set by the first pytest process (the xdist controller, or the only process
  under `-n 0`) before workers start; removed when it ends. A JAX_COMPILATION_CACHE_DIR already
  set is used as is (kept)."""
  _unoptimised_cpu_code()
  if hasattr(config, "workerinput") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  config.vcoach_jax_cache = tempfile.mkdtemp(prefix="vcoach_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = config.vcoach_jax_cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
  if "jax" in sys.modules:  # imported already (by a plugin): its flags read the environment then
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", config.vcoach_jax_cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


# The files that take longest, longest first (test_recipes.py: 320 s of CPU alone, most of it
# the 7B recipe's runlocal SFT + RL; test_demo.py: 130 s). With `--dist loadfile
# --no-loadscope-reorder` (pytest.ini) xdist hands files to its workers in collection order, so
# the long ones start first and the short ones fill in at the end instead of one long file
# starting last and running alone. A file not listed keeps its place after these.
LONG_FIRST = (
    "test_recipes.py", "test_ablate.py", "test_demo.py", "test_remote_workdir.py",
    "test_multihost.py", "test_rl_torch_parity.py", "test_plan.py", "test_eval_protocols.py",
    "test_grad_accum_e2e.py", "test_run_length.py", "test_selector.py", "test_sampling.py",
    "test_rl_sharded_step.py", "test_trainer_resume.py", "test_eval_sampler.py",
    "test_model_parity.py", "test_rewards_memory.py", "test_checkpoint_faults.py",
    "test_sampling_sharded.py", "test_model_scan.py", "test_rl_compile_count.py",
    "test_rl_placement.py",
)


def pytest_collection_modifyitems(config, items):
  del config
  rank = {name: i for i, name in enumerate(LONG_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole


def pytest_unconfigure(config):
  cache = getattr(config, "vcoach_jax_cache", None)
  if cache:
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    shutil.rmtree(cache, ignore_errors=True)


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
def tiny_world_dir(tmp_path_factory) -> pathlib.Path:
  """A folder with the shared tiny world: data/ (TFDS, TINY_WORLD's sizes) and tokenizer/."""
  from vcoach_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("tiny_world")
  config = config_lib.load(None, list(TINY_WORLD))
  tfds_stgr.synthetic_from_config(config, str(root / "data"))
  experiment.tokenizer(config, root)
  return root


@pytest.fixture(scope="session")
def tiny_world(tiny_world_dir) -> list[str]:
  """`--set` overrides (`data.tfds_dir`, `data.tokenizer_dir`) of the shared tiny world."""
  return [f"data.tfds_dir={tiny_world_dir / 'data'}",
          f"data.tokenizer_dir={tiny_world_dir / 'tokenizer'}"]


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_world_dir):
  """The shared tiny world's tokenizer (a transformers fast tokenizer)."""
  from vcoach_jax.data import tokenizer as tk  # pylint: disable=g-import-not-at-top
  return tk.load_tokenizer(str(tiny_world_dir / "tokenizer"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_world, tmp_path_factory) -> pathlib.Path:
  """A random tiny Qwen2.5-VL matched to `tiny_tokenizer`, saved in the Hugging Face layout with
  its tokenizer (what `vcoach eval`/`generate` read; do not write into it)."""
  from vcoach_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tokenizer as tk  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import build  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import save_hf  # pylint: disable=g-import-not-at-top
  config = config_lib.load(None, list(TINY_WORLD) + tiny_world)
  tok = tk.load_tokenizer(config.data.tokenizer_dir)
  model, _ = build.from_config(config, 0, tokenizer=tok)
  path = tmp_path_factory.mktemp("tiny_checkpoint")
  save_hf(model, path, tokenizer=tok)
  return path


def set_args(overrides) -> list[str]:
  """["--set", o1, "--set", o2, ...]."""
  return [arg for o in overrides for arg in ("--set", o)]
