"""Evaluation metrics, judges and completion scoring against hand-computed values."""

import math

import pytest

from vcoach_jax.evaluation import judge as judge_lib
from vcoach_jax.evaluation import metrics
from vcoach_jax.evaluation import scoring
from vcoach_jax.evaluation.items import EvalItem

approx = pytest.approx


# --- per-item IoUs --------------------------------------------------------------------------------


def test_temporal_iou_known_values_and_absent_prediction():
  assert metrics.temporal_iou((2.0, 6.0), (4.0, 8.0)) == approx(2 / 6)
  assert metrics.temporal_iou((4.0, 8.0), (4.0, 8.0)) == 1.0
  assert metrics.temporal_iou((0.0, 1.0), (2.0, 3.0)) == 0.0
  assert metrics.temporal_iou(None, (2.0, 3.0)) == 0.0
  assert metrics.segment_ious([], []).shape == (0,)


def test_box_miou_best_box_per_timestamp_and_absent_timestamps():
  gt = [(3, [0, 0, 10, 10]), (5, [0, 0, 10, 10])]
  pred = {3.0: [[0, 0, 5, 10], [0, 0, 10, 10]], 4.0: [[0, 0, 10, 10]]}
  # t=3: best of 0.5 and 1.0; t=5: nothing predicted -> 0 (the box at t=4 does not count).
  assert metrics.item_box_miou(gt, pred) == approx(0.5)
  # Half-overlapping box: intersection 50, union 150.
  assert metrics.item_box_miou(gt, {3.0: [[5, 0, 15, 10]]}) == approx((1 / 3) / 2)
  assert metrics.item_box_miou(gt, {}) == 0.0  # empty prediction
  assert metrics.item_box_miou([], {3.0: [[0, 0, 1, 1]]}) == 0.0  # no ground truth
  assert metrics.item_box_miou(gt, {3.0: [[0, 0, 10], "x"], 5.0: [[0, 0, 10, 10]]}) == approx(0.5)


def test_box_mious_batches_items_independently():
  gts = [[(1.0, [0, 0, 2, 2])], [(2.0, [0, 0, 2, 2]), (2.0, [2, 2, 4, 4])]]
  preds = [{1.0: [[0, 0, 2, 2]]}, {2.0: [[0, 0, 2, 2]]}]
  # item 2: two GT boxes at the same time, the one prediction matches the first only.
  assert list(metrics.box_mious(gts, preds)) == approx([1.0, 0.5])


# --- V-STAR dataset-level figures -----------------------------------------------------------------


def _r(score, c1, c2, domain, duration):
  return {"score": score, "correct": score >= 2, "domain": domain, "duration": duration,
          "chains": {"chain1": {"tiou": c1[0], "miou": c1[1]},
                     "chain2": {"tiou": c2[0], "miou": c2[1]}}}


RESULTS = [
    _r(3, (0.6, 0.5), (0.2, 0.05), "d1", 30.0),
    _r(1, (0.3, 0.0), (0.8, 0.4), "d1", 100.0),
    _r(2, (0.0, 0.2), (0.5, 0.1), "d2", 200.0),
]


def test_vstar_chain_figures_by_hand():
  s = metrics.vstar_summary(RESULTS)["overall"]
  assert s["n"] == 3 and s["acc"] == approx(2 / 3) and s["mean_score"] == approx(2.0)
  c1, c2 = s["chain1"], s["chain2"]
  assert (c1["R1@0.3"], c1["R1@0.5"], c1["R1@0.7"]) == approx((2 / 3, 1 / 3, 0.0))
  assert c1["mean_tiou"] == approx(0.3) and c1["mean_miou"] == approx(0.7 / 3)
  assert [c1[f"mAP@{t}"] for t in (0.1, 0.3, 0.5, 0.7, 0.9)] == approx([2 / 3, 1 / 3, 1 / 3, 0, 0])
  assert c1["AM"] == approx((2 / 3 + 0.3 + 0.7 / 3) / 3)
  assert c1["LGM"] == approx(-(math.log(1 / 3) + math.log(0.7) + math.log(1 - 0.7 / 3)) / 3)
  assert (c1["answer&tiou"], c1["answer&miou"], c1["tiou&miou"], c1["answer&tiou&miou"]) == approx(
      (1 / 3, 2 / 3, 1 / 3, 1 / 3))
  assert (c2["R1@0.3"], c2["R1@0.5"], c2["R1@0.7"]) == approx((2 / 3, 2 / 3, 1 / 3))
  assert c2["mean_tiou"] == approx(0.5) and c2["mean_miou"] == approx(0.55 / 3)
  assert c2["mAP@0.1"] == approx(2 / 3)  # 0.1 counts at the threshold
  assert (c2["answer&tiou"], c2["tiou&miou"], c2["answer&tiou&miou"]) == approx(
      (1 / 3, 2 / 3, 1 / 3))
  assert s["mAM"] == approx(((2 / 3 + 0.3 + 0.7 / 3) / 3 + (2 / 3 + 0.5 + 0.55 / 3) / 3) / 2)
  assert s["mLGM"] == approx((c1["LGM"] + c2["LGM"]) / 2)


def test_vstar_groups_by_domain_and_length():
  s = metrics.vstar_summary(RESULTS)
  assert set(s["by_domain"]) == {"d1", "d2"}
  assert s["by_domain"]["d1"]["n"] == 2 and s["by_domain"]["d1"]["acc"] == approx(0.5)
  assert {k: v["n"] for k, v in s["by_length"].items()} == {"short": 1, "medium": 1, "long": 1}
  assert s["by_length"]["long"]["chain2"]["mean_tiou"] == approx(0.5)
  assert metrics.length_bucket(60.0) == "medium" and metrics.length_bucket(None) == "unknown"


def test_lgm_guard_when_a_mean_reaches_one():
  perfect = [_r(3, (1.0, 1.0), (1.0, 1.0), "d", 10.0)]
  s = metrics.vstar_summary(perfect)["overall"]
  assert s["chain1"]["AM"] == 1.0
  assert s["chain1"]["LGM"] == approx(-math.log(1e-6))
  assert metrics.lgm([1.0, 0.0], eps=1e-3) == approx(-math.log(1e-3) / 2)
  assert metrics.lgm([0.0, 0.0, 0.0]) == 0.0


def test_missing_components_are_left_out_not_zeroed():
  rows = [{"score": None, "correct": None, "chains": {"chain1": {"tiou": 0.5, "miou": None}}},
          {"score": 3, "correct": True, "chains": {"chain1": {"tiou": None, "miou": 0.25}}}]
  b = metrics.vstar_block(rows, ("chain1",))
  assert b["acc"] == 1.0 and b["chain1"]["mean_tiou"] == 0.5 and b["chain1"]["mean_miou"] == 0.25
  assert b["chain1"]["AM"] == approx((1.0 + 0.5 + 0.25) / 3)
  assert b["chain1"]["answer&tiou&miou"] is None  # no item has all three


def test_charades_and_mcq_summaries():
  s = metrics.temporal_summary([0.6, 0.3, 0.0, 1.0])
  assert (s["R@0.3"], s["R@0.5"], s["R@0.7"], s["mIoU"]) == approx((0.75, 0.5, 0.25, 0.475))
  rows = [{"correct": True, "category": "a"}, {"correct": False, "category": "a"},
          {"correct": True, "category": "b"}, {"correct": True, "category": ""}]
  m = metrics.mcq_summary(rows)
  assert m["acc"] == 0.75 and m["by_category"] == {"a": {"n": 2, "acc": 0.5},
                                                   "b": {"n": 1, "acc": 1.0}}


# --- judges ---------------------------------------------------------------------------------------


def test_rouge_judge_thresholds():
  j = judge_lib.RougeJudge()
  answers = ["the red ball", "two objects appear", "the red ball", "the red ball", "the red ball"]
  preds = ["Red ball.", "three objects appear", "the red ball is shown", "the blue cube", ""]
  assert j.score_many([""] * 5, answers, preds) == [3, 1, 2, 0, 0]
  assert judge_lib.RougeJudge((0.1, 0.2, 0.3)).score("the red ball", "the blue cube") == 2  # 0.222
  with pytest.raises(ValueError, match="increasing"):
    judge_lib.RougeJudge((0.5, 0.2, 0.9))


def test_exact_and_model_judges():
  assert judge_lib.ExactJudge().score_many(["q", "q"], ["A cup", "x"], ["cup!", "y"]) == [3, 0]
  seen = []

  def generate(prompts):
    seen.extend(prompts)
    return ["2", "Grade: 3 because", "no idea"]

  scores = judge_lib.ModelJudge(generate).score_many(["q1", "q2", "q3"], ["a"] * 3, ["b"] * 3)
  assert scores == [2, 3, 0]
  assert "Question: q2" in seen[1] and seen[0].startswith("<|im_start|>system")
  assert isinstance(judge_lib.make_judge("model:/x", generate=generate), judge_lib.ModelJudge)
  with pytest.raises(ValueError, match="generate"):
    judge_lib.make_judge("model:/x")
  with pytest.raises(ValueError, match="unknown judge"):
    judge_lib.make_judge("llm")


@pytest.mark.parametrize("text,expected", [
    ("B", "B"), ("(C)", "C"), ("[A]", "A"), ("D.", "D"), ("From <t>1</t>s\nCorrect Option: D", "D"),
    ("B) Three", "B"), ("I think A is right", "A"), ("Three.", "B"), ("none of them", None),
    ("E", None),
])
def test_extract_letter(text, expected):
  assert judge_lib.extract_letter(text, ("Four", "Three", "Two", "Five")) == expected


# --- completions -> predictions -------------------------------------------------------------------


def test_predicted_boxes_from_claims_and_json_answer():
  text = ("<think>the cat <obj>cat</obj><box>[1,2,3,4]</box><box>[0,0,1,1]</box>at<t>3.0</t>s"
          "</think><answer>{\"4\": [5, 6, 7, 8], \"5\": [[1, 1, 2, 2]], \"x\": [0, 0, 1, 1]}"
          "</answer>")
  assert scoring.predicted_boxes(text) == {3.0: [[1, 2, 3, 4], [0, 0, 1, 1]], 4.0: [[5, 6, 7, 8]],
                                           5.0: [[1, 1, 2, 2]]}
  vqa = "<answer><obj>ring</obj><box>[10,35,20,46]</box></answer>"
  assert scoring.predicted_boxes(vqa, answer_box_at=0.0) == {0.0: [[10, 35, 20, 46]]}
  assert scoring.predicted_boxes("no tags at all") == {}


def test_score_vstar_item_scales_boxes_and_scores_both_chains():
  item = EvalItem(id="v1", benchmark="vstar", video="v.mp4", question="What?", task="vstar",
                  answer="a blue cup", segment=(2.0, 6.0),
                  boxes=((3.0, (100, 50, 200, 250)), (5.0, (120, 60, 220, 260))),
                  box_size=(640, 360), questions={"when": "When?", "where": "Where?",
                                                  "where_2": "Where 2?", "object": "man"})
  outputs = {
      "answer": "<think>..</think><answer>the blue cup</answer>",
      "when": "<answer>From <t>4.0</t>s to <t>8.0</t>s.</answer>",  # IoU 2/6
      # model frames are half size: [50,25,100,125] is the first GT box exactly
      "where": "<answer><obj>man</obj><box>[50,25,100,125]</box>at<t>3</t>s</answer>",
      "where_2": "<answer>nothing</answer>",
      "when_2": "no answer block",
  }
  [r] = scoring.score_items([item], [outputs], judge_lib.RougeJudge(), lambda it: (320, 180))
  assert r["score"] == 3 and r["correct"] is True
  assert r["chains"]["chain1"]["tiou"] == approx(1 / 3)
  assert r["chains"]["chain1"]["miou"] == approx(0.5)  # second GT box has no prediction
  assert r["chains"]["chain2"] == {"segment": None, "tiou": 0.0, "boxes": {}, "miou": 0.0}
  steps = [req.step for req in scoring.requests_for(item)]
  assert steps == ["answer", "when", "where", "where_2", "when_2"]
  where = scoring.requests_for(item)[2].question
  assert "from 2 to 6 s" in where
