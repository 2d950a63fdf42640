"""tf.data from a prepared TFDS dataset -> fixed-shape host batches -> global jax.Arrays.

  pipe = Pipeline.from_config(config, tokenizer, data_dir)
  batch = pipe.next_host_batch()   # HostBatch: numpy arrays of fixed shapes + reward samples
  arrays = to_global(batch.arrays, mesh)
  pipe.save(path); ...; pipe.restore(path)   # continues with exactly the same next batch

Reading, per-host sharding, shuffling and repetition are tf.data (TFDS `even_splits` gives each
host its own slice of the split, so hosts never read each other's examples). Prompt construction,
the processor and tokenisation are host python per example (`chat`), then examples are padded to
fixed shapes so the device code compiles a handful of times only:

  input_ids, attention_mask  [B, P]   P = smallest `prompt_buckets` entry >= the longest prompt
                                      of the batch (left padding, as the sampler expects)
  pixel_values               [B, max_patches, 3*2*14*14]   zero rows after each prompt's patches
  image_grid_thw             [B, max_images, 3]            zero rows after each prompt's images
  num_images, num_patches    [B]
  target_ids, target_mask    [B, max_target_length]        the SFT target + <|im_end|>, right-padded

The iterator's position is the tf.data iterator state (`tf.train.Checkpoint`), which includes
the shuffle buffer, so a restore continues with the same next batch.
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
  batch_size: int = 8  # per host
  prompt_buckets: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192, 16384)
  max_prompt_length: int = 16384
  max_target_length: int = 256
  max_images: int = 20
  max_patches: int = 2048

  @classmethod
  def from_config(cls, data: Mapping[str, Any], process_count: int = 1) -> "BatchShapes":
    if data["batch_size"] % process_count:
      raise ValueError(f"data.batch_size = {data['batch_size']} is not divisible by the "
                       f"{process_count} hosts")
    return cls(batch_size=data["batch_size"] // process_count,
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
  # With `Pipeline(row_slice=...)`: `arrays`, `samples` and `ids` hold global rows lo..hi-1 only
  # (this process's), `examples` every row of the global batch; None: all rows.
  rows: tuple[int, int] | None = None


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
               shuffle_buffer: int = 256, process_index: int = 0, process_count: int = 1,
               reshuffle_each_epoch: bool = True, row_slice: tuple[int, int] | None = None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.processor, self.texts, self.shapes = processor, texts, shapes
    self.row_slice = None if row_slice is None else _slice_rows(shapes.batch_size, *row_slice)
    host_split = tfds.even_splits(split, n=process_count)[process_index]
    # No auto-cache: a cache would be part of the iterator state (and of its checkpoint).
    ds = tfds_builder.as_dataset(split=host_split, shuffle_files=False,
                                 read_config=tfds.ReadConfig(try_autocache=False))
    if shuffle_buffer > 1:
      ds = ds.shuffle(shuffle_buffer, seed=seed + process_index,
                      reshuffle_each_iteration=reshuffle_each_epoch)
    self._dataset = ds.repeat().prefetch(2)
    self._iterator = iter(self._dataset)
    self._checkpoint = tf.train.Checkpoint(iterator=self._iterator)
    pad = processor.tokenizer.pad_token_id
    self.pad_id = int(pad if pad is not None else 0)  # prompt padding of every host batch
    self.step_percent = 1.0  # set by the trainer: (step + 1) / total_steps

  @classmethod
  def from_config(cls, config, tokenizer, data_dir: str | None = None, *,
                  process_index: int | None = None, process_count: int | None = None,
                  row_slice: tuple[int, int] | None = None):
    """A pipeline over `data_dir` (default `config.data.tfds_dir`) as the config says.

    With `data.source = "synthetic"` the world of `config.synthetic` is written there first if
    the folder has no dataset yet. By default every process reads the whole global batch (the
    trainers hand the jitted steps host arrays, which must then be the same on every process);
    `process_index` / `process_count` give each host its own slice of the split instead, for
    callers that assemble global arrays with `to_global`. `row_slice = (index, count)`: every
    process reads the same global stream (so a run equals one process's), and process `index`
    of `count` encodes only its equal slice of each global batch's rows (`HostBatch.rows`); the
    RL step assembles the global batch from the slices (`rl.hosts`).
    """
    if process_index is None or process_count is None:
      process_index, process_count = 0, 1
    d = config.data
    data_dir = data_dir or d.tfds_dir
    if not data_dir:
      raise ValueError("no dataset folder: set data.tfds_dir (or pass data_dir)")
    builder = dataset_builder(config, data_dir)
    texts = chat.PromptTexts.from_config(config)
    return cls(builder, chat.Processor(tokenizer), texts,
               BatchShapes.from_config(d, process_count), split=d.split, seed=d.seed,
               shuffle_buffer=d.shuffle_buffer, process_index=process_index,
               process_count=process_count, reshuffle_each_epoch=d.reshuffle_each_epoch,
               row_slice=row_slice)

  def next_example(self) -> dict[str, np.ndarray]:
    element = next(self._iterator)
    return {k: v.numpy() for k, v in element.items()}

  def next_host_batch(self, encode: Callable[[Mapping[str, Any]], dict] | None = None
                      ) -> HostBatch:
    """The next batch; `encode` (example -> item) replaces `encode_example` (the cold-start
    SFT's prompted examples)."""
    examples = [self.next_example() for _ in range(self.shapes.batch_size)]
    lo, hi = self.row_slice or (0, len(examples))
    items = [encode(e) if encode else
             encode_example(e, self.processor, self.texts, self.shapes, self.step_percent)
             for e in examples[lo:hi]]
    batch = collate(items, self.shapes, self.pad_id)
    batch.examples, batch.rows = examples, self.row_slice
    return batch

  def __iter__(self):
    return self

  def __next__(self) -> HostBatch:
    return self.next_host_batch()

  def save(self, path: str) -> str:
    """Writes the iterator position (a TF checkpoint prefix); returns the prefix written."""
    return self._checkpoint.write(path)

  def restore(self, path: str) -> None:
    """Restores a position written by `save` (same dataset, same config)."""
    self._checkpoint.read(path).assert_consumed()
