"""One evaluation item, whatever the benchmark, and the prompts (requests) asked about it.

Every loader (`loaders.py`) turns its benchmark's annotation format into `EvalItem`s; the
evaluator (`evaluate.py`) turns each item into one or more `Request`s (V-STAR asks five
questions per item, every other benchmark one), hands them to the generate function, and scores
the completions against the item's ground truth.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from vcoach_jax.rewards import targets as targets_lib

BENCHMARKS = ("vstar", "charades", "videomme", "worldsense", "videommmu", "perceptiontest",
              "synthetic")
MCQ_BENCHMARKS = ("videomme", "worldsense", "videommmu", "perceptiontest")
TASK_VSTAR = "vstar"  # an item asked along V-STAR's two chains (five requests)
ITEM_TASKS = targets_lib.TASKS + (TASK_VSTAR,)


@dataclasses.dataclass(frozen=True)
class EvalItem:
  """One benchmark question with its ground truth.

  Times are seconds of the original video; boxes are [x1, y1, x2, y2] in pixels of a frame of
  `box_size` (W, H).
  """
  id: str  # unique within the benchmark file
  benchmark: str  # one of BENCHMARKS
  video: str  # path of the video (or image) file; "" for synthetic items (pixels in `record`)
  question: str  # the question ("what" for V-STAR), verbatim
  task: str  # one of ITEM_TASKS: the STGR task whose system prompt it is asked under, or vstar
  answer: str = ""  # free-form answer, or the option letter for multiple choice
  options: tuple[str, ...] = ()  # option texts in letter order (A, B, ...), without letters
  segment: tuple[float, float] | None = None  # ground-truth (start, end)
  boxes: tuple[tuple[float, tuple[float, float, float, float]], ...] = ()  # (time, box), by time
  box_size: tuple[int, int] | None = None  # (W, H) the boxes are in
  category: str = ""  # task type / category of the benchmark, "" when it has none
  domain: str = ""  # video domain, "" when the benchmark has none
  duration: float = 0.0  # video length in seconds, 0 when unknown
  length: str = ""  # the benchmark's own length class (VideoMME short/medium/long), if any
  questions: Mapping[str, str] = dataclasses.field(default_factory=dict)  # V-STAR: when / where / where_2
  record: Mapping[str, Any] | None = None  # the STGR record (synthetic items)

  def __post_init__(self):
    if self.benchmark not in BENCHMARKS:
      raise ValueError(f"item {self.id!r}: unknown benchmark {self.benchmark!r}; expected one of "
                       f"{BENCHMARKS}")
    if self.task not in ITEM_TASKS:
      raise ValueError(f"item {self.id!r}: unknown task {self.task!r}; expected one of "
                       f"{ITEM_TASKS}")

  def to_json(self) -> dict[str, Any]:
    """The ground truth as written beside each result line (no record, no pixels)."""
    return {"answer": self.answer, "options": list(self.options),
            "segment": list(self.segment) if self.segment else None,
            "boxes": [[t, list(b)] for t, b in self.boxes], "category": self.category,
            "domain": self.domain, "duration": self.duration, "length": self.length}


@dataclasses.dataclass(frozen=True)
class Request:
  """One prompt to generate: the `question` about `item`'s video under the system prompt of
  `task` (an STGR task string). `step` names it within the item (`answer`, `when`, `where`,
  `when_2`, `where_2` for V-STAR; `answer` otherwise)."""
  item: EvalItem
  step: str
  task: str
  question: str
