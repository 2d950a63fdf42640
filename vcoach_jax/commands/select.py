"""`vcoach select build-data | train | predict`: the VP-Selector's data, training and cache."""

from __future__ import annotations

import argparse
import os

from vcoach_jax import config as config_lib
from vcoach_jax import storage

HELP = "VP-Selector: build labelled data with proxy reasoners, train it, predict the cache"
DESCRIPTION = """\
The VP-Selector picks the visual prompt for a hard sample (docs/design.md §8.6).

  build-data  for each record of the dataset, draw every type of `selector.types` on its key
              frames (with its hint), answer each with the proxy reasoners (`selector.reasoners`,
              checkpoints in the HF Qwen2.5-VL layout; none = the policy of `model.*`), score
              answer accuracy + grounding with the rewards, label = the best type (ties: raw).
              Appends to a JSONL; an interrupted run resumes.
  train       LoRA + linear head on `selector.mode` = text (reference: instruction + question +
              key object names) or vl (paper: the video prompt); prints held-out accuracy and
              writes an orbax checkpoint of the trained params.
  predict     writes the cache {record_id: type} the RL trainer reads (`selector.cache`).

Files default to WORKDIR/selector/{labels.jsonl, checkpoint/, cache.json} unless
`selector.data`, `selector.checkpoint_dir`, `selector.cache` say otherwise. The dataset is the
config's (`data.source`, `data.tfds_dir`; the synthetic world is written to WORKDIR/data).

examples:
  vcoach select build-data --workdir runs/sel --limit 200
  vcoach select train --workdir runs/sel --set selector.steps=500
  vcoach select predict --workdir runs/sel --split train
  vcoach select build-data --workdir runs/sel --set 'selector.reasoners=("runs/sft/policy",)'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("action", choices=("build-data", "train", "predict"))
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="work folder (tokenizer, synthetic data, default file locations)")
  parser.add_argument("--split", default=None, help="dataset split (default: data.split)")
  parser.add_argument("--limit", type=int, default=None,
                      help="build-data: label at most N new records; predict: first N records")
  parser.add_argument("--records", default=None, metavar="FILE",
                      help="predict (text mode): STGR records (JSON array / JSONL) or a "
                      "labelled JSONL instead of the dataset")
  parser.add_argument("--held-out", type=float, default=0.1,
                      help="train: fraction of the labelled records kept for evaluation")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  config_lib.add_config_flags(parser)


def paths_for(config, workdir: str) -> dict[str, str]:
  s = config.selector
  base = os.path.join(workdir, "selector")
  return {"data": s.data or os.path.join(base, "labels.jsonl"),
          "checkpoint": s.checkpoint_dir or os.path.join(base, "checkpoint"),
          "cache": s.cache or os.path.join(base, "cache.json")}


def _examples(config, workdir: str, split: str | None):
  """(iterator of decoded examples as numpy dicts, count) of a split of the config's dataset."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  data_dir = config.data.tfds_dir or os.path.join(workdir, "data")
  if config.data.source == "synthetic":
    builder = tfds_stgr.synthetic_from_config(config, data_dir)
  else:
    builder = tfds_stgr.load(data_dir)
  split = split or config.data.split
  count = builder.info.splits[split].num_examples
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          read_config=tfds.ReadConfig(try_autocache=False))
  return tfds.as_numpy(ds), count


def build_data(config, args, paths, tok) -> int:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import chat, pipeline  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import load_hf  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import hints, selector_data  # pylint: disable=g-import-not-at-top
  s = config.selector
  if s.reasoners:
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[config.model.dtype]
    models = [load_hf(path, dtype=dtype) for path in s.reasoners]
  else:
    local = config.copy_and_resolve_references()
    with local.unlocked():
      local.model.lora_rank = 0
    models = [experiment.policy(local, tok, args.workdir)[0]]
  reasoners = [selector_data.greedy_reasoner(m, tok, s.max_new_tokens) for m in models]
  examples, count = _examples(config, args.workdir, args.split)
  counts = selector_data.build_data(
      examples, reasoners, paths["data"], processor=chat.Processor(tok),
      texts=chat.PromptTexts.from_config(config),
      shapes=pipeline.BatchShapes.from_config(config.data),
      reward_options=config_lib.reward_options(config), types=tuple(s.types),
      options=hints.PromptOptions.from_config(config.prompting, config.video.timestamps),
      limit=args.limit, progress=not args.no_progress, total=count)
  labels = ", ".join(f"{t} {counts[t]}" for t in s.types)
  print(f"{paths['data']}: {counts['new']} new, {counts['skipped']} already there; labels: "
        f"{labels}")
  return 0


def _inputs(config, args, selector, tok, rows):
  """make_inputs over `rows` (text mode: records; vl mode: ids looked up in the dataset)."""
  from vcoach_jax.data import chat, pipeline  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import selector as sl  # pylint: disable=g-import-not-at-top
  model_config = selector.backbone.config
  wording = sl.SelectorTexts.load(config.prompts_file or None)
  if config.selector.mode == "text":
    return sl.text_inputs_fn(rows, tok, wording, model_config, config.selector.max_length), rows
  wanted = {str(r["id"]) for r in rows}
  examples = [e for e in _examples(config, args.workdir, args.split)[0]
              if pipeline.record_of(e)["id"] in wanted]
  texts = sl.vl_texts(chat.PromptTexts.from_config(config), wording.instruction)
  shapes = pipeline.BatchShapes.from_config(config.data)
  return (sl.vl_inputs_fn(examples, chat.Processor(tok), texts, shapes, model_config),
          [pipeline.record_of(e) for e in examples])


def train(config, args, paths, tok) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import selector as sl  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import selector_data  # pylint: disable=g-import-not-at-top
  s = config.selector
  rows, labels = selector_data.read_labelled(paths["data"], tuple(s.types))
  by_id = {str(r["id"]): label for r, label in zip(rows, labels)}
  selector = sl.from_config(config, tok, args.workdir, s.seed)
  make_inputs, rows = _inputs(config, args, selector, tok, rows)
  labels = np.array([by_id[str(r["id"])] for r in rows], np.int64)
  order = np.random.default_rng(s.seed).permutation(len(rows))
  n_held = int(round(args.held_out * len(rows)))
  held, train = order[:n_held], order[n_held:]
  counts = np.bincount(labels, minlength=len(s.types))
  print(f"{len(rows)} labelled records ({', '.join(f'{t} {c}' for t, c in zip(s.types, counts))})"
        f"; {len(train)} train, {len(held)} held out")

  def log(step, metrics):
    if step % max(1, s.steps // 10) == 0 or step == s.steps - 1:
      print(f"step {step + 1}/{s.steps}: loss {metrics['loss']:.4f} "
            f"accuracy {metrics['accuracy']:.3f}")
  sl.fit(selector, lambda i: make_inputs(train[i]), labels[train], steps=s.steps,
         batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay, seed=s.seed, on_step=log)
  meta = {"mode": s.mode, "types": list(s.types), "backbone": s.backbone,
          "lora_rank": s.lora_rank, "lora_alpha": s.lora_alpha, "steps": s.steps}
  if len(held):
    probs = sl.predict_all(selector, lambda i: make_inputs(held[i]), len(held), s.batch_size)
    accuracy = float((probs.argmax(1) == labels[held]).mean())
    majority = float((labels[held] == np.bincount(labels[train]).argmax()).mean())
    meta.update(held_out_accuracy=accuracy, majority_baseline=majority)
    print(f"held-out accuracy {accuracy:.3f} (always the majority class: {majority:.3f})")
  sl.save(selector, paths["checkpoint"], meta)
  print(f"checkpoint {paths['checkpoint']}")
  return 0


def predict(config, args, paths, tok) -> int:
  import collections  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import pipeline, tfds_stgr  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import selector as sl  # pylint: disable=g-import-not-at-top
  s = config.selector
  meta = sl.read_meta(paths["checkpoint"])
  if meta.get("types") != list(s.types) or meta.get("mode") != s.mode:
    raise ValueError(f"selector checkpoint {paths['checkpoint']!r} was trained with mode "
                     f"{meta.get('mode')!r} and types {meta.get('types')}; the config says "
                     f"{s.mode!r} and {list(s.types)}")
  selector = sl.from_config(config, tok, args.workdir, s.seed)
  sl.restore(selector, paths["checkpoint"])
  if args.records:
    if s.mode != "text":
      raise ValueError("--records works in text mode only (vl mode reads the dataset's videos)")
    rows = [r for r in tfds_stgr.read_json_records(args.records) if isinstance(r, dict)]
  else:
    rows = [pipeline.record_of(e) for e in _examples(config, args.workdir, args.split)[0]]
  rows = rows[:args.limit] if args.limit else rows
  make_inputs, rows = _inputs(config, args, selector, tok, rows)
  probs = sl.predict_all(selector, make_inputs, len(rows), s.batch_size)
  labels = {str(r["id"]): s.types[int(k)] for r, k in zip(rows, probs.argmax(1))}
  sl.write_cache(paths["cache"], labels)
  counts = collections.Counter(labels.values())
  print(f"{paths['cache']}: {len(labels)} records; " +
        ", ".join(f"{t} {counts[t]}" for t in s.types))
  return 0


def run(args: argparse.Namespace) -> int:
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  config = config_lib.load(args.config, args.overrides)
  storage.path(args.workdir).mkdir(parents=True, exist_ok=True)
  paths = paths_for(config, args.workdir)
  local = config
  if args.action != "build-data" and config.selector.backbone:
    local = config.copy_and_resolve_references()
    with local.unlocked():
      local.model.checkpoint = config.selector.backbone
  tok = experiment.tokenizer(local, args.workdir)
  action = {"build-data": build_data, "train": train, "predict": predict}[args.action]
  return action(config, args, paths, tok)
