"""The VP-Selector's three phases on a run config: label records with proxy reasoners, train the
selector, predict the cache the RL trainer reads (docs/design.md §8.6).

  paths = selector_run.paths_for(config, workdir)
  tok = selector_run.tokenizer(config, workdir, backbone=False)
  selector_run.build_data(config, workdir, tok, paths, limit=200)
  tok = selector_run.tokenizer(config, workdir)        # the selector backbone's tokenizer
  selector_run.train(config, workdir, tok, paths)
  selector_run.predict(config, workdir, tok, paths)   # writes paths["cache"]

`vcoach select` and the demo call these; each reports its progress through `log` (a line at a
time; default print) and returns what it wrote.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Callable, Iterator

from vcoach_jax import config as config_lib

Log = Callable[[str], None]


def paths_for(config, workdir: str) -> dict[str, str]:
  """{data, checkpoint, cache}: the config's `selector.*` paths, else under WORKDIR/selector."""
  s = config.selector
  base = os.path.join(os.fspath(workdir), "selector")
  return {"data": s.data or os.path.join(base, "labels.jsonl"),
          "checkpoint": s.checkpoint_dir or os.path.join(base, "checkpoint"),
          "cache": s.cache or os.path.join(base, "cache.json")}


def tokenizer(config, workdir: str, backbone: bool = True):
  """The tokenizer of the run (`backbone`: of `selector.backbone` when one is set, the model the
  selector trains on; else the policy's, which build-data's proxy reasoners use)."""
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  local = config
  if backbone and config.selector.backbone:
    local = config.copy_and_resolve_references()
    with local.unlocked():
      local.model.checkpoint = config.selector.backbone
  return experiment.tokenizer(local, workdir)


def examples(config, workdir: str, split: str | None = None) -> tuple[Iterator[dict], int]:
  """(iterator of decoded examples as numpy dicts, count) of a split of the config's dataset
  (`data.tfds_dir`, default WORKDIR/data; the synthetic world is written there first)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  builder = pipeline.dataset_builder(config, experiment.data_dir(config, workdir))
  split = split or config.data.split
  count = builder.info.splits[split].num_examples
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          read_config=tfds.ReadConfig(try_autocache=False))
  return tfds.as_numpy(ds), count


def _reasoner_models(config, workdir: str, tok) -> list:
  """The proxy reasoners: `selector.reasoners` checkpoints, else the policy of `model.*`."""
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import build, load_hf  # pylint: disable=g-import-not-at-top
  if config.selector.reasoners:
    dtype = build.DTYPES[config.model.dtype]
    return [load_hf(path, dtype=dtype) for path in config.selector.reasoners]
  local = config.copy_and_resolve_references()
  with local.unlocked():
    local.model.lora_rank = 0
  return [experiment.policy(local, tok, workdir)[0]]


def build_data(config, workdir: str, tok, paths: dict[str, str], *, split: str | None = None,
               limit: int | None = None, progress: bool = True, log: Log = print
               ) -> dict[str, int]:
  """Labels records of the dataset (each `selector.types` drawn and answered by every proxy
  reasoner; label = the best type) into the JSONL `paths["data"]`, resuming it; returns the
  counts (`new`, `skipped`, one per type)."""
  from vcoach_jax.data import chat, pipeline  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import hints, selector_data  # pylint: disable=g-import-not-at-top
  s = config.selector
  reasoners = [selector_data.greedy_reasoner(m, tok, s.max_new_tokens)
               for m in _reasoner_models(config, workdir, tok)]
  stream, count = examples(config, workdir, split)
  counts = selector_data.build_data(
      stream, reasoners, paths["data"], processor=chat.Processor(tok),
      texts=chat.PromptTexts.from_config(config),
      shapes=pipeline.BatchShapes.from_config(config.data),
      reward_options=config_lib.reward_options(config), types=tuple(s.types),
      options=hints.PromptOptions.from_config(config.prompting, config.video.timestamps),
      limit=limit, progress=progress, total=count)
  labels = ", ".join(f"{t} {counts[t]}" for t in s.types)
  log(f"{paths['data']}: {counts['new']} new, {counts['skipped']} already there; labels: "
      f"{labels}")
  return counts


def _inputs(config, workdir: str, split: str | None, selector, tok, rows):
  """(make_inputs over `rows`, the rows it covers): text mode, the records themselves; vl mode,
  the dataset examples of their ids."""
  from vcoach_jax.data import chat, pipeline  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import selector as sl  # pylint: disable=g-import-not-at-top
  model_config = selector.backbone.config
  wording = sl.SelectorTexts.load(config.prompts_file or None)
  if config.selector.mode == "text":
    return sl.text_inputs_fn(rows, tok, wording, model_config, config.selector.max_length), rows
  wanted = {str(r["id"]) for r in rows}
  found = [e for e in examples(config, workdir, split)[0]
           if pipeline.record_of(e)["id"] in wanted]
  texts = sl.vl_texts(chat.PromptTexts.from_config(config), wording.instruction)
  shapes = pipeline.BatchShapes.from_config(config.data)
  return (sl.vl_inputs_fn(found, chat.Processor(tok), texts, shapes, model_config),
          [pipeline.record_of(e) for e in found])


def split_held_out(n: int, held_out: float, seed: int):
  """(held-out indices, train indices) of `n` rows: a seeded permutation, round(held_out * n)
  rows held out."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  order = np.random.default_rng(seed).permutation(n)
  n_held = int(round(held_out * n))
  return order[:n_held], order[n_held:]


def train(config, workdir: str, tok, paths: dict[str, str], *, split: str | None = None,
          held_out: float = 0.1, log: Log = print) -> dict[str, Any]:
  """Trains the selector on the labelled JSONL `paths["data"]` (a `held_out` fraction kept for
  evaluation) and saves it to `paths["checkpoint"]`; returns the checkpoint's metadata (with
  `held_out_accuracy` and `majority_baseline` when rows were held out)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import selector as sl  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import selector_data  # pylint: disable=g-import-not-at-top
  s = config.selector
  rows, labels = selector_data.read_labelled(paths["data"], tuple(s.types))
  by_id = {str(r["id"]): label for r, label in zip(rows, labels)}
  selector = sl.from_config(config, tok, workdir, s.seed)
  make_inputs, rows = _inputs(config, workdir, split, selector, tok, rows)
  labels = np.array([by_id[str(r["id"])] for r in rows], np.int64)
  held, fit_rows = split_held_out(len(rows), held_out, s.seed)
  counts = np.bincount(labels, minlength=len(s.types))
  log(f"{len(rows)} labelled records ({', '.join(f'{t} {c}' for t, c in zip(s.types, counts))})"
      f"; {len(fit_rows)} train, {len(held)} held out")

  def on_step(step, metrics):
    if step % max(1, s.steps // 10) == 0 or step == s.steps - 1:
      log(f"step {step + 1}/{s.steps}: loss {metrics['loss']:.4f} "
          f"accuracy {metrics['accuracy']:.3f}")
  sl.fit(selector, lambda i: make_inputs(fit_rows[i]), labels[fit_rows], steps=s.steps,
         batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay, seed=s.seed,
         on_step=on_step)
  meta = {"mode": s.mode, "types": list(s.types), "backbone": s.backbone,
          "lora_rank": s.lora_rank, "lora_alpha": s.lora_alpha, "steps": s.steps}
  if len(held):
    probs = sl.predict_all(selector, lambda i: make_inputs(held[i]), len(held), s.batch_size)
    accuracy = float((probs.argmax(1) == labels[held]).mean())
    majority = float((labels[held] == np.bincount(labels[fit_rows]).argmax()).mean())
    meta.update(held_out_accuracy=accuracy, majority_baseline=majority)
    log(f"held-out accuracy {accuracy:.3f} (always the majority class: {majority:.3f})")
  sl.save(selector, paths["checkpoint"], meta)
  log(f"checkpoint {paths['checkpoint']}")
  return meta


def predict(config, workdir: str, tok, paths: dict[str, str], *, split: str | None = None,
            records: str | None = None, limit: int | None = None, log: Log = print
            ) -> dict[str, str]:
  """Writes the cache {record_id: type} (`paths["cache"]`) of the trained selector over a split
  of the dataset, or (text mode) over the STGR records of the file `records`; the first `limit`
  records when given. Returns the cache."""
  from vcoach_jax.data import pipeline, tfds_stgr  # pylint: disable=g-import-not-at-top
  from vcoach_jax.prompting import selector as sl  # pylint: disable=g-import-not-at-top
  s = config.selector
  meta = sl.read_meta(paths["checkpoint"])
  if meta.get("types") != list(s.types) or meta.get("mode") != s.mode:
    raise ValueError(f"selector checkpoint {paths['checkpoint']!r} was trained with mode "
                     f"{meta.get('mode')!r} and types {meta.get('types')}; the config says "
                     f"{s.mode!r} and {list(s.types)}")
  selector = sl.from_config(config, tok, workdir, s.seed)
  sl.restore(selector, paths["checkpoint"])
  if records:
    if s.mode != "text":
      raise ValueError("records from a file work in text mode only (vl mode reads the "
                       "dataset's videos)")
    rows = [r for r in tfds_stgr.read_json_records(records) if isinstance(r, dict)]
  else:
    rows = [pipeline.record_of(e) for e in examples(config, workdir, split)[0]]
  rows = rows[:limit] if limit else rows
  make_inputs, rows = _inputs(config, workdir, split, selector, tok, rows)
  probs = sl.predict_all(selector, make_inputs, len(rows), s.batch_size)
  labels = {str(r["id"]): s.types[int(k)] for r, k in zip(rows, probs.argmax(1))}
  sl.write_cache(paths["cache"], labels)
  counts = collections.Counter(labels.values())
  log(f"{paths['cache']}: {len(labels)} records; " +
      ", ".join(f"{t} {counts[t]}" for t in s.types))
  return labels
