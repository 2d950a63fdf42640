"""tf.data from a prepared TFDS dataset -> fixed-shape host batches -> global jax.Arrays.

  pipe = Pipeline.from_config(config, tokenizer, data_dir)
  batch = pipe.next_host_batch()   # HostBatch: numpy arrays of fixed shapes + reward samples
  arrays = to_global(batch.arrays, mesh)
  pipe.save(path); ...; pipe.restore(path)   # continues with exactly the same next batch

Reading and shuffling are tf.data. The split is read as `data.read_parts` = S parts (TFDS
`even_splits`), each shuffled on its own (seed `data.seed + j` for part j) and repeated; global
batch t takes B / S consecutive examples from each part, part 0's first. The stream depends on S,
not on the number of processes: with `row_slice = (p, n)` (n divides S) process p reads only
parts p*S/n .. (p+1)*S/n - 1, i.e. exactly its own rows of every global batch, so n processes
see together what one process reading all S parts sees (docs/data.md, "Reading per host").
Prompt construction, the processor and tokenisation are host python per example (`chat`), then
examples are padded to fixed shapes so the device code compiles a handful of times only:

  input_ids, attention_mask  [B, P]   P = smallest `prompt_buckets` entry >= the longest prompt
                                      of the batch (left padding, as the sampler expects)
  pixel_values               [B, max_patches, 3*2*14*14]   zero rows after each prompt's patches
  image_grid_thw             [B, max_images, 3]            zero rows after each prompt's images
  num_images, num_patches    [B]
  target_ids, target_mask    [B, max_target_length]        the SFT target + <|im_end|>, right-padded

The position is each part's tf.data iterator state (`tf.train.Checkpoint`, shuffle buffer
included), one file per part, each process writing and reading its own parts' files, so a
restore continues with the same next batch (on any process count that divides S).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from vcoach_jax.data import chat
from vcoach_jax.data import records as records_lib
from vcoach_jax.data import sft_targets

@dataclasses.dataclass(frozen=True)
class BatchShapes:
  """Fixed shapes of a host batch (`from_config(config.data)`)."""
  batch_size: int = 8  # global rows of a batch
  prompt_buckets: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384)
  max_prompt_length: int = 16384
  max_target_length: int = 256
  max_images: int = 20
  max_patches: int = 2048

  @classmethod
  def from_config(cls, data: Mapping[str, Any]) -> "BatchShapes":
    return cls(batch_size=data["batch_size"],
               prompt_buckets=tuple(sorted(data["prompt_buckets"])),
               max_prompt_length=data["max_prompt_length"],
               max_target_length=data["max_target_length"], max_images=data["max_images"],
               max_patches=data["max_patches"])

  def bucket(self, length: int) -> int:
    for b in self.prompt_buckets:
      if b >= length:
        return min(b, self.max_prompt_length)
    return self.max_prompt_length


@dataclasses.dataclass
class HostBatch:
  """One host's batch: `arrays` (fixed shapes, numpy) and per-example python metadata."""
  arrays: dict[str, np.ndarray]
  samples: list[dict[str, Any]]  # reward sample dicts (`vcoach_jax.rewards.compute`)
  ids: list[str]
  # The decoded examples (frames, key frames, ...), kept so the trainer can re-render a prompt
  # with a visual prompt for a hard sample.
  examples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  # With `Pipeline(row_slice=...)`: every field holds global rows lo..hi-1 only (this
  # process's, the only ones it read) and `size` is the global batch's row count; None: all rows.
  rows: tuple[int, int] | None = None
  size: int | None = None


def _text(x) -> str:
  return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def record_of(example: Mapping[str, Any]) -> dict[str, Any]:
  """The record fields of a TFDS example (numpy values) as python."""
  return {
      "id": _text(example["id"]), "task": _text(example["task"]),
      "question": _text(example["question"]), "answer": _text(example["answer"]),
      "reasoning_process": _text(example["reasoning_process"]),
      "sft_answer": _text(example["sft_answer"]),
      "key_frames": [{"idx": int(i), "time": float(t), "path": ""} for i, t in
                     zip(example["key_frame_idx"], example["key_frame_times"])],
      "key_items": json.loads(_text(example["key_items"])),
      "image_size": [int(v) for v in example["image_size"]],
  }


def build_prompt(example: Mapping[str, Any], texts: chat.PromptTexts,
                 prompt_type: str | None = None, key_frames: Sequence[np.ndarray] | None = None
                 ) -> chat.Prompt:
  """The prompt of one TFDS example; with `prompt_type` its hint is appended; `key_frames`
  replaces the stored key-frame images (e.g. with a visual prompt drawn on them)."""
  task = _text(example["task"])
  question = _text(example["question"])
  if task == records_lib.TASK_VQA:
    return chat.build_image_prompt(question, example["frames"][0], texts, prompt_type)
  keys = list(example["key_frames"]) if key_frames is None else list(key_frames)
  return chat.build_video_prompt(
      task, question, list(example["frames"]), [float(t) for t in example["timestamps"]],
      float(example["video_duration"]), texts, keys,
      [float(t) for t in example["key_frame_times"]], prompt_type,
      sample_fps=float(example["video_sample_fps"]))


def encode_example(example: Mapping[str, Any], processor: chat.Processor,
                   texts: chat.PromptTexts, shapes: BatchShapes, step_percent: float = 1.0,
                   prompt_type: str | None = None,
                   key_frames: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
  """Model inputs (unpadded) + SFT target ids + the reward sample of one example; with
  `prompt_type` its hint is appended and `key_frames` (e.g. with a visual prompt drawn on them)
  replace the stored key-frame images."""
  record = record_of(example)
  prompt = build_prompt(example, texts, prompt_type, key_frames)
  inputs = processor(prompt)
  rid = record["id"]
  if len(prompt.images) > shapes.max_images:
    raise ValueError(f"record id {rid!r}: {len(prompt.images)} images exceed data.max_images = "
                     f"{shapes.max_images}")
  if inputs["pixel_values"].shape[0] > shapes.max_patches:
    raise ValueError(f"record id {rid!r}: {inputs['pixel_values'].shape[0]} patches exceed "
                     f"data.max_patches = {shapes.max_patches}")
  if inputs["input_ids"].shape[1] > shapes.max_prompt_length:
    raise ValueError(f"record id {rid!r}: prompt of {inputs['input_ids'].shape[1]} tokens exceeds "
                     f"data.max_prompt_length = {shapes.max_prompt_length}")
  w, h = (int(v) for v in example["image_size_refine"])
  target = sft_targets.target_text(record["task"], record["reasoning_process"],
                                   record["sft_answer"] or record["answer"], (w, h),
                                   record["image_size"], where=f"record id {rid!r}: ")
  tok = processor.tokenizer
  target_ids = tok(target + "<|im_end|>", add_special_tokens=False)["input_ids"]
  sample = records_lib.reward_sample(record, (w, h), (w, h), step_percent)
  return {"input_ids": inputs["input_ids"][0], "pixel_values": inputs["pixel_values"],
          "image_grid_thw": inputs["image_grid_thw"], "target_ids": np.asarray(target_ids),
          "sample": sample, "id": rid}


def _patch_dim(items: Sequence[Mapping[str, Any]]) -> int:
  """The width of the items' `pixel_values` rows (all equal, else ValueError naming the ids)."""
  dims = {int(np.shape(it["pixel_values"])[-1]) for it in items}
  if len(dims) != 1:
    raise ValueError(f"records {[it['id'] for it in items]}: pixel_values rows of different "
                     f"widths {sorted(dims)} in one batch (processors with different patch "
                     "sizes?)")
  return dims.pop()


def collate(items: Sequence[Mapping[str, Any]], shapes: BatchShapes, pad_id: int) -> HostBatch:
  """Pads encoded examples to the fixed shapes of `shapes`. A patch is as wide as the
  processor made it (channels x temporal patch x patch size^2: the model's `patch_dim`)."""
  b = len(items)
  patch_dim = _patch_dim(items)
  length = shapes.bucket(max(len(it["input_ids"]) for it in items))
  out = {
      "input_ids": np.full((b, length), pad_id, np.int32),
      "attention_mask": np.zeros((b, length), np.int32),
      "pixel_values": np.zeros((b, shapes.max_patches, patch_dim), np.float32),
      "image_grid_thw": np.zeros((b, shapes.max_images, 3), np.int32),
      "num_images": np.zeros((b,), np.int32), "num_patches": np.zeros((b,), np.int32),
      "target_ids": np.full((b, shapes.max_target_length), pad_id, np.int32),
      "target_mask": np.zeros((b, shapes.max_target_length), np.int32),
  }
  for i, it in enumerate(items):
    ids = it["input_ids"]
    out["input_ids"][i, length - len(ids):] = ids
    out["attention_mask"][i, length - len(ids):] = 1
    n_patch, n_img = it["pixel_values"].shape[0], it["image_grid_thw"].shape[0]
    out["pixel_values"][i, :n_patch] = it["pixel_values"]
    out["image_grid_thw"][i, :n_img] = it["image_grid_thw"]
    out["num_images"][i], out["num_patches"][i] = n_img, n_patch
    tgt = it["target_ids"][:shapes.max_target_length]
    out["target_ids"][i, :len(tgt)] = tgt
    out["target_mask"][i, :len(tgt)] = 1
  return HostBatch(out, [it["sample"] for it in items], [it["id"] for it in items])


def _slice_rows(batch_size: int, index: int, count: int) -> tuple[int, int]:
  """Rows lo..hi-1 of a global batch that process `index` of `count` prepares."""
  if batch_size % count:
    raise ValueError(f"data.batch_size = {batch_size} is not divisible by the {count} processes "
                     "(each prepares an equal slice of the global batch)")
  per = batch_size // count
  return index * per, (index + 1) * per


def read_parts(config_parts: int, process_count: int) -> int:
  """S, the parts the split is read as: `data.read_parts`, or the process count when it is 0."""
  return int(config_parts) or int(process_count)


def _owned_parts(parts: int, batch_size: int, index: int, count: int) -> range:
  """The parts process `index` of `count` reads: its rows of each batch, and only those."""
  if parts < 1 or batch_size % parts:
    raise ValueError(f"data.read_parts = {parts}: data.batch_size = {batch_size} must be a "
                     "multiple of it (each global batch takes batch_size / read_parts rows from "
                     "each part)")
  if parts % count:
    raise ValueError(f"data.read_parts = {parts} is not a multiple of the {count} processes "
                     "(each process reads whole parts): set data.read_parts to a multiple of "
                     "the process count, the same for every run that must see the same batches")
  per = parts // count
  return range(index * per, (index + 1) * per)


def to_global(arrays: Mapping[str, np.ndarray], mesh, batch_axes: Sequence[str] | None = None):
  """Host-local arrays (this host's rows) -> global jax.Arrays sharded over the batch axes."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  if batch_axes is None:
    batch_axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names)
  sharding = NamedSharding(mesh, PartitionSpec(tuple(batch_axes)))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in arrays.items()}


def _synthetic_builder(config, data_dir: str):
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  return tfds_stgr.synthetic_from_config(config, data_dir)


def _tfds_builder(config, data_dir: str):
  del config
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  return tfds_stgr.load(data_dir)


# Data sources (`config.data.source`): name -> fn(config, data_dir) -> a reading TFDS builder.
SOURCES = {
    "synthetic": _synthetic_builder,  # the world of `config.synthetic`, written first if absent
    "tfds": _tfds_builder,  # a `vcoach prepare` output
}


def dataset_builder(config, data_dir: str):
  """The TFDS builder of the config's dataset in `data_dir` (`SOURCES[config.data.source]`)."""
  source = config.data.source
  if source not in SOURCES:
    raise ValueError(f"config key 'data.source' must be one of {tuple(SOURCES)}, got {source!r}")
  return SOURCES[source](config, data_dir)


class Pipeline:
  """An endless, seeded, checkpointable stream of host batches from a TFDS split."""

  def __init__(self, tfds_builder, processor: chat.Processor, texts: chat.PromptTexts,
               shapes: BatchShapes, *, split: str = "train", seed: int = 0,
               shuffle_buffer: int = 256, reshuffle_each_epoch: bool = True, parts: int = 1,
               row_slice: tuple[int, int] | None = None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.processor, self.texts, self.shapes = processor, texts, shapes
    index, count = row_slice or (0, 1)
    self.parts = int(parts)
    self.owned = _owned_parts(self.parts, shapes.batch_size, index, count)
    self.row_slice = None if row_slice is None else _slice_rows(shapes.batch_size, index, count)
    self.examples_read = 0  # examples this process read (its rows of every batch)
    splits = tfds.even_splits(split, n=self.parts)
    self._iterators = {}
    for j in self.owned:
      # No auto-cache: a cache would be part of the iterator state (and of its checkpoint).
      ds = tfds_builder.as_dataset(split=splits[j], shuffle_files=False,
                                   read_config=tfds.ReadConfig(try_autocache=False))
      if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed + j,
                        reshuffle_each_iteration=reshuffle_each_epoch)
      self._iterators[j] = iter(ds.repeat().prefetch(2))
    self._checkpoints = {j: tf.train.Checkpoint(iterator=it)
                         for j, it in self._iterators.items()}
    pad = processor.tokenizer.pad_token_id
    self.pad_id = int(pad if pad is not None else 0)  # prompt padding of every host batch
    self.step_percent = 1.0  # set by the trainer: (step + 1) / total_steps

  @classmethod
  def from_config(cls, config, tokenizer, data_dir: str | None = None, *,
                  row_slice: tuple[int, int] | None = None):
    """A pipeline over `data_dir` (default `config.data.tfds_dir`) as the config says.

    With `data.source = "synthetic"` the world of `config.synthetic` is written there first if
    the folder has no dataset yet. Without `row_slice` this process reads every part (the
    whole global batch). `row_slice = (index, count)`: process `index` of `count` reads only
    its parts, i.e. its equal slice of each global batch's rows (`HostBatch.rows`); the
    trainers assemble the global batch from the slices (`rl.hosts`). `data.read_parts = 0`
    reads as many parts as there are processes (`count`).
    """
    d = config.data
    data_dir = data_dir or d.tfds_dir
    if not data_dir:
      raise ValueError("no dataset folder: set data.tfds_dir (or pass data_dir)")
    builder = dataset_builder(config, data_dir)
    texts = chat.PromptTexts.from_config(config)
    parts = read_parts(d.read_parts, row_slice[1] if row_slice else 1)
    return cls(builder, chat.Processor(tokenizer), texts, BatchShapes.from_config(d),
               split=d.split, seed=d.seed, shuffle_buffer=d.shuffle_buffer,
               reshuffle_each_epoch=d.reshuffle_each_epoch, parts=parts, row_slice=row_slice)

  def next_example(self, part: int | None = None) -> dict[str, np.ndarray]:
    """The next example of `part` (default: the first this process reads)."""
    element = next(self._iterators[self.owned[0] if part is None else part])
    self.examples_read += 1
    return {k: v.numpy() for k, v in element.items()}

  def next_host_batch(self, encode: Callable[[Mapping[str, Any]], dict] | None = None
                      ) -> HostBatch:
    """The next batch (this process's rows of it); `encode` (example -> item) replaces
    `encode_example` (the cold-start SFT's prompted examples)."""
    per = self.shapes.batch_size // self.parts
    examples = [self.next_example(j) for j in self.owned for _ in range(per)]
    items = [encode(e) if encode else
             encode_example(e, self.processor, self.texts, self.shapes, self.step_percent)
             for e in examples]
    batch = collate(items, self.shapes, self.pad_id)
    batch.examples, batch.rows = examples, self.row_slice
    batch.size = self.shapes.batch_size
    return batch

  def __iter__(self):
    return self

  def __next__(self) -> HostBatch:
    return self.next_host_batch()

  def _part_prefix(self, path: str, part: int) -> str:
    """One read part's checkpoint prefix (one part: `path` itself, the layout before parts)."""
    return path if self.parts == 1 else f"{path}-part{part}-of-{self.parts}"

  def save(self, path: str) -> str:
    """Writes the position of the parts this process reads (a TF checkpoint prefix per part;
    every process calls it with the same `path`); returns `path`. Without a row slice in a
    multi-process run every process reads every part: process 0 writes them."""
    import jax  # pylint: disable=g-import-not-at-top
    if self.row_slice is None and jax.process_index() != 0:
      return path
    for j, ckpt in self._checkpoints.items():
      ckpt.write(self._part_prefix(path, j))
    return path

  def restore(self, path: str) -> None:
    """Restores a position written by `save` (same dataset, same config and `read_parts`)."""
    for j, ckpt in self._checkpoints.items():
      ckpt.read(self._part_prefix(path, j)).assert_consumed()
