"""Every shipped config runs under `:runlocal` (the tiny model and the synthetic world, every other
setting kept: scanned layers, chunked attention, remat, bf16, gradient accumulation) for one step
of its command: `vcoach sft` (sft_coldstart), `vcoach train` from that SFT's policy
(visioncoach_7b), `vcoach eval` (eval_vstar, eval_charades, demo), `vcoach select build-data` +
`train` (selector). The embedded default runs under `:runlocal` in tests/test_run_length.py
(`vcoach sft`) and tests/test_grad_accum_e2e.py (`-m slow`). A recipe that cannot run fails
here, not on a pod."""

from __future__ import annotations

import json
import math
import pathlib

import pytest

from conftest import CONFIGS, set_args
from vcoach_jax import cli
from vcoach_jax import config as config_lib
from vcoach_jax import recipes
from vcoach_jax import run_length

SHIPPED = sorted(p.stem for p in CONFIGS.glob("*.py") if p.stem != "__init__")
# Sizes only (the settings under test are the recipe's): fewer prompts and tokens per step.
SMALL = ("data.batch_size=4", "sampling.max_new_tokens=16", "selector.max_new_tokens=16")
CHANGED = set(recipes.LOCAL_EMPTY) | set(recipes.LOCAL_FROM_DEFAULT) | set(recipes.LOCAL_SET)
# Shipped config -> the test file that runs it under `:runlocal` (a new config needs a run).
RUNLOCAL_RUNS = {"default": "test_run_length.py", "demo": "test_recipes.py",
                 "eval_charades": "test_recipes.py", "eval_vstar": "test_recipes.py",
                 "selector": "test_recipes.py", "sft_coldstart": "test_recipes.py",
                 "visioncoach_7b": "test_recipes.py"}


def _config(name: str, arg: str = ""):
  return config_lib.load(f"{CONFIGS / name}.py{arg}")


def _rows(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / "metrics" / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("name", SHIPPED)
def test_runlocal_changes_only_the_model_and_the_world(name):
  full, local = config_lib.flatten(_config(name)), config_lib.flatten(_config(name, ":runlocal"))
  changed = {k for k in full if full[k] != local[k]}
  assert changed <= CHANGED, changed - CHANGED
  assert local["model.preset"] == "tiny" and local["data.source"] == "synthetic"
  assert local["eval.benchmark"] == "synthetic" and local["eval.protocol"] == "training"
  for key in ("model.scan_layers", "model.attention_impl", "model.remat_policy", "model.dtype",
              "optim.grad_accum", "optim.epochs", "data.batch_size", "optim.lr"):
    assert local[key] == full[key], key
  assert config_lib.flatten(_config(name, ":runlocal=false")) == full


def test_every_shipped_config_runs_under_runlocal():
  """A config added to configs/ without a `:runlocal` run in the suite fails here."""
  assert sorted(RUNLOCAL_RUNS) == SHIPPED
  for name, test_file in RUNLOCAL_RUNS.items():
    if test_file != pathlib.Path(__file__).name:  # this file's runs are below
      text = (pathlib.Path(__file__).parent / test_file).read_text()
      assert f"CONFIGS / '{name}'}}.py:runlocal" in text, (name, test_file)


def test_config_arguments_are_parsed_and_checked():
  arg = recipes.parse_arg("runlocal,n=3", runlocal=False, n=1, name="a")
  assert (arg.runlocal, arg.n, arg.name) == (True, 3, "a")
  assert recipes.parse_arg(None, runlocal=False).runlocal is False
  with pytest.raises(config_lib.ConfigError, match="unknown config argument 'runlocl'"):
    _config("visioncoach_7b", ":runlocl")
  with pytest.raises(ValueError, match="expected int"):
    recipes.parse_arg("n=x", n=1)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("method", ["gspo", "coach", "full"])
def test_method_argument_sets_rl_method_only(name, method):
  full, chosen = _config(name), _config(name, f":method={method}")
  assert chosen.rl.method == method
  changed = {k for k, v in config_lib.flatten(chosen).items()
             if v != config_lib.flatten(full)[k]}
  assert changed <= {"rl.method"}
  local = _config(name, f":method={method},runlocal")
  assert local.rl.method == method and local.model.preset == "tiny"


def test_unknown_method_or_variant_names_the_known_ones():
  with pytest.raises(config_lib.ConfigError,
                     match=r"method='grpo': expected one of \('gspo', 'coach', 'full'\)"):
    _config("default", ":method=grpo")
  with pytest.raises(config_lib.ConfigError,
                     match=r"variant='big': expected one of \('demo', 'ablate'\)"):
    _config("demo", ":variant=big")
  with pytest.raises(config_lib.ConfigError, match="unknown config argument 'fast'"):
    _config("visioncoach_7b", ":fast")


@pytest.mark.parametrize("arg", ["", ":fast", ":variant=ablate", ":variant=ablate,fast"])
def test_demo_and_ablate_build_the_shipped_demo_config(arg):
  """`vcoach demo` / `vcoach ablate` run configs/demo.py with the argument their flags name;
  --set overrides go on top."""
  from vcoach_jax import ablate, demo  # pylint: disable=g-import-not-at-top
  want = config_lib.flatten(_config("demo", arg))
  fast, variant = "fast" in arg, "ablate" if "ablate" in arg else "demo"
  made = (ablate.ablate_config(fast) if variant == "ablate" else demo.demo_config(fast))
  assert config_lib.flatten(made) == want
  assert demo.demo_config(fast, ["optim.lr=0.5"], variant=variant).optim.lr == 0.5
  # The variants differ where their layers say (the ablation adds every task on top of the demo).
  if variant == "ablate":
    assert len(made.synthetic.tasks) > 1 and made.synthetic.grid == 28


def test_the_7b_recipe_trains_one_epoch(tiny_world, tmp_path):
  config = config_lib.with_overrides(_config("visioncoach_7b", ":runlocal"), tiny_world)
  config, stop, _ = run_length.plan(config, run_length.RL_KEYS, None, [], tmp_path)
  assert config.optim.total_steps == stop == math.ceil(16 / config.data.batch_size)


@pytest.fixture(scope="module")
def sft_policy(tiny_world, tmp_path_factory) -> pathlib.Path:
  """`vcoach sft --config configs/sft_coldstart.py:runlocal --steps 1`; its policy folder."""
  work = tmp_path_factory.mktemp("sft_coldstart")
  argv = ["sft", "--config", f"{CONFIGS / 'sft_coldstart'}.py:runlocal", "--steps", "1",
          "--workdir", str(work), "--no-progress"] + set_args(list(SMALL) + tiny_world)
  assert cli.main(argv) == 0
  rows = _rows(work)
  assert [r["step"] for r in rows] == [0]
  assert all(math.isfinite(r["nll"]) and r["skipped"] == 0 for r in rows), rows
  return work / "policy"


def test_visioncoach_7b_trains_from_the_sft_policy(sft_policy, tiny_world, tmp_path):
  argv = ["train", "--config", f"{CONFIGS / 'visioncoach_7b'}.py:runlocal", "--steps", "1",
          "--workdir", str(tmp_path), "--no-progress"] + set_args(
              list(SMALL) + tiny_world + [f"model.checkpoint={sft_policy}"])
  assert cli.main(argv) == 0
  rows = _rows(tmp_path)
  assert [r["step"] for r in rows] == [0]
  assert all(math.isfinite(r["loss"]) and r["skipped"] == 0 for r in rows), rows
  assert (tmp_path / "policy" / "config.json").is_file()


# Under `:runlocal` both evaluation recipes read the synthetic benchmark the way training shows
# it, so they compile the same programs (the second run hits the suite's compilation cache); the
# demo's config (float32, unrolled layers) evaluates the same policy with its own.
@pytest.mark.parametrize("name", ["eval_vstar", "eval_charades", "demo"])
def test_eval_recipe_evaluates_the_sft_policy(name, sft_policy, tiny_world, tmp_path):
  argv = ["eval", "--config", f"{CONFIGS / name}.py:runlocal", "--checkpoint",
          str(sft_policy), "--limit", "2", "--out", str(tmp_path), "--no-progress"] + set_args(
              list(SMALL) + tiny_world)
  assert cli.main(argv) == 0
  lines = (tmp_path / "synthetic.jsonl").read_text().splitlines()
  assert len(lines) == 2
  assert (tmp_path / "summary.json").is_file()


def test_selector_labels_and_trains(sft_policy, tiny_world, tmp_path):
  """One labelled record, one update of the video-mode selector (one compilation)."""
  base = ["--config", f"{CONFIGS / 'selector'}.py:runlocal", "--workdir", str(tmp_path),
          "--no-progress"] + set_args(
              list(SMALL) + tiny_world + [f"model.checkpoint={sft_policy}", "selector.steps=1"])
  assert cli.main(["select", "build-data", "--limit", "1"] + base) == 0
  labels = (tmp_path / "selector" / "labels.jsonl").read_text().splitlines()
  assert len(labels) == 1
  assert cli.main(["select", "train", "--held-out", "0"] + base) == 0
  meta = json.loads((tmp_path / "selector" / "checkpoint" / "selector.json").read_text())
  assert (meta["mode"], meta["steps"], meta["num_classes"]) == ("vl", 1, 5)
