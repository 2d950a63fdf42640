"""Items -> requests (the questions asked), and completions -> per-item results.

V-STAR items are asked five questions, all independent (so they batch together): the answer
("what"), then per chain the "when" and the "where". As in the reference, chain 1's "where" is
told the ground-truth time span (whole seconds from ceil(start) to floor(end)) and chain 2's
"when" is told the ground-truth boxes without their times; chain 2's "where" must find the
moments itself. Every other item is asked its question once.

Completions are read with the rewards' parser (`rewards.parsing`): the answer block, the
`<t>a</t>s to <t>b</t>s` segment, `<obj>..</obj><box>[..]</box>at<t>t</t>s` claims (anywhere in
the completion) as boxes keyed by time, and, for V-STAR's reference format, a JSON object
`{"<second>": [x1, y1, x2, y2]}` in the answer. Predicted boxes are in pixels of the frames the
model saw (`pred_size`) and are scaled to the ground truth's `box_size` before IoU.

The wording of the eval questions is below (the training prompts live in assets/prompts.json).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Sequence

from vcoach_jax.evaluation import judge as judge_lib
from vcoach_jax.evaluation import metrics
from vcoach_jax.evaluation.items import EvalItem, Request, TASK_VSTAR
from vcoach_jax.rewards import parsing
from vcoach_jax.rewards import targets as targets_lib

T = targets_lib
WHERE_SPAN = ("{question} Give the {object}'s box at every whole second from {start} to {end} s, "
              "each as <obj>{object}</obj><box>[x1,y1,x2,y2]</box>at<t>second</t>s.")
WHERE_FIND = ("{question} Find the {n} whole seconds that matter most and give the {object}'s box "
              "at each, as <obj>{object}</obj><box>[x1,y1,x2,y2]</box>at<t>second</t>s.")
WHEN_BOXES = ("{question} In a {w}x{h} frame the {object} is at these {n} boxes, times unknown: "
              "{boxes}.")
MCQ_OPTIONS = "{question}\nOptions:\n{options}\nAnswer with the option's letter."
CHARADES = "When does this happen in the video: {question}?"
CHAINS = {"chain1": ("when", "where"), "chain2": ("when_2", "where_2")}

_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
PredSize = Callable[[EvalItem], "tuple[int, int] | None"]


def requests_for(item: EvalItem) -> list[Request]:
  """The prompts to generate for one item."""
  if item.task != TASK_VSTAR:
    question = item.question
    if item.options:
      listed = "\n".join(f"{judge_lib.LETTERS[i]}. {o}" for i, o in enumerate(item.options))
      question = MCQ_OPTIONS.format(question=question, options=listed)
    elif item.benchmark == "charades":
      question = CHARADES.format(question=question.rstrip(". "))
    return [Request(item, "answer", item.task, question)]
  q, obj = item.questions, item.questions.get("object") or "object"
  start, end = math.ceil(item.segment[0]), math.floor(item.segment[1])
  w, h = item.box_size
  boxes = ", ".join(f"[{', '.join(f'{v:g}' for v in b)}]" for _, b in item.boxes)
  return [
      Request(item, "answer", T.TASK_FREE, item.question),
      Request(item, "when", T.TASK_TG, q["when"]),
      Request(item, "where", T.TASK_ST, WHERE_SPAN.format(
          question=q["where"], object=obj, start=start, end=end)),
      Request(item, "where_2", T.TASK_ST, WHERE_FIND.format(
          question=q["where_2"], object=obj, n=len(item.boxes))),
      Request(item, "when_2", T.TASK_TG, WHEN_BOXES.format(
          question=q["when"], object=obj, w=w, h=h, n=len(item.boxes), boxes=boxes)),
  ]


def predicted_boxes(completion: str, *, answer_box_at: float | None = None
                    ) -> dict[float, list[list[float]]]:
  """Boxes a completion gives, keyed by `metrics.time_key(seconds)`.

  Claims anywhere in the text; a `{"<second>": box or [boxes]}` JSON object in the answer; and,
  when `answer_box_at` is given, the answer's first `<box>` at that time (visual QA).
  """
  out: dict[float, list[list[float]]] = {}

  def add(t: float, box: Any) -> None:
    if isinstance(t, float) and math.isfinite(t):
      out.setdefault(metrics.time_key(t), []).append(box)

  for claim in parsing.parse_claims(completion):
    for box in claim.boxes:
      add(claim.time, box)
  answer = parsing.extract_answer(completion)
  match = _JSON_OBJECT.search(answer)
  if match:
    ok, value = parsing.load_json(match.group(0))
    if ok and isinstance(value, dict):
      for key, boxes in value.items():
        try:
          t = float(key)
        except ValueError:
          continue
        is_list = isinstance(boxes, list) and boxes and isinstance(boxes[0], list)
        for box in boxes if is_list else [boxes]:
          add(t, box)
  if answer_box_at is not None:
    parsed = parsing.parse_answer_box(answer)
    if parsed is not None and parsed[0]:
      add(float(answer_box_at), parsed[1])
  return out


def _scaled(boxes: Mapping[float, list], item: EvalItem, pred_size: tuple[int, int] | None):
  if pred_size is None or item.box_size is None or tuple(pred_size) == tuple(item.box_size):
    return dict(boxes)
  sx, sy = item.box_size[0] / pred_size[0], item.box_size[1] / pred_size[1]
  scale = lambda b: [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] if metrics.is_box(b) else b
  return {t: [scale(b) for b in bs] for t, bs in boxes.items()}


def _answer_kind(item: EvalItem) -> str | None:
  if item.options or item.task in (T.TASK_MCQ, T.TASK_TG_MCQ):
    return "letter"
  if item.task in (TASK_VSTAR, T.TASK_ST, T.TASK_FREE):
    return "judge"
  return None


def score_items(items: Sequence[EvalItem], outputs: Sequence[Mapping[str, str]],
                judge: judge_lib.Judge, pred_size: PredSize | None = None,
                correct_score: int = metrics.CORRECT_SCORE) -> list[dict[str, Any]]:
  """Per-item results (one JSON-able dict each) from the completions of their requests.

  Args:
    items: the items.
    outputs: per item, {request step: completion text}.
    judge: scores free-form answers (called once for the whole batch).
    pred_size: item -> (W, H) of the frames the model saw; None: the ground truth's size.
    correct_score: a judge score of at least this counts as correct.
  """
  results, to_judge = [], []
  for item, out in zip(items, outputs):
    answer = judge_lib.answer_text(out.get("answer", ""))
    result: dict[str, Any] = {
        "id": item.id, "benchmark": item.benchmark, "task": item.task,
        "category": item.category, "domain": item.domain, "duration": item.duration,
        "length": item.length, "outputs": dict(out), "answer": answer, "score": None,
        "correct": None, "gt": item.to_json()}
    kind = _answer_kind(item)
    if kind == "letter":
      letter = judge_lib.extract_letter(answer, item.options)
      result["letter"] = letter
      result["correct"] = letter is not None and letter == item.answer.strip()
      result["score"] = 3 if result["correct"] else 0
    elif kind == "judge":
      to_judge.append((len(results), item.question, item.answer, answer))
    size = pred_size(item) if pred_size else None
    chains = CHAINS if item.task == TASK_VSTAR else {"chain1": ("answer", "answer")}
    result["chains"] = {}
    for chain, (when, where) in chains.items():
      block: dict[str, Any] = {"segment": None, "tiou": None, "boxes": None, "miou": None}
      if item.segment is not None:
        seg = parsing.parse_answer_segment(parsing.extract_answer(out.get(when, "")))
        block["segment"] = list(seg) if seg else None
        block["tiou"] = metrics.temporal_iou(seg, item.segment)
      if item.boxes:
        boxes = predicted_boxes(out.get(where, ""),
                                answer_box_at=0.0 if item.task == T.TASK_VQA else None)
        boxes = _scaled(boxes, item, size)
        block["boxes"] = {str(t): b for t, b in boxes.items()}
        block["miou"] = metrics.item_box_miou(item.boxes, boxes)
      result["chains"][chain] = block
    results.append(result)
  judge_lib.grade_pending(judge, to_judge, results, correct_score)
  return results
