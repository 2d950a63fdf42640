"""Evaluation protocols: how a benchmark's items are shown to the model and how its answers are
read and counted. `vcoach eval --protocol NAME` picks one; `config.eval.protocol` holds the name
and is validated against `NAMES`.

  training            the training input pipeline (config.video sampling and resize, the
                      training system prompts, `eval.scoring`'s parser; means over the items
                      scored); decoding is `config.sampling` made greedy
  vstar_reference     V-STAR as the released VisionCoach evaluation measured it
                      (docs/evaluation.md):
                      frames 1 per second from frame 0 by the interval int(native fps), or 16
                      frames at linspace(0, total - 1, 16) truncated when int(duration) > 16,
                      times = index / native fps; each frame an image near its native size;
                      a generic system message and one prompt per chain step from a data file;
                      greedy, repetition penalty 1.05, 2,048 new tokens; the released answer
                      parsers (`eval.reference`); the accuracy and joint rates over all items
  charades_reference  Charades-STA with the same frames, resolution and decoding, one prompt
                      asking for the start and end in seconds, the same two-number parser;
                      R@0.3/0.5/0.7 and mIoU over all items (an unreadable answer scores 0)

This module imports nothing heavy: the config validator reads `NAMES`.
"""

from __future__ import annotations

import dataclasses
import pathlib

ASSETS = pathlib.Path(__file__).resolve().parent.parent / "assets"
REFERENCE_PROMPTS = str(ASSETS / "eval_reference_prompts.json")

# Qwen2.5-VL's own image bounds (qwen-vl-utils' defaults for still images): frames keep about
# their native size, rounded to multiples of 28.
NATIVE_MIN_PIXELS = 4 * 28 * 28
NATIVE_MAX_PIXELS = 16384 * 28 * 28


@dataclasses.dataclass(frozen=True)
class Protocol:
  """One way of asking and scoring a benchmark."""
  name: str
  benchmarks: tuple[str, ...] | None  # benchmarks it applies to; None = every one
  frames: str  # "training": config.video | "reference": `reference_inputs.frame_indices`
  fps: float = 1.0  # reference frames per second of video
  max_frames: int = 16  # reference frames at most (more -> that many by linspace)
  min_pixels: int = NATIVE_MIN_PIXELS  # reference frames: smart resize bounds
  max_pixels: int = NATIVE_MAX_PIXELS
  prompts: str = ""  # "" = the training prompts; else a prompt-set JSON file
  repetition_penalty: float | None = None  # None = config.sampling.repetition_penalty
  max_new_tokens: int | None = None  # None = config.sampling.max_new_tokens
  parser: str = "training"  # "training": eval.scoring and metrics (means over scored items)
  # | "reference": eval.reference's parsers, IoUs and aggregation (counts over all items)

  def __post_init__(self):
    if self.frames not in ("training", "reference"):
      raise ValueError(f"protocol {self.name!r}: frames must be 'training' or 'reference'")
    if self.parser not in ("training", "reference"):
      raise ValueError(f"protocol {self.name!r}: parser must be 'training' or 'reference'")

  def describe(self) -> str:
    """One line for the summary."""
    if self.frames == "training":
      return f"{self.name} (training frames, prompts and parser; greedy)"
    return (f"{self.name} ({self.fps:g} fps from frame 0, at most {self.max_frames} frames; "
            f"images up to {self.max_pixels} px; greedy, repetition penalty "
            f"{self.repetition_penalty:g}, {self.max_new_tokens} new tokens; reference parsers)")


REGISTRY: dict[str, Protocol] = {
    "training": Protocol("training", None, "training"),
    "vstar_reference": Protocol(
        "vstar_reference", ("vstar",), "reference", prompts=REFERENCE_PROMPTS,
        repetition_penalty=1.05, max_new_tokens=2048, parser="reference"),
    "charades_reference": Protocol(
        "charades_reference", ("charades",), "reference", prompts=REFERENCE_PROMPTS,
        repetition_penalty=1.05, max_new_tokens=2048, parser="reference"),
}
NAMES = tuple(REGISTRY)


def get(name: str, benchmark: str | None = None) -> Protocol:
  """The protocol called `name`; raises when it does not apply to `benchmark`."""
  if name not in REGISTRY:
    raise ValueError(f"unknown eval protocol {name!r}; expected one of {NAMES}")
  protocol = REGISTRY[name]
  allowed = protocol.benchmarks
  if benchmark is not None and allowed is not None and benchmark not in allowed:
    raise ValueError(f"eval protocol {name!r} is for {', '.join(allowed)}, not "
                     f"{benchmark!r}")
  return protocol
