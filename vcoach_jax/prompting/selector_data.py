"""Labels for the VP-Selector from proxy reasoners (`vcoach select build-data`, docs/design.md §8.6).

For each record, every prompt type is drawn on its key frames (with its hint, `hints`), each proxy
reasoner answers every prompted input greedily, and the completions are scored with the project's
rewards: score = answer accuracy (ans_acc + ans_tiou + ans_viou) + grounding (thk_temporal_point
+ thk_temporal_segment + thk_spatial), averaged over reasoners. The label is the best type; ties
go to `raw` (then to the earlier type). Records without key items are labelled `raw` without
running anything (the trainer never prompts them, docs/design.md §8.4.2).

The output is JSONL, one row per record, appended and flushed as it goes, so an interrupted run
resumes where it stopped (ids already written are skipped; a line cut by the interruption is
dropped):

  {"id": ..., "task": ..., "question": ..., "key_items": {...}, "label": "circle",
   "scores": {"raw": 0.0, "darken": 1.2, ...}, "reason": "scored" | "no_key_items"}
"""

from __future__ import annotations

import collections
import json
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from vcoach_jax import storage
from vcoach_jax.data import chat
from vcoach_jax.data import pipeline
from vcoach_jax.prompting import hints

ANSWER_REWARDS = ("ans_acc", "ans_tiou", "ans_viou")
GROUNDING_REWARDS = ("thk_temporal_point", "thk_temporal_segment", "thk_spatial")

# A proxy reasoner: fixed-shape host arrays of a batch (`pipeline.collate`) -> one completion
# text per row.
Reasoner = Callable[[Mapping[str, np.ndarray]], Sequence[str]]


def score(per_reward: Mapping[str, np.ndarray]) -> np.ndarray:
  """Answer accuracy + grounding per completion (the rewards not scoring a task are 0)."""
  return sum(np.asarray(per_reward[name], np.float64)
             for name in ANSWER_REWARDS + GROUNDING_REWARDS)


def best_type(scores: Mapping[str, float], types: Sequence[str]) -> str:
  """The type with the highest score; ties -> `raw`, then the earlier type in `types`."""
  top = max(scores[t] for t in types)
  if "raw" in scores and np.isclose(scores["raw"], top, rtol=0, atol=1e-9):
    return "raw"
  return next(t for t in types if np.isclose(scores[t], top, rtol=0, atol=1e-9))


def greedy_reasoner(model, tokenizer, max_new_tokens: int) -> Reasoner:
  """A proxy reasoner: greedy completions of a fixed-shape host batch through the jitted
  sampler (one program per bucket, reused across batches)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import batching  # pylint: disable=g-import-not-at-top
  from vcoach_jax.sampling import Sampler, SamplingConfig  # pylint: disable=g-import-not-at-top
  sampler = Sampler(model, tokenizer)
  config = SamplingConfig(greedy=True, max_new_tokens=max_new_tokens)

  def reason(arrays: Mapping[str, np.ndarray]) -> list[str]:
    inputs = batching.batch_inputs(model.config, arrays)
    return sampler.generate(inputs, config, jax.random.key(0)).texts
  return reason


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def read_done(path: str) -> dict[str, dict[str, Any]]:
  """Rows already written ({id: row}); a file with a cut line is rewritten without it."""
  if not storage.path(path).exists():
    return {}
  rows, broken = {}, False
  lines = storage.read_text(path).splitlines(keepends=True)
  for line in lines:
    try:
      row = json.loads(line)
      rows[str(row["id"])] = row
    except (json.JSONDecodeError, KeyError, TypeError):
      broken = True
  if broken or (lines and not lines[-1].endswith("\n")):
    storage.write_text(path, "".join(json.dumps(r) + "\n" for r in rows.values()))
  return rows


def label_example(example: Mapping[str, Any], reasoners: Sequence[Reasoner], *,
                  processor: chat.Processor, texts: chat.PromptTexts,
                  shapes: pipeline.BatchShapes, reward_options: Mapping[str, Any],
                  types: Sequence[str], options: hints.PromptOptions = hints.PromptOptions()
                  ) -> dict[str, Any]:
  """The labelled row of one decoded example (TFDS feature dict)."""
  from vcoach_jax import rewards  # pylint: disable=g-import-not-at-top
  record = pipeline.record_of(example)
  row = {"id": record["id"], "task": record["task"], "question": record["question"],
         "key_items": record["key_items"]}
  if not any(record["key_items"].values()):
    return dict(row, label="raw", scores=None, reason="no_key_items")
  items = [pipeline.encode_example(hints.prompted_example(example, t, options), processor, texts,
                                   shapes, prompt_type=t) for t in types]
  pad = processor.tokenizer.pad_token_id
  batch = pipeline.collate(items, shapes, int(pad if pad is not None else 0))
  total = np.zeros((len(types),), np.float64)
  for reasoner in reasoners:
    completions = list(reasoner(batch.arrays))
    total += score(rewards.compute(completions, batch.samples, dict(reward_options)))
  scores = {t: float(s) for t, s in zip(types, total / len(reasoners))}
  return dict(row, label=best_type(scores, types), scores=scores, reason="scored")


def build_data(examples: Iterable[Mapping[str, Any]], reasoners: Sequence[Reasoner],
               out_path: str, *, processor: chat.Processor, texts: chat.PromptTexts,
               shapes: pipeline.BatchShapes, reward_options: Mapping[str, Any],
               types: Sequence[str], options: hints.PromptOptions = hints.PromptOptions(),
               limit: int | None = None, progress: bool = True,
               total: int | None = None) -> collections.Counter:
  """Labels `examples` into the JSONL `out_path` (appending; ids already there are skipped).

  Args:
    examples: decoded examples (TFDS feature dicts), e.g. a TFDS split as numpy.
    reasoners: proxy reasoners (`greedy_reasoner`), scores averaged over them.
    out_path: the labelled JSONL.
    processor, texts, shapes: prompt building as the trainer does it.
    reward_options: the four reward options (`config.reward_options`).
    types: the prompt types to compare (`config.selector.types`).
    options: how prompts are drawn (`config.prompting`).
    limit: stop after labelling this many new records (None: all).
    progress: tqdm bar.
    total: number of examples, for the bar.

  Returns:
    Counts of labels over the whole file (earlier rows included), plus "new" and "skipped".
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  if not reasoners:
    raise ValueError("build-data needs at least one proxy reasoner")
  done = read_done(out_path)
  counts = collections.Counter(row["label"] for row in done.values())
  new = skipped = 0
  with storage.Appender(out_path) as f:
    bar = tqdm(examples, desc="build-data", unit="rec", total=total, disable=not progress)
    for example in bar:
      if limit is not None and new >= limit:
        break
      if _text(example["id"]) in done:
        skipped += 1
        continue
      row = label_example(example, reasoners, processor=processor, texts=texts, shapes=shapes,
                          reward_options=reward_options, types=types, options=options)
      f.write(json.dumps(row) + "\n")
      done[row["id"]] = row
      counts[row["label"]] += 1
      new += 1
      bar.set_postfix({t: counts[t] for t in types})
  counts["new"], counts["skipped"] = new, skipped
  return counts


def read_labelled(path: str, types: Sequence[str]) -> tuple[list[dict[str, Any]], np.ndarray]:
  """Rows of a labelled JSONL and their class indices in `types` (rows of other types dropped)."""
  if not storage.path(path).exists():
    raise FileNotFoundError(f"labelled data {path!r} does not exist (write it with "
                            "`vcoach select build-data`)")
  rows = list(read_done(path).values())
  for row in rows:
    for key in ("id", "question", "label"):
      if key not in row:
        raise ValueError(f"labelled data {path!r}: record id {row.get('id')!r} has no {key!r}")
  kept, labels = [], []
  for r in rows:
    # Scored rows are relabelled among `types` (data built for more types serves a 2-class
    # selector); unscored rows keep their label when it is one of `types`.
    scored = bool(r.get("scores")) and all(t in r["scores"] for t in types)
    label = best_type(r["scores"], types) if scored else r["label"]
    if label in types:
      kept.append(dict(r, label=label))
      labels.append(list(types).index(label))
  return kept, np.array(labels, np.int64)
