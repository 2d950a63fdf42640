"""The embedded default end to end (DESIGN.md §10): synthetic world, tiny tokenizer, tiny
Qwen2.5-VL, cold-start SFT, VP-Selector, VisionCoach RL, a before/after table and plots.

  result = run(demo_config(), "vcoach_demo")
  print(result.table)

Everything lands in the work folder (data/, tokenizer/, sft/, selector/, rl/, the PNGs), so a
second run reuses the world and the tokenizer.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import ml_collections

from vcoach_jax import config as config_lib
from vcoach_jax import storage

# The demo's changes to the embedded default: a learning rate a random tiny model can learn
# with, completions as long as the world's traces, short runs. `fast` shrinks it for tests.
DEMO = (
    "sft.lr=0.01", "sft.steps=250", "optim.weight_decay=0.0", "optim.lr=0.0002",
    "optim.total_steps=12", "sampling.max_new_tokens=96", "checkpoint.every_steps=50",
    "selector.steps=40", "selector.batch_size=8", "selector.max_new_tokens=96",
)
FAST = ("sft.steps=40", "optim.total_steps=2", "sampling.max_new_tokens=32",
        "selector.steps=4", "selector.max_new_tokens=32", "synthetic.num_train=64",
        "synthetic.num_eval=16")
SELECTOR_RECORDS = 16  # records labelled by the proxy reasoner (fast: 4)
PROBE_BATCHES = 2  # eval batches in the before/after table (fast: 1)


@dataclasses.dataclass
class DemoResult:
  table: str  # the before/after table
  before: dict  # probe of the SFT policy (the RL start)
  after: dict  # probe after VisionCoach RL
  plots: list  # PNG paths
  seconds: dict  # wall time per phase


def demo_config(fast: bool = False, overrides=()) -> ml_collections.ConfigDict:
  """The embedded default with the demo's settings (and `fast`: a 1-2 minute CPU version)."""
  return config_lib.load(None, list(DEMO) + (list(FAST) if fast else []) + list(overrides))


def _select(config, workdir: storage.Path, tok, fast: bool) -> str:
  """Labels a few records with the SFT policy as proxy reasoner, trains the text selector and
  writes its cache over the train split; returns the cache path."""
  from vcoach_jax.commands import select  # pylint: disable=g-import-not-at-top
  args = argparse.Namespace(workdir=str(workdir), split=None, no_progress=True, records=None,
                            held_out=0.25, limit=4 if fast else SELECTOR_RECORDS)
  paths = select.paths_for(config, str(workdir))
  select.build_data(config, args, paths, tok)
  select.train(config, args, paths, tok)
  args.limit = None
  select.predict(config, args, paths, tok)
  return paths["cache"]


def cold_start(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
               fast: bool = False, seconds: dict | None = None, select: bool = True):
  """Phases 1-2 of the method, shared by `run` and `vcoach ablate`: cold-start SFT on the
  grounded traces, then (`select`) the VP-Selector (proxy-reasoner labels, training, cache).

  Returns:
    (the RL config: `model.checkpoint` = the SFT policy, `selector.cache` set, tokenizer and data
    folders shared inside `workdir`; the tokenizer; the SFT trainer). `seconds` gets the phases'
    wall times.
  """
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.sft import trainer as sft_trainer  # pylint: disable=g-import-not-at-top
  w = storage.path(workdir)
  seconds = {} if seconds is None else seconds
  t0 = time.perf_counter()
  tok = experiment.tokenizer(config, w)
  shared = [f"data.tokenizer_dir={w / 'tokenizer'}", f"data.tfds_dir={w / 'data'}"]
  config = config_lib.with_overrides(config, shared)

  print("== 1/3 cold-start SFT on the grounded traces")
  sft = sft_trainer.SFTTrainer(config, str(w / "sft"), progress=progress)
  sft.run()
  policy = sft.export(w / "sft" / "policy")
  seconds["sft"] = time.perf_counter() - t0

  start = config_lib.with_overrides(config, [f"model.checkpoint={policy}"])
  if not select:
    return start, tok, sft
  print("== 2/3 VP-Selector: proxy-reasoner labels, training, cache")
  t0 = time.perf_counter()
  cache = _select(start, w, tok, fast)
  seconds["selector"] = time.perf_counter() - t0
  return config_lib.with_overrides(start, [f"selector.cache={cache}"]), tok, sft


def probe_policy(rl, config: ml_collections.ConfigDict, tok, workdir, num_batches: int,
                 seed: int = 0) -> dict:
  """The probe (`rl.probe`) of trainer `rl`'s current policy on the first `num_batches` batches
  of the eval split (a fresh, unshuffled stream: every call sees the same prompts)."""
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.rl import probe as probe_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.sampling import SamplingConfig  # pylint: disable=g-import-not-at-top
  eval_pipe = experiment.pipeline(config, tok, workdir, split="eval", shuffle_buffer=1)
  return probe_lib.probe(rl.sampler, SamplingConfig.from_config(config.sampling), eval_pipe,
                         model_config=rl.parts.model.config, num_batches=num_batches,
                         k1=config.rl.k1, reward_options=config_lib.reward_options(config),
                         state=rl.policy_state(), seed=seed)


def run(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
        fast: bool = False) -> DemoResult:
  """SFT -> selector -> VisionCoach RL on `config`, probing before and after RL."""
  from vcoach_jax.rl import probe as probe_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.rl import trainer as rl_trainer  # pylint: disable=g-import-not-at-top
  w = storage.path(workdir)
  seconds = {}
  rl_config, tok, sft = cold_start(config, workdir, progress=progress, fast=fast,
                                   seconds=seconds)

  print("== 3/3 VisionCoach RL")
  t0 = time.perf_counter()
  rl = rl_trainer.Trainer(rl_config, str(w / "rl"), progress=progress)
  n = 1 if fast else PROBE_BATCHES
  before = probe_policy(rl, rl_config, tok, w / "rl", n)
  rl.run()
  rl.export(w / "rl" / "policy")
  after = probe_policy(rl, rl_config, tok, w / "rl", n)
  seconds["rl"] = time.perf_counter() - t0
  table = probe_lib.table({"SFT (before RL)": before, "VisionCoach RL": after})
  plots = [str(sft.writer.logdir / "curves.png"), str(rl.writer.logdir / "curves.png")]
  return DemoResult(table, before, after, plots, seconds)
