"""The method variants of a VisionCoach run (`config.rl.method`), owned here.

  gspo   GSPO on the raw rollouts only (no coaching, no distillation): the ablation's baseline.
  coach  + visual-prompt coaching: hard prompts get a visual prompt and G prompted rollouts, which
         enter GSPO as their own groups (advantages within each prompted group, log-probs under
         the prompted input, no KL); no NLL. An ablation variant, not the reference method.
  full   VisionCoach (docs/design.md §8.3-8.4): coaching + self-distillation (alpha * NLL on the
         prompted positives); the prompted rollouts do not enter GSPO.

A variant is data: `get(name)` gives what the trainer does; `config.rl.alpha` stays the NLL's
weight of the full method.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Method:
  coach: bool  # hard prompts get a visual prompt and G prompted rollouts
  distill: bool  # alpha * NLL on the prompted positives
  prompted_gspo: bool  # the prompted rollouts enter GSPO as their own groups
  description: str


METHODS: dict[str, Method] = {
    "gspo": Method(False, False, False, "GSPO, grounding rewards only (no coaching)"),
    "coach": Method(True, False, True, "+ visual-prompt coaching: prompted rollouts of hard "
                    "prompts as extra GSPO groups, no NLL"),
    "full": Method(True, True, False, "+ self-distillation (VisionCoach: GSPO + alpha * NLL on "
                   "positives)"),
}
NAMES = tuple(METHODS)


def get(name: str) -> Method:
  """The method called `name` (one of `NAMES`)."""
  try:
    return METHODS[name]
  except KeyError:
    raise ValueError(f"rl.method: unknown method {name!r}; expected one of {NAMES}") from None
