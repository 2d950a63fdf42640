"""The embedded default end to end (docs/design.md §10): synthetic world, tiny tokenizer, tiny
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
# The world is the grounded task only (spatio-temporal questions naming their object: every
# trace cites its boxes), each object centred in one 28-pixel cell (one merged patch: a box takes
# one value per cell) on a backdrop whose colour varies with the position (the pixels tell where
# a token is), short clips (short prompts), and look-alike distractors (same colour, another
# shape): what makes a prompt hard there is which object is meant, which a drawn prompt on the
# key frames shows. A quarter of the SFT examples carry such a prompt and its hint, so the SFT
# policy knows what one means.
# Prompted rows and sampler rows are padded to 4 or 8 (few compiled programs).
DEMO = (
    "sft.lr=0.01", "sft.steps=300", "sft.prompted=0.25", "optim.weight_decay=0.0",
    "optim.lr=0.0002", "optim.total_steps=20", "sampling.max_new_tokens=96",
    "checkpoint.every_steps=50", "selector.steps=40", "selector.batch_size=8",
    "selector.max_new_tokens=96",
    "data.prompt_buckets=(128, 256, 320, 384, 512, 1024, 2048, 4096, 8192, 16384)",
    "sampling.batch_buckets=(4, 8)",
    "synthetic.tasks=('temporal-spatial free-form QA',)", "synthetic.min_size=20",
    "synthetic.max_size=20", "synthetic.max_frames=6", "synthetic.max_speed=4.0",
    "synthetic.lookalike=0.5", "synthetic.grid=28", "synthetic.background=gradient",
    "synthetic.named=True", "prompting.darken_pad=4",
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


def greedy_completions(rl, config: ml_collections.ConfigDict, tok, workdir):
  """(first eval batch, greedy completion of each of its prompts) under `rl`'s current policy."""
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import batching  # pylint: disable=g-import-not-at-top
  from vcoach_jax.sampling import SamplingConfig  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  pipe = experiment.pipeline(config, tok, workdir, split="eval", shuffle_buffer=1)
  batch = pipe.next_host_batch()
  sampling = dataclasses.replace(SamplingConfig.from_config(config.sampling), greedy=True,
                                 num_samples=1)
  out = rl.sampler.generate(batching.batch_inputs(rl.parts.model.config, batch.arrays),
                            sampling, jax.random.key(0), state=rl.policy_state())
  return batch, out.texts


def _claimed_boxes(text: str, time: float) -> list:
  """Boxes of the claims whose time is nearest `time` (within the reward's 1 s gate)."""
  from vcoach_jax.rewards import parsing  # pylint: disable=g-import-not-at-top
  claims = [c for c in parsing.parse_claims(text) if abs(c.time - time) <= 1.0]
  if not claims:
    return []
  best = min(abs(c.time - time) for c in claims)
  return [list(map(float, b)) for c in claims if abs(c.time - time) == best
          for b in c.boxes if isinstance(b, list) and len(b) == 4
          and all(isinstance(v, (int, float)) for v in b)]


def key_frame_figure(batch, completions: dict, path) -> str | None:
  """The first held-out spatio-temporal clip of `batch`: its first key frame with the ground
  truth and each policy's claimed boxes there (`completions`: label -> one text per prompt)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vcoach_jax import plots  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  for i, example in enumerate(batch.examples):
    record = pipeline_lib.record_of(example)
    if not record["key_frames"] or not len(example["key_frames"]):
      continue
    key = record["key_frames"][0]
    w, h = record["image_size"]
    truth = [[b[0] * w, b[1] * h, b[2] * w, b[3] * h]
             for boxes in record["key_items"].get(str(key["idx"]), {}).values() for b in boxes]
    boxes = {label: _claimed_boxes(texts[i], key["time"]) for label, texts in completions.items()}
    return plots.boxes_on_frame(np.asarray(example["key_frames"][0]), boxes, path, truth=truth,
                                title=f"{record['id']}: {record['question']}\n"
                                      f"key frame at {key['time']:.1f}s (dashed: ground truth)")
  return None


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
  batch, sft_texts = greedy_completions(rl, rl_config, tok, w / "rl")
  rl.run()
  rl.export(w / "rl" / "policy")
  after = probe_policy(rl, rl_config, tok, w / "rl", n)
  _, rl_texts = greedy_completions(rl, rl_config, tok, w / "rl")
  seconds["rl"] = time.perf_counter() - t0
  table = probe_lib.table({"SFT (before RL)": before, "VisionCoach RL": after})
  plots = [str(sft.writer.logdir / "curves.png"), str(rl.writer.logdir / "curves.png")]
  figure = key_frame_figure(batch, {"SFT": sft_texts, "VisionCoach RL": rl_texts},
                            w / "key_frame.png")
  if figure:
    plots.append(figure)
  return DemoResult(table, before, after, plots, seconds)
