"""The format reward (docs/rewards.md §4): tags present and balanced, and grounded reasoning shown.

1.0 when the completion has a think block and an answer, balanced think/answer tags overall,
balanced obj/t/box tags inside the first think block, and grounding evidence for its task
(obj + t + box; two times for temporal tasks; a one-word `<obj>w</obj><box>[..]</box>` anywhere
for visual QA); general-QA tasks need no evidence. Tags present but no evidence: 0.5.
"""

from __future__ import annotations

from vcoach_jax.rewards import scan
from vcoach_jax.rewards import targets as targets_lib


def format_reward(text: str, task: str) -> float:
  """Format reward of one completion for its task."""
  body = scan.block(text, "<think>", "</think>")
  if body is None or scan.block(text, "<answer>", "</answer>") is None:
    return 0.0
  if text.count("<think>") != text.count("</think>"):
    return 0.0
  if text.count("<answer>") != text.count("</answer>"):
    return 0.0
  counts = {tag: (body.count(f"<{tag}>"), body.count(f"</{tag}>")) for tag in ("obj", "t", "box")}
  if any(opened != closed for opened, closed in counts.values()):
    return 0.0
  grounded = counts["obj"][0] > 0 and counts["t"][0] > 0 and counts["box"][0] > 0
  if task in (targets_lib.TASK_TG, targets_lib.TASK_TG_MCQ):
    grounded = counts["t"][0] >= 2
  if task == targets_lib.TASK_VQA and scan.has_named_box(text):
    grounded = True
  if grounded or "General video QA" in task:
    return 1.0
  return 0.5
