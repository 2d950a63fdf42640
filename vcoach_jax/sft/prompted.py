"""Prompted SFT examples (`config.sft.prompted`): a share of the examples with key items is shown
as coaching shows a hard sample — a visual prompt of one of the selector's types drawn on its key
frames and that type's hint after the question — with the same target, so the SFT policy knows
what a drawn prompt means when RL first shows it one (docs/data.md).

  plan = Plan.from_config(config)          # once per run; None when sft.prompted == 0
  batch = pipe.next_host_batch(encoder(plan, pipe, step))
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, Mapping, Sequence

from vcoach_jax.data import pipeline as pipeline_lib
from vcoach_jax.prompting import hints


def prompted_type(record_id: str, step: int, share: float, types: Sequence[str]) -> str | None:
  """The prompt type an SFT example is shown with at `step` (None: raw): a share `share` of the
  (id, step) pairs, picked by a hash (the same on every run and after a resume), each with one
  of `types`."""
  if share <= 0 or not types:
    return None
  h = zlib.crc32(f"{record_id}:{step}".encode())
  if (h % 10_000) >= share * 10_000:
    return None
  return types[(h // 10_000) % len(types)]


@dataclasses.dataclass(frozen=True)
class Plan:
  """What an SFT run prompts (from its config, built once): the share of examples, the prompt
  types (the selector's, less `raw`) and how prompts are drawn."""
  share: float
  types: tuple[str, ...]
  options: hints.PromptOptions

  @classmethod
  def from_config(cls, config) -> "Plan | None":
    """The run's plan, or None when `sft.prompted` is 0 (the pipeline's own encoding)."""
    share = float(config.sft.prompted)
    if share <= 0:
      return None
    return cls(share, tuple(t for t in config.selector.types if t != "raw"),
               hints.PromptOptions.from_config(config.prompting, config.video.timestamps))


def encoder(plan: Plan | None, pipe: pipeline_lib.Pipeline,
            step: int) -> Callable[[Mapping[str, Any]], dict] | None:
  """`example -> encoded item` of SFT step `step` (some examples with key items prompted), or
  None without a plan (the pipeline's own encoding)."""
  if plan is None:
    return None

  def encode(example):
    record = pipeline_lib.record_of(example)
    kind = (prompted_type(record["id"], step, plan.share, plan.types) if record["key_items"]
            else None)
    if kind is not None:
      example = hints.prompted_example(example, kind, plan.options)
    return pipeline_lib.encode_example(example, pipe.processor, pipe.texts, pipe.shapes,
                                       pipe.step_percent, kind)
  return encode
