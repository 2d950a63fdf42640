"""Cold-start SFT target text (docs/design.md §8.8) with its boxes on the model's input scale.

STGR traces store boxes on the annotation's scale; the model sees resized frames and cites
pixels of them. The released SFT converts every `<box>[...]</box>` of the target before
training, and so does `target_text`:

  temporal-spatial  boxes normalised to 0..1 -> pixels of the resized frame: x * W, y * H,
                    rounded (Python's round, half to even), written `[x1,y1,x2,y2]` (no spaces)
  visual QA         pixels of the original image -> pixels of the resized image:
                    x * newW / oldW, y * newH / oldH, rounded, written the same way
  other tasks       unchanged

  target_text(task, reasoning, answer, frame_size=(W, H), original_size=(W0, H0))
"""

from __future__ import annotations

import re
from typing import Sequence

from vcoach_jax.data import records as records_lib

# A box as the traces write it: four numbers in brackets inside <box> tags.
_BOX = re.compile(r"<box>\[([^\]]*)\]</box>")


def sft_target(reasoning: str, answer: str) -> str:
  """The cold-start SFT target text (docs/design.md §8.8), end of turn not included."""
  return f"<think>{reasoning}</think>\n<answer>{answer}</answer>"


def _write(coords: Sequence[float]) -> str:
  return "<box>[" + ",".join(str(int(round(c))) for c in coords) + "]</box>"


def scale_boxes(text: str, sx: float, sy: float, where: str = "") -> str:
  """Every `<box>[x1,y1,x2,y2]</box>` of `text` multiplied by (sx, sy, sx, sy) and rounded."""
  def convert(match: re.Match) -> str:
    try:
      coords = [float(c) for c in match.group(1).split(",")]
    except ValueError:
      coords = []
    if len(coords) != 4:
      raise ValueError(f"{where}box {match.group(0)!r} in the SFT target: expected "
                       "<box>[x1,y1,x2,y2]</box> with four numbers")
    return _write([c * s for c, s in zip(coords, (sx, sy, sx, sy))])
  return _BOX.sub(convert, text)


def convert_boxes(task: str, text: str, frame_size: Sequence[int],
                  original_size: Sequence[int] | None = None, where: str = "") -> str:
  """The boxes of a target text on the model's input scale (module docstring).

  Args:
    task: the record's task.
    text: the target text.
    frame_size: (W, H) of the image the model sees (the resized frame or image).
    original_size: (W, H) of the original image (visual QA).
    where: prefix of error messages (e.g. "record id 'x': ").
  """
  w, h = (float(v) for v in frame_size)
  if task == records_lib.TASK_ST:
    return scale_boxes(text, w, h, where)
  if task == records_lib.TASK_VQA:
    if original_size is None or min(original_size) <= 0:
      raise ValueError(f"{where}visual-QA target needs the original image size, got "
                       f"{original_size!r}")
    w0, h0 = (float(v) for v in original_size)
    return scale_boxes(text, w / w0, h / h0, where)
  return text


def target_text(task: str, reasoning: str, answer: str, frame_size: Sequence[int],
                original_size: Sequence[int] | None = None, where: str = "") -> str:
  """`sft_target` with its boxes converted to the model's input scale (`convert_boxes`)."""
  return convert_boxes(task, sft_target(reasoning, answer), frame_size, original_size, where)
