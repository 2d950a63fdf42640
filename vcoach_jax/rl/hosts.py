"""The RL step's host work split over processes: each reads, prepares and scores its own rows.

With `Pipeline(row_slice=(process, processes))` each process reads only its own rows of each
global batch (its read parts, `data.pipeline`) and encodes (processor, tokenisation, patches)
only those. The step then needs, on every process, the same global arrays and the same
decisions:

  global_inputs   the small per-row arrays (ids, masks, image grids: a few KB) are exchanged, so
                  every process builds the same index tables; the pixels (nearly all the bytes)
                  are placed from each process's own rows (`Sampler.place_local_pixels`), never
                  sent to another host
  score           each process decodes and scores only its own rollouts; the per-row rewards
                  are exchanged, so advantages, hard prompts and positives are the same everywhere
  for_rows        work on some rows' records (the hard prompts' visual prompts and encoding) is
                  done by the process that read them; the results are exchanged (hard prompts
                  are few)

Without a row slice (`HostBatch.rows` None: one process, or every process holding the whole
batch) each function is the single-process path.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable, Sequence

import jax
import numpy as np

from vcoach_jax.data import pipeline as pipeline_lib
from vcoach_jax.model import batching

SMALL_FIELDS = ("input_ids", "attention_mask", "image_grid_thw", "num_images", "num_patches")


def gather_rows(tree: Any) -> Any:
  """Each process's host arrays (rows first) -> every process's rows in process order, on every
  process (`multihost_utils.process_allgather`); one process: `tree` itself."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def gather_objects(objs: Sequence[Any]) -> list[Any]:
  """Each process's list of python objects (pickled; the processes are one program) -> every
  process's objects in process order, on every process; one process: `objs` itself."""
  if jax.process_count() == 1:
    return list(objs)
  data = np.frombuffer(pickle.dumps(list(objs)), np.uint8)
  sizes = gather_rows(np.asarray([data.size], np.int64))
  buf = np.zeros((1, int(sizes.max())), np.uint8)
  buf[0, :data.size] = data
  got = gather_rows(buf)
  return [o for p, n in enumerate(sizes) for o in pickle.loads(got[p, :int(n)].tobytes())]


def global_size(batch: pipeline_lib.HostBatch) -> int:
  """Rows of the global batch."""
  return len(batch.ids) if batch.rows is None else int(batch.size)


def global_ids(batch: pipeline_lib.HostBatch) -> list[str]:
  return list(batch.ids) if batch.rows is None else gather_objects(batch.ids)


def global_tasks(batch: pipeline_lib.HostBatch) -> list[str]:
  tasks = [s["task"] for s in batch.samples]
  return tasks if batch.rows is None else gather_objects(tasks)


def for_rows(batch: pipeline_lib.HostBatch, rows: Sequence[int],
             fn: Callable[[dict[str, Any], int], Any]) -> list[Any]:
  """`[fn(example of row i, i) for i in rows]` (global rows, ascending), each computed by the
  process that read row i and then exchanged, so every process gets the whole list."""
  lo, hi = batch.rows or (0, global_size(batch))
  own = [fn(batch.examples[i - lo], i) for i in rows if lo <= i < hi]
  return own if batch.rows is None else gather_objects(own)


def _left_pad(x: np.ndarray, length: int, value: int) -> np.ndarray:
  out = np.full((x.shape[0], length), value, x.dtype)
  out[:, length - x.shape[1]:] = x
  return out


def global_arrays(batch: pipeline_lib.HostBatch, pad_id: int,
                  fields: Sequence[str] = SMALL_FIELDS) -> dict[str, np.ndarray]:
  """The global batch's small per-row `fields` (host arrays, the same on every process), and,
  when any row has patches, a stand-in `pixel_values` of the global batch's shape and width 1
  (the pixels are placed by `own_pixels`). Each process's prompts are padded to its own length
  bucket: the longest of them is the global batch's (what one process would have chosen)."""
  local = {k: np.asarray(batch.arrays[k]) for k in fields}
  length = int(gather_rows(np.asarray([local["input_ids"].shape[1]])).max())
  local["input_ids"] = _left_pad(local["input_ids"], length, pad_id)
  local["attention_mask"] = _left_pad(local["attention_mask"], length, 0)
  small = gather_rows(local)
  if small["num_patches"].any():
    _, max_patches, _ = np.shape(batch.arrays["pixel_values"])
    small["pixel_values"] = np.broadcast_to(np.zeros((1, 1, 1), np.float32),
                                            (global_size(batch), max_patches, 1))
  return small


def own_pixels(batch: pipeline_lib.HostBatch, placer) -> jax.Array:
  """The global batch's patches `[B * max_patches, D]` on the devices, split like the rows,
  each process placing its own rows' (`placer.place_local_pixels`: a `Sampler` or a
  `placement.Placer`)."""
  _, max_patches, width = np.shape(batch.arrays["pixel_values"])
  pixels = np.asarray(batch.arrays["pixel_values"], np.float32).reshape(-1, width)
  return placer.place_local_pixels(pixels, global_size(batch) * max_patches)


def global_inputs(batch: pipeline_lib.HostBatch, model_config, sampler, pad_id: int):
  """`ModelInputs` of the global batch with its pixels placed (once) on the devices; the rest
  on the host, the same on every process (`global_arrays`)."""
  if batch.rows is None:
    return sampler.place_pixels(batching.batch_inputs(model_config, batch.arrays))
  inputs = batching.batch_inputs(model_config, global_arrays(batch, pad_id))
  return inputs if inputs.pixels is None else inputs._replace(pixels=own_pixels(batch, sampler))


def score(texts: Sequence[str], batch: pipeline_lib.HostBatch, g: int, score_fn
          ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """(per-reward, total) of the global batch's G completions per prompt (`texts`, rows b*G + j;
  only this process's rows need be decoded): this process scores its own rows
  (`score_fn(texts, samples)`), then the rows are exchanged."""
  if batch.rows is None:
    return score_fn(texts, batch.samples)
  lo, hi = batch.rows
  return gather_rows(score_fn(texts[lo * g:hi * g], batch.samples))


def text_rows(batch: pipeline_lib.HostBatch) -> Sequence[int] | None:
  """The prompt rows whose completions this process decodes (None: all)."""
  return None if batch.rows is None else range(*batch.rows)
