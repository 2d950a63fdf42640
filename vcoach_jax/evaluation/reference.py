"""The released V-STAR evaluation's answer parsers, IoUs and aggregation (the `*_reference`
protocols); the rules are described in docs/evaluation.md. Plain Python on purpose: these are
what the published numbers were computed with, odd corners included.

Answers
  answer part     the text inside the first `<answer>...</answer>` (stripped) when there is a
                  closed one, else the whole completion
  time span       in the answer part every `m:ss` is replaced by its seconds (int(m) * 60 +
                  int(ss), each distinct match replaced everywhere); then the numbers that stand
                  as whole words (`\\b\\d+(\\.\\d+)?\\b`) are read: exactly two give [start, end],
                  any other count gives no span. So `h:mm:ss` reads as `h:mm` then `:ss`, and
                  `2s to 7s` has no number (a digit followed by a letter is not a word end)
  boxes           the first fenced ```json block in the answer part, else the text from its first
                  `[` to its last `]` or from its first `{` to its last `}` (whichever starts
                  first); single quotes become double quotes; JSON; a list of objects is merged
                  into one object; a list of [key, box] pairs becomes {str(key): box}; boxes are
                  used as given (the released code defines a rescaling but never calls it).
                  Unbalanced brackets are closed (or opened) and the text read again; what that
                  yields is kept as is (a list scores 0)

Scores
  tIoU            intersection max(0, min(ends) - max(starts)) over max(ends) - min(starts); 0
                  without a span or for a union <= 0 (no reordering of start and end)
  box IoU         areas from the corners as given; 0 for a union <= 0
  per item        each ground-truth box is matched on the key str(timestamp) (an integral
                  timestamp written as an integer); the best IoU of the boxes at that key, 0
                  when absent; mIoU is their mean and AP@t the share of them with IoU >= t
  judge           the answer part, graded 0-3 (an unreadable grade is -1: counted as 0, never
                  correct); an item whose answer part is empty is skipped (counted only in the
                  overall denominator)

Aggregation (per group: overall, per domain, per length Short < 60 s <= Medium < 180 s <= Long)
  acc and the joint rates are counts over the group's items (overall: all items, skipped ones
  included); R1@t, mean tIoU, mAP@t, mean mIoU are means over the judged items; AM, LGM per
  chain, mAM, mLGM as in `metrics` (LGM's ln(1 - x) guarded at x = 1).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from vcoach_jax.evaluation import judge as judge_lib
from vcoach_jax.evaluation import metrics
from vcoach_jax.evaluation.items import EvalItem, Request

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_CLOCK = re.compile(r"\d+:\d+")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
_FENCED = re.compile(r"```json\s*\n(\[.*?\]|\{.*?\})\s*\n```", re.DOTALL)
_BRACKETED = re.compile(r"(\[[\s\S]*\]|\{[\s\S]*\})")
VSTAR_STEPS = ("answer", "when", "where", "where_2", "when_2")
CHAINS = {"chain1": ("when", "where"), "chain2": ("when_2", "where_2")}
LENGTHS = ((60.0, "Short"), (180.0, "Medium"), (math.inf, "Long"))


# --- parsers -------------------------------------------------------------------------------------


def answer_part(text: str) -> str:
  match = _ANSWER.search(text or "")
  return match.group(1).strip() if match else (text or "")


def parse_span(text: str) -> list[float]:
  """[start, end] seconds, or [] (see the module docstring)."""
  s = answer_part(text)
  for clock in _CLOCK.findall(s):
    minutes, seconds = clock.split(":")
    s = s.replace(clock, f"<t>{int(minutes) * 60 + int(seconds)}</t>s")
  numbers = _NUMBER.findall(s)
  return [float(numbers[0]), float(numbers[1])] if len(numbers) == 2 else []


def _balance(text: str) -> str:
  for left, right in (("[", "]"), ("{", "}")):
    diff = text.count(left) - text.count(right)
    text = text + right * diff if diff > 0 else left * -diff + text
  return text


def parse_boxes(text: str) -> Any:
  """{key: box or [boxes]} from the answer part; None when nothing is readable; a list when only
  the bracket repair made it readable (see the module docstring)."""
  s = answer_part(text)
  match = _FENCED.search(s) or _BRACKETED.search(s)
  if not match:
    return None
  raw = match.group(1).strip().replace("'", '"')
  try:
    value = json.loads(raw)
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
      merged: dict[str, Any] = {}
      for v in value:
        merged.update(v)
      value = merged
    if isinstance(value, list):
      return {str(pair[0]): pair[1] for pair in value}
    return dict(value) if isinstance(value, dict) else None
  except Exception:  # pylint: disable=broad-except
    try:
      value = json.loads(_balance(raw))
    except Exception:  # pylint: disable=broad-except
      return None
    return value if isinstance(value, (list, dict)) else None


# --- scores --------------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float))


def span_iou(gt: Sequence[float], pred: Any) -> float:
  if not pred or not isinstance(pred, (list, tuple)) or len(pred) != 2 or not all(
      map(_is_number, pred)):
    return 0.0
  inter = max(0.0, min(gt[1], pred[1]) - max(gt[0], pred[0]))
  union = max(gt[1], pred[1]) - min(gt[0], pred[0])
  return inter / union if union > 0 else 0.0


def box_iou(gt: Sequence[float], pred: Any) -> float:
  if not isinstance(pred, (list, tuple)) or len(pred) != 4:
    return 0.0
  inter = (max(0, min(gt[2], pred[2]) - max(gt[0], pred[0]))
           * max(0, min(gt[3], pred[3]) - max(gt[1], pred[1])))
  union = ((gt[2] - gt[0]) * (gt[3] - gt[1]) + (pred[2] - pred[0]) * (pred[3] - pred[1])
           - inter)
  return inter / union if union > 0 else 0.0


def best_box_iou(gt: Sequence[float], preds: Any) -> float:
  """The best IoU among the boxes at one key (one box or a list of boxes); 0 on anything else."""
  try:
    if not preds:
      return 0.0
    if _is_number(preds[0]) and len(preds) == 4:
      preds = [preds]
    return max(box_iou(gt, p) for p in preds)
  except Exception:  # pylint: disable=broad-except
    return 0.0


def time_key(t: float) -> str:
  t = float(t)
  return str(int(t)) if t.is_integer() else str(t)


def spatial_scores(gt_boxes, preds: Any, thresholds=metrics.MAP_THRESHOLDS
                   ) -> tuple[list[float], float]:
  """(AP@t per threshold, mIoU) of one item's predicted boxes against its (time, box) list."""
  if not preds:
    return [0.0] * len(thresholds), 0.0
  ious = [best_box_iou(box, preds[time_key(t)]) if isinstance(preds, dict)
          and time_key(t) in preds else 0.0 for t, box in gt_boxes]
  if not ious:
    return [0.0] * len(thresholds), 0.0
  return [float(np.mean([iou >= th for iou in ious])) for th in thresholds], float(np.mean(ious))


def parse_grade(reply: str) -> int:
  """A judge's reply read as a whole integer (surrounding space allowed); -1 otherwise."""
  try:
    return int(reply)
  except (TypeError, ValueError):
    return -1


# --- items ---------------------------------------------------------------------------------------


def _vstar_requests(item: EvalItem) -> list[Request]:
  questions = {"answer": item.question, "when": item.questions["when"],
               "where": item.questions["where"], "where_2": item.questions["where_2"],
               "when_2": item.questions["when"]}
  return [Request(item, step, item.task, questions[step]) for step in VSTAR_STEPS]


# The benchmarks the reference protocols cover: name -> fn(item) -> its requests.
REQUESTS = {
    "vstar": _vstar_requests,  # five steps
    "charades": lambda item: [Request(item, "answer", item.task, item.question)],
}


def requests_for(item: EvalItem) -> list[Request]:
  """V-STAR's five steps or Charades' one; the prompt set formats them (`reference_inputs`)."""
  if item.benchmark not in REQUESTS:
    raise ValueError(f"item {item.id!r}: the reference protocols cover {', '.join(REQUESTS)}, not "
                     f"{item.benchmark!r}")
  return REQUESTS[item.benchmark](item)


def score_items(items: Sequence[EvalItem], outputs: Sequence[Mapping[str, str]], judge,
                thresholds=metrics.MAP_THRESHOLDS, correct_score: int = metrics.CORRECT_SCORE
                ) -> list[dict[str, Any]]:
  """Per-item results: raw completions, parsed fields and every score."""
  results, to_judge = [], []
  for item, out in zip(items, outputs):
    answer = answer_part(out.get("answer", ""))
    result: dict[str, Any] = {
        "id": item.id, "benchmark": item.benchmark, "task": item.task, "domain": item.domain,
        "duration": item.duration, "outputs": dict(out), "answer": answer, "gt": item.to_json()}
    if item.benchmark == "charades":
      span = parse_span(out.get("answer", ""))
      result["chains"] = {"chain1": {"segment": span, "tiou": span_iou(item.segment, span)}}
      results.append(result)
      continue
    result.update(skipped=not answer, score=None, correct=None, chains={})
    if answer:
      to_judge.append((len(results), item.question, item.answer, answer))
    for chain, (when, where) in CHAINS.items():
      span = parse_span(out.get(when, ""))
      boxes = parse_boxes(out.get(where, ""))
      aps, miou = spatial_scores(item.boxes, boxes, thresholds)
      result["chains"][chain] = {"segment": span, "tiou": span_iou(item.segment, span),
                                 "boxes": boxes, "miou": miou, "aps": aps}
    results.append(result)
  judge_lib.grade_pending(judge, to_judge, results, correct_score)
  return results


# --- aggregation ---------------------------------------------------------------------------------


def vstar_block(rows: Sequence[Mapping[str, Any]], total: int, *, recall_thresholds=
                metrics.RECALL_THRESHOLDS, map_thresholds=metrics.MAP_THRESHOLDS,
                joint_tiou=metrics.JOINT_TIOU, joint_miou=metrics.JOINT_MIOU,
                eps=metrics.LGM_EPS, correct_score=metrics.CORRECT_SCORE) -> dict[str, Any]:
  """One group's figures from its judged rows, `total` being its denominator for counts."""
  if not rows or total <= 0:
    return {"n": total, "acc": None, "mean_score": None, "mAM": None, "mLGM": None,
            **{c: None for c in CHAINS}}
  scores = [max(r["score"], 0) for r in rows]
  good = [r["score"] >= correct_score for r in rows]
  acc = sum(good) / total
  block: dict[str, Any] = {"n": total, "acc": acc, "mean_score": float(np.mean(scores))}
  for chain in CHAINS:
    tious = [r["chains"][chain]["tiou"] for r in rows]
    mious = [r["chains"][chain]["miou"] for r in rows]
    aps = np.array([r["chains"][chain]["aps"] for r in rows], np.float64)
    m: dict[str, Any] = {f"R1@{t:g}": float(np.mean([v >= t for v in tious]))
                         for t in recall_thresholds}
    m["mean_tiou"] = float(np.mean(tious))
    m.update({f"mAP@{t:g}": float(aps[:, i].mean()) for i, t in enumerate(map_thresholds)})
    m["mean_miou"] = float(np.mean(mious))
    parts = (acc, m["mean_tiou"], m["mean_miou"])
    m["AM"], m["LGM"] = sum(parts) / 3, metrics.lgm(parts, eps)
    rows3 = list(zip(good, tious, mious))
    hits = lambda f: sum(bool(f(g, t, v)) for g, t, v in rows3) / total  # noqa: E731
    m["answer&tiou"] = hits(lambda g, t, v: g and t >= joint_tiou)
    m["answer&miou"] = hits(lambda g, t, v: g and v >= joint_miou)
    m["tiou&miou"] = hits(lambda g, t, v: t >= joint_tiou and v >= joint_miou)
    m["answer&tiou&miou"] = hits(lambda g, t, v: g and t >= joint_tiou and v >= joint_miou)
    block[chain] = m
  block["mAM"] = (block["chain1"]["AM"] + block["chain2"]["AM"]) / 2
  block["mLGM"] = (block["chain1"]["LGM"] + block["chain2"]["LGM"]) / 2
  return block


def length_name(duration: float) -> str:
  return next(name for upper, name in LENGTHS if duration < upper)


def vstar_summary(results: Sequence[Mapping[str, Any]], **kwargs) -> dict[str, Any]:
  """Overall / per-domain / per-length blocks (the structure of `metrics.vstar_summary`)."""
  judged = [r for r in results if not r.get("skipped")]
  by_domain: dict[str, list] = {}
  by_length: dict[str, list] = {}
  for r in judged:
    by_domain.setdefault(str(r.get("domain") or "unknown"), []).append(r)
    by_length.setdefault(length_name(float(r.get("duration") or 0.0)), []).append(r)
  return {
      "overall": vstar_block(judged, len(results), **kwargs),
      "by_domain": {k: vstar_block(v, len(v), **kwargs) for k, v in sorted(by_domain.items())},
      "by_length": {k: vstar_block(v, len(v), **kwargs) for k, v in sorted(by_length.items())},
  }


def charades_summary(results: Sequence[Mapping[str, Any]], thresholds=metrics.RECALL_THRESHOLDS
                     ) -> dict[str, Any]:
  return metrics.temporal_summary([r["chains"]["chain1"]["tiou"] for r in results], thresholds)
