"""The embedded default end to end (docs/design.md §10): synthetic world, tiny tokenizer, tiny
Qwen2.5-VL, cold-start SFT, VP-Selector, VisionCoach RL, a before/after table and plots.

  result = run(demo_config(), "vcoach_demo")
  print(result.table)

Everything lands in the work folder (data/, tokenizer/, sft/, selector/, rl/, the PNGs), so a
second run reuses the world and the tokenizer.
"""

from __future__ import annotations

import dataclasses
import time

import ml_collections

from vcoach_jax import config as config_lib
from vcoach_jax import storage

# The demo's settings are data: configs/demo.py (its `fast` argument: the smoke version).
CONFIG = "vcoach_jax.configs.demo"
SELECTOR_RECORDS = 16  # records labelled by the proxy reasoner (fast: 4)
PROBE_BATCHES = 2  # eval batches in the before/after table (fast: 1)


@dataclasses.dataclass
class DemoResult:
  table: str  # the before/after table
  before: dict  # probe of the SFT policy (the RL start)
  after: dict  # probe after VisionCoach RL
  plots: list  # PNG paths
  seconds: dict  # wall time per phase


def demo_config(fast: bool = False, overrides=(), *, variant: str = "demo",
                method: str = "") -> ml_collections.ConfigDict:
  """configs/demo.py's `variant` (and `fast`: a 1-2 minute CPU version; `method`: rl.method)
  with `key=value` overrides, validated."""
  arg = ",".join([f"variant={variant}"] + (["fast"] if fast else [])
                 + ([f"method={method}"] if method else []))
  return config_lib.load(f"{CONFIG}:{arg}", list(overrides))


def _select(config, workdir: storage.Path, tok, fast: bool) -> str:
  """Labels a few records with the SFT policy as proxy reasoner, trains the text selector and
  writes its cache over the train split; returns the cache path."""
  from vcoach_jax.prompting import selector_run  # pylint: disable=g-import-not-at-top
  paths = selector_run.paths_for(config, str(workdir))
  selector_run.build_data(config, str(workdir), tok, paths, progress=False,
                          limit=4 if fast else SELECTOR_RECORDS)
  selector_run.train(config, str(workdir), tok, paths, held_out=0.25)
  selector_run.predict(config, str(workdir), tok, paths)
  return paths["cache"]


def cold_start(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True,
               fast: bool = False, seconds: dict | None = None, select: bool = True,
               seed: int = 0):
  """Phases 1-2 of the method, shared by `run` and `vcoach ablate`: cold-start SFT on the
  grounded traces (`seed`: the random model's init and the SFT's rng), then (`select`) the
  VP-Selector (proxy-reasoner labels, training, cache).

  Returns:
    (the RL config: `model.checkpoint` = the SFT policy, `selector.cache` set, tokenizer and data
    folders shared inside `workdir`; the tokenizer; the SFT trainer). `seconds` gets the phases'
    wall times.
  """
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.sft import train as sft_train  # pylint: disable=g-import-not-at-top
  w = storage.path(workdir)
  seconds = {} if seconds is None else seconds
  t0 = time.perf_counter()
  tok = experiment.tokenizer(config, w)
  shared = [f"data.tokenizer_dir={w / 'tokenizer'}", f"data.tfds_dir={w / 'data'}"]
  config = config_lib.with_overrides(config, shared)

  print("== 1/3 cold-start SFT on the grounded traces")
  sft, _ = sft_train.train(config, str(w / "sft"), progress=progress, seed=seed)
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
        fast: bool = False, seed: int | None = None) -> DemoResult:
  """SFT -> selector -> VisionCoach RL on `config`, probing before and after RL. `seed` seeds
  the random model, both trainers' rngs and the data order (it replaces `data.seed`); None: seed
  0 and the config's `data.seed`. The world (`synthetic.seed`) and the held-out prompts stay."""
  if seed is not None:
    config = config_lib.with_overrides(config, [f"data.seed={seed}"])
  seed = seed or 0
  from vcoach_jax.rl import probe as probe_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.rl import train as rl_train  # pylint: disable=g-import-not-at-top
  w = storage.path(workdir)
  seconds = {}
  rl_config, tok, sft = cold_start(config, workdir, progress=progress, fast=fast,
                                   seconds=seconds, seed=seed)

  print("== 3/3 VisionCoach RL")
  t0 = time.perf_counter()
  rl = rl_train.setup(rl_config, str(w / "rl"), progress=progress, seed=seed)
  n = 1 if fast else PROBE_BATCHES
  before = probe_policy(rl, rl_config, tok, w / "rl", n)
  batch, sft_texts = greedy_completions(rl, rl_config, tok, w / "rl")
  rl_train.fit(rl)
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
