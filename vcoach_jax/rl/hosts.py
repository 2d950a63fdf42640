"""The RL step's host work split over processes: each prepares and scores its own rows.

With `Pipeline(row_slice=(process, processes))` every process reads the same global stream but
encodes (processor, tokenisation, patches) only its equal slice of each global batch's rows.
The step then needs, on every process, the same global arrays and the same decisions:

  global_inputs   the small per-row arrays (ids, masks, image grids: a few KB) are exchanged, so
                  every process builds the same index tables; the pixels (nearly all the bytes)
                  are placed from each process's own rows (`Sampler.place_local_pixels`), never
                  sent to another host
  score           each process decodes and scores only its own rollouts; the per-row rewards
                  are exchanged, so advantages, hard prompts and positives are the same everywhere

Without a row slice (`HostBatch.rows` None: one process, or every process holding the whole
batch) each function is the single-process path. The hard prompts' prompted examples are built
from `HostBatch.examples` (every row's record, on every process): hard prompts are few.
"""

from __future__ import annotations

from typing import Any, Sequence

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


def global_size(batch: pipeline_lib.HostBatch) -> int:
  """Rows of the global batch."""
  return len(batch.ids) if batch.rows is None else len(batch.examples)


def global_ids(batch: pipeline_lib.HostBatch) -> list[str]:
  if batch.rows is None:
    return list(batch.ids)
  return [pipeline_lib.record_of(e)["id"] for e in batch.examples]


def global_tasks(batch: pipeline_lib.HostBatch) -> list[str]:
  if batch.rows is None:
    return [s["task"] for s in batch.samples]
  return [pipeline_lib.record_of(e)["task"] for e in batch.examples]


def _left_pad(x: np.ndarray, length: int, value: int) -> np.ndarray:
  out = np.full((x.shape[0], length), value, x.dtype)
  out[:, length - x.shape[1]:] = x
  return out


def global_inputs(batch: pipeline_lib.HostBatch, model_config, sampler, pad_id: int):
  """`ModelInputs` of the global batch with its pixels placed (once) on the devices; the rest
  on the host, the same on every process. Each process's prompts are padded to its own length
  bucket: the longest of them is the global batch's (what one process would have chosen)."""
  if batch.rows is None:
    return sampler.place_pixels(batching.batch_inputs(model_config, batch.arrays))
  local = {k: np.asarray(batch.arrays[k]) for k in SMALL_FIELDS}
  length = int(gather_rows(np.asarray([local["input_ids"].shape[1]])).max())
  local["input_ids"] = _left_pad(local["input_ids"], length, pad_id)
  local["attention_mask"] = _left_pad(local["attention_mask"], length, 0)
  small = gather_rows(local)
  if not small["num_patches"].any():
    return batching.batch_inputs(model_config, small)
  b = small["input_ids"].shape[0]
  _, max_patches, width = np.shape(batch.arrays["pixel_values"])
  stand_in = np.broadcast_to(np.zeros((1, 1, 1), np.float32), (b, max_patches, 1))
  inputs = batching.batch_inputs(model_config, dict(small, pixel_values=stand_in))
  pixels = np.asarray(batch.arrays["pixel_values"], np.float32).reshape(-1, width)
  return inputs._replace(pixels=sampler.place_local_pixels(pixels, b * max_patches))


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
