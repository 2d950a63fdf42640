"""Answer rewards: ans_acc (host: ROUGE / option letter), ans_tiou and ans_viou (kernels).

ans_acc compares text, so it stays on the host: ROUGE-1/2/L F-measure (stemmed) from the
`rouge-score` package for free-form answers, and the option-letter test for multiple choice.
ans_tiou and ans_viou are per-example jnp functions over the parsed arrays.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from rouge_score import rouge_scorer

from vcoach_jax.rewards import iou
from vcoach_jax.rewards import targets as targets_lib
from vcoach_jax.rewards.parsing import BoxKind, GtKind

MCQ_MARKER = "Correct Option:"  # TG-MCQ answers put the letter after this (case-sensitive)


@functools.lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
  return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge_f(target: str, prediction: str) -> float:
  """Mean of ROUGE-1/2/L F-measures, clipped to [0, 1] (one-token exact match: 2/3)."""
  scores = _scorer().score(target, prediction)
  mean = (scores["rouge1"].fmeasure + scores["rouge2"].fmeasure + scores["rougeL"].fmeasure) / 3
  return max(0.0, min(1.0, mean))


def option_matches(choice: str, letter: str) -> bool:
  """`choice` is the GT letter L written as `L`, `L.`, `(L)` or `[L]` (after stripping)."""
  letter = letter.strip()
  return choice.strip() in (letter, letter + ".", "(" + letter + ")", "[" + letter + "]")


def answer_accuracy(answer: str, target: targets_lib.SampleTargets) -> float:
  """ans_acc of one completion whose extracted answer is `answer`."""
  task = target.task
  if task in (targets_lib.TASK_VQA, targets_lib.TASK_TG):
    return 0.0
  if task == targets_lib.TASK_TG_MCQ:
    pieces = answer.split(MCQ_MARKER)
    if target.mcq_letter is None or len(pieces) < 2:
      return 0.0
    return 1.0 if option_matches(pieces[1], target.mcq_letter) else 0.0
  if task == targets_lib.TASK_MCQ:
    return 1.0 if option_matches(answer, target.answer_text) else 0.0
  return rouge_f(target.answer_text, answer)  # free-form tasks


def answer_tiou(active: jax.Array, pred_segment: jax.Array, gt_segment: jax.Array) -> jax.Array:
  """ans_tiou: temporal IoU of the answer's `<t>a</t>s to <t>b</t>s` with the GT segment.

  Args:
    active: [] the task scores it, the answer has a (non-inverted) segment and the GT is a pair.
    pred_segment: [2]; gt_segment: [2].
  """
  return jnp.where(active, iou.segment_iou(pred_segment, gt_segment), 0)


def answer_viou(active: jax.Array, gt_kind: jax.Array, gt_box: jax.Array, box_kind: jax.Array,
                box: jax.Array) -> jax.Array:
  """ans_viou: IoU of the answer's first box with the (rescaled) GT box; any error gives 0.

  Args:
    active: [] visual QA with a GT box and a predicted box that parsed as JSON.
    gt_kind: [] GtKind; gt_box: [4]; box_kind: [] BoxKind; box: [4].
  """
  usable = active & (gt_kind == GtKind.OK) & (box_kind == BoxKind.OK)
  return jnp.where(usable, iou.box_iou(gt_box, box), 0)
