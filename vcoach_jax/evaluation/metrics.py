"""Benchmark metrics (docs/design.md §9): pure functions of per-item results, host side.

V-STAR (after the reference's eval_vstar.py): the answer ("what") is judged once per item, 0-3,
and counts as correct at score >= 2; each chain (what->when->where, what->where->when) has its
own temporal IoU (0 when no segment was predicted) and box mIoU (per ground-truth box, keyed by
its timestamp, the best IoU among the boxes predicted for that timestamp, 0 when none; averaged
over the item's ground-truth boxes). From the dataset-level means of each chain:

  AM  = (acc + mean tIoU + mean mIoU) / 3
  LGM = -(ln(1 - acc) + ln(1 - mean tIoU) + ln(1 - mean mIoU)) / 3,  each x clipped to 1 - eps

and mAM, mLGM are their means over the chains. Joint rates count items where the answer is
correct and tIoU >= 0.3, the answer is correct and mIoU >= 0.1, tIoU >= 0.3 and mIoU >= 0.1,
and all three.

A component an item has no ground truth for (a synthetic temporal-QA item has no boxes) is
None in its result and left out of that component's mean; V-STAR items have all three, so this
never changes a V-STAR figure. IoUs come from the reward kernels (`rewards.iou`), in float64.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vcoach_jax.rewards import iou as iou_lib

Segment = tuple[float, float]
Box = Sequence[float]
TimedBoxes = Sequence[tuple[float, Box]]  # ((time, [x1, y1, x2, y2]), ...) in time order

RECALL_THRESHOLDS = (0.3, 0.5, 0.7)
MAP_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)  # the reference's mAP@0.1:0.9
CORRECT_SCORE = 2  # a judge score of at least this counts as correct
JOINT_TIOU = 0.3
JOINT_MIOU = 0.1
LGM_EPS = 1e-6
LENGTH_BUCKETS = ((60.0, "short"), (180.0, "medium"), (math.inf, "long"))  # upper bound, name


def time_key(t: float) -> float:
  """The key a timestamp is matched on: seconds rounded to milliseconds ("3" matches 3.0)."""
  return round(float(t), 3)


# --- per-item ------------------------------------------------------------------------------------


def segment_ious(preds: Sequence[Segment | None], gts: Sequence[Segment]) -> np.ndarray:
  """Temporal IoU of each predicted segment with its ground truth; 0 where none was predicted.

  Returns:
    float64 [N].
  """
  if len(preds) != len(gts):
    raise ValueError(f"{len(preds)} predicted segments for {len(gts)} ground-truth segments")
  if not preds:
    return np.zeros(0, np.float64)
  have = np.array([p is not None for p in preds])
  pred = np.array([p if p is not None else (0.0, 0.0) for p in preds], np.float64)
  with jax.enable_x64(True):
    values = np.asarray(iou_lib.segment_iou(jnp.asarray(pred), jnp.asarray(np.array(gts, np.float64))))
  return np.where(have, values, 0.0)


def temporal_iou(pred: Segment | None, gt: Segment) -> float:
  """One item's temporal IoU (0 when no segment was predicted)."""
  return float(segment_ious([pred], [gt])[0])


def box_mious(gts: Sequence[TimedBoxes], preds: Sequence[Mapping[float, Sequence[Box]]]
              ) -> np.ndarray:
  """Item box mIoU of each item (V-STAR's spatial score).

  Args:
    gts: per item, its ground-truth boxes with their timestamps.
    preds: per item, {time_key(t): [predicted boxes at t]}; a box that is not 4 numbers scores 0.

  Returns:
    float64 [N]: per item, the mean over its ground-truth boxes of the best IoU among the boxes
    predicted at that box's timestamp (0 when none); 0 for an item without ground-truth boxes.
  """
  if len(gts) != len(preds):
    raise ValueError(f"{len(preds)} prediction sets for {len(gts)} items")
  pair_gt, pair_pred, pair_slot = [], [], []  # one row per (gt box, candidate) pair
  n_slots = 0
  slot_item = []
  for i, (gt, pred) in enumerate(zip(gts, preds)):
    for t, box in gt:
      for cand in pred.get(time_key(t), ()):
        if is_box(cand):
          pair_gt.append(box)
          pair_pred.append(cand)
          pair_slot.append(n_slots)
      slot_item.append(i)
      n_slots += 1
  best = np.zeros(n_slots, np.float64)
  if pair_gt:
    with jax.enable_x64(True):
      ious = np.asarray(iou_lib.box_iou(jnp.asarray(np.array(pair_gt, np.float64)),
                                        jnp.asarray(np.array(pair_pred, np.float64))))
    np.maximum.at(best, np.array(pair_slot), ious)
  totals = np.zeros(len(gts), np.float64)
  counts = np.zeros(len(gts), np.float64)
  np.add.at(totals, np.array(slot_item, np.int64), best)
  np.add.at(counts, np.array(slot_item, np.int64), 1.0)
  return np.where(counts > 0, totals / np.maximum(counts, 1), 0.0)


def item_box_miou(gt: TimedBoxes, pred: Mapping[float, Sequence[Box]]) -> float:
  """One item's box mIoU (see `box_mious`)."""
  return float(box_mious([gt], [pred])[0])


def is_box(value: Any) -> bool:
  """Four finite numbers (a usable predicted box)."""
  return (isinstance(value, (list, tuple)) and len(value) == 4
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  for v in value))


# --- dataset level -------------------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> float | None:
  kept = [float(v) for v in values if v is not None]
  return float(np.mean(kept)) if kept else None


def recall_at(ious: Sequence[float], thresholds: Sequence[float]) -> dict[str, float | None]:
  """{f"R@{t}": share of IoUs >= t}; None for an empty list."""
  return {f"R@{t:g}": _mean([float(v >= t) for v in ious]) for t in thresholds}


def lgm(values: Sequence[float], eps: float = LGM_EPS) -> float:
  """-(sum of ln(1 - x)) / n with each x clipped to [0, 1 - eps] (the x -> 1 guard)."""
  total = sum(math.log(1.0 - min(max(float(x), 0.0), 1.0 - eps)) for x in values)
  return 0.0 - total / len(values)  # 0.0 - ...: never -0.0


def length_bucket(duration: float | None, buckets=LENGTH_BUCKETS) -> str:
  """Name of the first bucket whose upper bound is above `duration` ('unknown' when None)."""
  if duration is None or duration <= 0:
    return "unknown"
  for upper, name in buckets:
    if duration < upper:
      return name
  return buckets[-1][1]


def chain_metrics(results: Sequence[Mapping[str, Any]], chain: str, *,
                  recall_thresholds=RECALL_THRESHOLDS, map_thresholds=MAP_THRESHOLDS,
                  joint_tiou=JOINT_TIOU, joint_miou=JOINT_MIOU, eps=LGM_EPS
                  ) -> dict[str, Any]:
  """One chain's block: R1@.., mean tIoU, mAP@.., mean mIoU, AM, LGM, joint rates."""
  rows = [(r.get("correct"), r["chains"][chain].get("tiou"), r["chains"][chain].get("miou"))
          for r in results]
  tious = [t for _, t, _ in rows if t is not None]
  mious = [m for _, _, m in rows if m is not None]
  out: dict[str, Any] = {}
  out.update({k.replace("R@", "R1@"): v for k, v in recall_at(tious, recall_thresholds).items()})
  out["mean_tiou"] = _mean(tious)
  out.update({f"mAP@{t:g}": _mean([float(m >= t) for m in mious]) for t in map_thresholds})
  out["mean_miou"] = _mean(mious)
  acc = _mean([float(c) for c, _, _ in rows if c is not None])
  parts = [v for v in (acc, out["mean_tiou"], out["mean_miou"]) if v is not None]
  out["AM"] = sum(parts) / len(parts) if parts else None
  out["LGM"] = lgm(parts, eps) if parts else None

  def joint(need_c: bool, need_t: bool, need_m: bool) -> float | None:
    hits = []
    for c, t, m in rows:
      if (need_c and c is None) or (need_t and t is None) or (need_m and m is None):
        continue
      hits.append(float((not need_c or bool(c)) and (not need_t or t >= joint_tiou)
                        and (not need_m or m >= joint_miou)))
    return _mean(hits)

  out["answer&tiou"] = joint(True, True, False)
  out["answer&miou"] = joint(True, False, True)
  out["tiou&miou"] = joint(False, True, True)
  out["answer&tiou&miou"] = joint(True, True, True)
  return out


def vstar_block(results: Sequence[Mapping[str, Any]], chains: Sequence[str],
                correct_score: int = CORRECT_SCORE, **kwargs) -> dict[str, Any]:
  """Answer figures, each chain's block, and mAM / mLGM over the chains, for one group."""
  scores = [r.get("score") for r in results]
  judged = [s for s in scores if s is not None]
  block: dict[str, Any] = {
      "n": len(results),
      "acc": _mean([float(s >= correct_score) for s in judged]),
      "mean_score": _mean(judged),
  }
  for chain in chains:
    block[chain] = chain_metrics(results, chain, **kwargs)
  ams = [block[c]["AM"] for c in chains if block[c]["AM"] is not None]
  lgms = [block[c]["LGM"] for c in chains if block[c]["LGM"] is not None]
  block["mAM"] = _mean(ams)
  block["mLGM"] = _mean(lgms)
  return block


def vstar_summary(results: Sequence[Mapping[str, Any]], chains: Sequence[str] = ("chain1", "chain2"),
                  *, buckets=LENGTH_BUCKETS, **kwargs) -> dict[str, Any]:
  """V-STAR figures overall, per domain and per video-length bucket.

  Args:
    results: per item: `score` (0-3 or None), `correct` (bool or None), `domain`, `duration`
      (seconds), and `chains: {chain: {"tiou": float|None, "miou": float|None}}`.
    chains: the chains every result has.
    buckets: ((upper bound in seconds, name), ...) for the length groups.
    **kwargs: thresholds and eps of `chain_metrics`, `correct_score` of `vstar_block`.
  """
  by_domain = collections.defaultdict(list)
  by_length = collections.defaultdict(list)
  for r in results:
    by_domain[str(r.get("domain") or "unknown")].append(r)
    by_length[length_bucket(r.get("duration"), buckets)].append(r)
  return {
      "overall": vstar_block(results, chains, **kwargs),
      "by_domain": {k: vstar_block(v, chains, **kwargs) for k, v in sorted(by_domain.items())},
      "by_length": {k: vstar_block(v, chains, **kwargs) for k, v in sorted(by_length.items())},
  }


def temporal_summary(tious: Sequence[float], thresholds=RECALL_THRESHOLDS) -> dict[str, Any]:
  """Charades-STA: R@0.3/0.5/0.7 and mIoU of the predicted segments (absent ones are 0)."""
  return {"n": len(tious), **recall_at(tious, thresholds), "mIoU": _mean(tious)}


def mcq_summary(results: Sequence[Mapping[str, Any]], groups: Sequence[str] = ("category",)
                ) -> dict[str, Any]:
  """MCQ accuracy overall and per value of each grouping field (e.g. `category`, `domain`).

  Args:
    results: per item, `correct` (bool) and the grouping fields.
  """
  out: dict[str, Any] = {"n": len(results), "acc": _mean([float(r["correct"]) for r in results])}
  for field in groups:
    buckets = collections.defaultdict(list)
    for r in results:
      if r.get(field):
        buckets[str(r[field])].append(float(r["correct"]))
    if buckets:
      out[f"by_{field}"] = {k: {"n": len(v), "acc": _mean(v)} for k, v in sorted(buckets.items())}
  return out
