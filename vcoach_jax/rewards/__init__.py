"""The seven VisionCoach rewards, exact to the authors' released code (docs/rewards.md).

  rewards = vcoach_jax.rewards.compute(completions, samples, options)
  total = vcoach_jax.rewards.total(rewards, [s["task"] for s in samples])

Text is parsed on the host (`parsing`, `targets`), packed into fixed-shape arrays (`packing`;
memory linear in the claims present, however long a completion is) and scored by jitted,
batch-vectorised kernels (`iou`, `grounding`, `accuracy`, `kernels`); ans_acc (ROUGE / option
letters) and format compare text and stay on the host.

Three deliberate differences from the released code: where it raises, the reward is 0 and the
event is counted (`RewardStats.raised`); options and task strings are validated (ValueError);
every sample uses its own task and step_percent.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from vcoach_jax.rewards import accuracy
from vcoach_jax.rewards import kernels
from vcoach_jax.rewards import packing
from vcoach_jax.rewards import parsing
from vcoach_jax.rewards import targets as targets_lib
from vcoach_jax.rewards.format import format_reward
from vcoach_jax.rewards.packing import Shapes
from vcoach_jax.rewards.targets import TASKS, validate_options

REWARD_NAMES = ("ans_acc", "ans_tiou", "ans_viou", "thk_temporal_point",
                "thk_temporal_segment", "thk_spatial", "format")

# Rewards that score each task (docs/rewards.md §8); the others are 0 for it.
TASK_REWARDS: dict[str, tuple[str, ...]] = {
    targets_lib.TASK_ST: ("ans_acc", "thk_temporal_point", "thk_spatial", "format"),
    targets_lib.TASK_TG_MCQ: ("ans_acc", "ans_tiou", "thk_temporal_segment", "format"),
    targets_lib.TASK_TG: ("ans_tiou", "thk_temporal_segment", "format"),
    targets_lib.TASK_VQA: ("ans_viou", "thk_spatial", "format"),
    targets_lib.TASK_MCQ: ("ans_acc", "format"),
    targets_lib.TASK_FREE: ("ans_acc", "format"),
}
MAX_TOTAL = {task: float(len(names)) for task, names in TASK_REWARDS.items()}


@dataclasses.dataclass
class RewardStats:
  """What happened while scoring: events the reference would have raised, shape growth."""
  raised: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  grown: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  completions: int = 0

  def merge(self, other: "RewardStats") -> None:
    self.raised.update(other.raised)
    self.grown.update(other.grown)
    self.completions += other.completions


def _text(completion: Any) -> str:
  """A completion as a string; the reference's `[{"content": ...}]` form is accepted too."""
  if isinstance(completion, str):
    return completion
  try:
    return str(completion[0]["content"])
  except Exception:  # pylint: disable=broad-except
    return "" if completion is None else str(completion)


def _prepare_targets(samples: Sequence[Mapping[str, Any]]) -> list[targets_lib.SampleTargets]:
  cache: dict[int, targets_lib.SampleTargets] = {}
  out = []
  for i, sample in enumerate(samples):
    key = id(sample)
    if key not in cache:
      cache[key] = targets_lib.prepare(sample, i)
    out.append(cache[key])
  return out


_DEVICE_NAMES = ("ans_tiou", "ans_viou", "thk_temporal_point", "thk_temporal_segment",
                 "thk_spatial")


def _score_on_device(parsed: Sequence[parsing.ParsedCompletion],
                     targets: Sequence[targets_lib.SampleTargets], options: dict[str, Any],
                     shapes: Shapes, stats: RewardStats
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """The five device rewards [n] and where the reference raises [n], one packed group of rows
  at a time (`packing.plan`: memory linear in the claims present)."""
  n = len(parsed)
  device = {name: np.zeros(n, np.float64) for name in _DEVICE_NAMES}
  raised = {name: np.zeros(n, bool) for name in
            ("thk_temporal_point", "thk_temporal_segment", "thk_spatial")}
  for rows, sizes in packing.plan(parsed, targets, shapes):
    batch, flags, grown = packing.pack([parsed[i] for i in rows], [targets[i] for i in rows],
                                       options, shapes, sizes)
    stats.grown.update(grown)
    with jax.enable_x64(True):
      scores = kernels.score_batch(
          batch, correct_tempgate=options["correct_tempgate"],
          iou_avg=options["spatial_iou_mode"] == "avg",
          norm_matched=options["spatial_norm_mode"] == "matched")
      scores = {k: np.asarray(v)[:len(rows)] for k, v in scores.items()}
    for name in _DEVICE_NAMES:
      device[name][rows] = scores[name]
    raised["thk_temporal_point"][rows] = flags.point_raised
    raised["thk_temporal_segment"][rows] = flags.segment_raised
    raised["thk_spatial"][rows] = flags.spatial_raised | scores["spatial_raised"]
  return device, raised


def compute_with_stats(completions: Sequence[Any], samples: Sequence[Mapping[str, Any]],
                       options: Mapping[str, Any], shapes: Shapes | None = None
                       ) -> tuple[dict[str, np.ndarray], RewardStats]:
  """`compute`, also returning the `RewardStats` of the batch."""
  options = validate_options(options)
  if len(completions) != len(samples):
    raise ValueError(f"got {len(completions)} completions but {len(samples)} samples")
  n = len(completions)
  stats = RewardStats(completions=n)
  if n == 0:
    return {name: np.zeros(0, np.float64) for name in REWARD_NAMES}, stats
  targets = _prepare_targets(samples)
  texts = [_text(c) for c in completions]
  parsed = [parsing.parse_completion(t) for t in texts]
  device, raised = _score_on_device(parsed, targets, options, shapes or Shapes(), stats)
  out = {
      "ans_acc": np.array([accuracy.answer_accuracy(p.answer, t)
                           for p, t in zip(parsed, targets)], np.float64),
      **device,
      "format": np.array([format_reward(text, t.task) for text, t in zip(texts, targets)],
                         np.float64),
  }
  for name, flag in raised.items():
    out[name] = np.where(flag, 0.0, out[name])
    if flag.any():
      stats.raised[name] += int(flag.sum())
  return out, stats


def compute(completions: Sequence[Any], samples: Sequence[Mapping[str, Any]],
            options: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The seven rewards of each completion.

  Args:
    completions: N completion strings (model output; any string is accepted).
    samples: N dicts with `task, answer, key_frames, key_items, image_size, image_size_refine,
      step_percent` (the sample each completion answers).
    options: `spatial_iou_mode` (max|avg), `identity_match_mode` (none|soft|strict),
      `spatial_norm_mode` (all|matched), `correct_tempgate` (bool).

  Returns:
    {name: float64 [N]} for every name in REWARD_NAMES.

  Raises:
    ValueError: an option outside its allowed values, or a sample with an unknown task.
  """
  return compute_with_stats(completions, samples, options)[0]


def total(per_reward: Mapping[str, Any], tasks: Sequence[str]) -> np.ndarray:
  """The reward the trainer optimises: the plain sum of the seven rewards, float32 [N].

  Args:
    per_reward: {name: [N]} as returned by `compute` (every name of REWARD_NAMES).
    tasks: N task strings, validated (the rewards a task does not score are 0 for it).
  """
  missing = [name for name in REWARD_NAMES if name not in per_reward]
  if missing:
    raise ValueError(f"per_reward lacks {missing}; expected every name of {REWARD_NAMES}")
  columns = np.stack([np.asarray(per_reward[name], np.float64) for name in REWARD_NAMES])
  if columns.ndim != 2 or columns.shape[1] != len(tasks):
    raise ValueError(f"rewards have shape {columns.shape[1:]} but {len(tasks)} tasks were given")
  for i, task in enumerate(tasks):
    targets_lib.validate_task(task, i)
  return columns.sum(axis=0).astype(np.float32)


__all__ = ["REWARD_NAMES", "TASKS", "TASK_REWARDS", "MAX_TOTAL", "RewardStats", "Shapes",
           "compute", "compute_with_stats", "total", "validate_options"]
