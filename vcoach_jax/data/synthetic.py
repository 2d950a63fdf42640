"""The synthetic grounded-video world of the embedded default (docs/design.md §10).

Short clips of named coloured objects ("red ball", "blue cube", ...) that appear, move and
disappear on a plain background. The generator knows every object's box in every frame and when
it is on screen, so it writes records of all six task types in the STGR schema (key frames and
key items included) and a reference reasoning trace in the grounded format for each:

  <think>The red ball is at <obj>red ball</obj><box>[12,30,26,44]</box>at<t>1.5</t>s ...</think>
  <answer>the red ball</answer>

Clips are rendered directly at their model size (sides multiples of 28) and sampled at 2 fps, so
every frame is a sampled frame and no resize is needed; boxes are integer pixels of that frame
(key items, and the stored temporal-spatial trace as in STGR, hold them divided by W, H).
Everything is a function of (seed, index).

Difficulty knobs (`WorldSpec`): distractor objects (and how often they share the asked object's
shape: look-alikes), an occluding grey bar over part of some frames, clip length, object size
and speed. Learnability knobs: `grid` (objects centred in cells of a grid, e.g. the 28-pixel
merged patch, so boxes take few values) and `background` (`gradient`: the background's colour
varies with the position, so a patch's pixels tell where it is).

  world = SyntheticWorld(WorldSpec(seed=0))
  sample = world.sample(7)        # Sample(record, frames [T, H, W, 3] uint8, times [T])
  sample.record["task"], sample.completion   # the reference completion text
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterator, Mapping

import numpy as np

from vcoach_jax.data import records as records_lib

COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230),
           "yellow": (235, 215, 40), "purple": (150, 60, 200), "orange": (245, 140, 30),
           "white": (240, 240, 240), "cyan": (40, 210, 220)}
SHAPES = ("ball", "cube", "triangle", "ring")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
LETTERS = "ABCD"
BACKGROUNDS = ("plain", "gradient")
GRADIENT_BASE, GRADIENT_RISE = 30, 120  # the gradient backdrop: grey 30, + up to 120 red / blue


@dataclasses.dataclass(frozen=True)
class WorldSpec:
  """Knobs of the world; `from_config(config.synthetic)` builds it from a config."""
  seed: int = 0
  height: int = 56  # frame size in pixels (multiples of 28)
  width: int = 84
  fps: float = 2.0  # frames per second of the clips (all frames are sampled)
  min_frames: int = 4  # clip length in frames, even, drawn per clip
  max_frames: int = 8
  min_objects: int = 1  # objects relevant to the question
  max_objects: int = 2
  distractors: int = 1  # extra objects that only get in the way
  occlusion: float = 0.0  # probability that a frame has a grey bar over part of it
  lookalike: float = 0.0  # probability that a distractor has the asked object's shape (`named`:
  # its colour)
  min_size: int = 10  # object side in pixels
  max_size: int = 18
  max_speed: float = 6.0  # pixels per frame
  tasks: tuple[str, ...] = records_lib.TASKS
  # > 0: the frame is cut into square cells of `grid` pixels and each object sits centred in one
  # cell per frame, moving from cell to cell (a box then takes few values: one per cell and
  # size); 0: objects sit anywhere.
  grid: int = 0
  # plain: one colour per clip | gradient: the same backdrop in every clip, brightening to the
  # right (red channel) and downwards (blue channel), so the pixels around an object tell where
  # it is.
  background: str = "plain"
  # The temporal-spatial question names the asked object (colour and shape: its boxes are a
  # look-up) instead of asking which object of a shape shows up first (its colour is the answer).
  named: bool = False
  # How many of the colours (`COLOURS`, in order) and shapes (`SHAPES`) objects are drawn from:
  # fewer names to read and to tell apart.
  colours: int = len(COLOURS)
  shapes: int = len(SHAPES)

  @classmethod
  def from_config(cls, synthetic: Mapping[str, Any]) -> "WorldSpec":
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: synthetic[k] for k in synthetic.keys() if k in fields}
    if "tasks" in values:
      values["tasks"] = tuple(values["tasks"])
    return cls(**values)


@dataclasses.dataclass
class Track:
  """One object: name, colour, shape and its integer pixel box per frame (None when absent)."""
  name: str
  colour: str
  shape: str
  boxes: list[list[int] | None]

  def visible(self) -> list[int]:
    return [i for i, b in enumerate(self.boxes) if b is not None]


@dataclasses.dataclass
class Sample:
  """A record of the world with its pixels and its reference completion."""
  record: dict[str, Any]
  frames: np.ndarray  # uint8 [T, H, W, 3] (T = 1 for a still image)
  times: np.ndarray  # float64 [T] seconds
  completion: str  # <think>reasoning</think>\n<answer>...</answer>

  @property
  def key_frame_images(self) -> list[np.ndarray]:
    """The frames at the record's key frames (already at the frame size)."""
    return [self.frames[kf["idx"]] for kf in self.record["key_frames"]]


def _draw(frame: np.ndarray, shape: str, box: list[int], colour: tuple[int, int, int]) -> None:
  x1, y1, x2, y2 = box
  h, w = y2 - y1, x2 - x1
  yy, xx = np.mgrid[0:h, 0:w]
  cy, cx = (h - 1) / 2, (w - 1) / 2
  r = np.hypot((yy - cy) / max(cy, 1), (xx - cx) / max(cx, 1))
  if shape == "ball":
    mask = r <= 1.0
  elif shape == "ring":
    mask = (r <= 1.0) & (r >= 0.55)
  elif shape == "triangle":
    mask = np.abs(xx - cx) <= (yy + 1) * (w / 2) / h
  else:
    mask = np.ones((h, w), bool)
  frame[y1:y2, x1:x2][mask] = colour


class SyntheticWorld:
  """Deterministic generator of samples: `sample(i)` depends only on (spec.seed, i)."""

  def __init__(self, spec: WorldSpec = WorldSpec()):
    if spec.height % 28 or spec.width % 28:
      raise ValueError(f"synthetic frame size {spec.height}x{spec.width} (HxW) must be multiples "
                       "of 28")
    for task in spec.tasks:
      if task not in records_lib.TASKS:
        raise ValueError(f"synthetic.tasks has unknown task {task!r}; expected {records_lib.TASKS}")
    if spec.background not in BACKGROUNDS:
      raise ValueError(f"synthetic.background must be one of {BACKGROUNDS}, got "
                       f"{spec.background!r}")
    if spec.grid < 0 or (spec.grid and (spec.max_size > spec.grid or spec.height < spec.grid
                                         or spec.width < spec.grid)):
      raise ValueError(f"synthetic.grid {spec.grid} must be 0 or hold the largest object "
                       f"(max_size {spec.max_size}) and fit the {spec.height}x{spec.width} frame")
    if not (1 <= spec.colours <= len(COLOURS) and 1 <= spec.shapes <= len(SHAPES)):
      raise ValueError(f"synthetic.colours {spec.colours} and synthetic.shapes {spec.shapes} must "
                       f"be in 1..{len(COLOURS)} and 1..{len(SHAPES)}")
    self.spec = spec

  # --- scene -----------------------------------------------------------------------------------

  def _tracks(self, rng: np.random.Generator, n_frames: int, n_objects: int,
              still: bool = False, by_colour: bool = False) -> list[Track]:
    s = self.spec
    names = rng.permutation([(c, sh) for c in list(COLOURS)[:s.colours]
                             for sh in SHAPES[:s.shapes]])
    used_shapes, tracks = set(), []
    for colour, shape in names:
      if len(tracks) == n_objects:
        break
      if still and shape in used_shapes:
        continue  # still images name objects by shape alone, so shapes are unique there
      if tracks and not still and s.lookalike > 0 and rng.random() < s.lookalike:
        if by_colour:  # a look-alike: only its shape tells it from the asked one
          if shape == tracks[0].shape:
            continue
          colour = tracks[0].colour
        else:  # a look-alike: only its colour tells it from the asked one
          if colour == tracks[0].colour:
            continue
          shape = tracks[0].shape
      used_shapes.add(shape)
      size = int(rng.integers(s.min_size, s.max_size + 1))
      bw, bh = size, int(np.clip(size + rng.integers(-2, 3), s.min_size, s.max_size))
      x, y = rng.uniform(0, s.width - bw), rng.uniform(0, s.height - bh)
      vx, vy = rng.uniform(-s.max_speed, s.max_speed, 2)
      if still or n_frames <= 2:
        start, end = 0, n_frames - 1
      else:
        start = int(rng.integers(0, n_frames // 2))
        end = int(rng.integers(start + 1, n_frames))
      boxes = []
      for i in range(n_frames):
        if not start <= i <= end:
          boxes.append(None)
          continue
        x = float(np.clip(x + vx * (i > start), 0, s.width - bw))
        y = float(np.clip(y + vy * (i > start), 0, s.height - bh))
        boxes.append(self._box(x, y, bw, bh))
      tracks.append(Track(f"{colour} {shape}", str(colour), str(shape), boxes))
    return tracks

  def _box(self, x: float, y: float, bw: int, bh: int) -> list[int]:
    """The integer box of an object of size (bw, bh) at top-left (x, y); on a grid, centred in
    the cell that (x, y) falls in once its range is spread over the cells."""
    g = self.spec.grid
    if not g:
      return [int(x), int(y), int(x) + bw, int(y) + bh]
    w, h = self.spec.width, self.spec.height
    cx = _cell(x, w - bw, w // g) * g + (g - bw) // 2
    cy = _cell(y, h - bh, h // g) * g + (g - bh) // 2
    return [cx, cy, cx + bw, cy + bh]

  def _render(self, rng: np.random.Generator, tracks: list[Track], n_frames: int) -> np.ndarray:
    s = self.spec
    frames = np.empty((n_frames, s.height, s.width, 3), np.uint8)
    frames[:] = rng.integers(20, 60, 3).astype(np.uint8)
    if s.background == "gradient":  # one fixed ramp: a pixel's colour alone tells where it is
      frames[:] = GRADIENT_BASE
      frames[..., 0] += np.linspace(0, GRADIENT_RISE, s.width).astype(np.uint8)[None, :]
      frames[..., 2] += np.linspace(0, GRADIENT_RISE, s.height).astype(np.uint8)[:, None]
    for i in range(n_frames):
      for t in reversed(tracks):  # the first track (the question's object) ends up on top
        if t.boxes[i] is not None:
          _draw(frames[i], t.shape, t.boxes[i], COLOURS[t.colour])
      if s.occlusion > 0 and rng.random() < s.occlusion:
        x = int(rng.integers(0, s.width - s.width // 4))
        frames[i, :, x:x + s.width // 4] = 128
    return frames

  # --- records ---------------------------------------------------------------------------------

  def sample(self, index: int) -> Sample:
    """The `index`-th sample; its task cycles through `spec.tasks`."""
    s = self.spec
    rng = np.random.default_rng([s.seed, index])
    task = s.tasks[index % len(s.tasks)]
    n_targets = int(rng.integers(s.min_objects, s.max_objects + 1))
    still = task == records_lib.TASK_VQA
    n_frames = 1 if still else 2 * int(rng.integers(max(s.min_frames // 2, 1), s.max_frames // 2 + 1))
    # A named question's look-alikes share the asked object's colour (its name tells it from
    # those sharing its shape); otherwise they share its shape.
    named = task == records_lib.TASK_ST and s.named
    tracks = self._tracks(rng, n_frames, n_targets + s.distractors, still, by_colour=named)
    if task == records_lib.TASK_ST and not named:
      _after_the_target(tracks)
    frames = self._render(rng, tracks, n_frames)
    times = np.arange(n_frames) / s.fps
    target = tracks[0]
    record = {"id": f"syn-{s.seed}-{index}", "task": task, "source": "synthetic",
              "video_path": "" if still else f"synthetic/{s.seed}/{index}",
              "image_path": f"synthetic/{s.seed}/{index}" if still else "",
              "key_frames": [], "key_items": {}, "image_size": [s.width, s.height]}
    build = {
        records_lib.TASK_ST: self._st, records_lib.TASK_TG: self._tg,
        records_lib.TASK_TG_MCQ: self._tg_mcq, records_lib.TASK_VQA: self._vqa,
        records_lib.TASK_MCQ: self._mcq, records_lib.TASK_FREE: self._free}[task]
    question, answer, reasoning, said = build(rng, tracks, target, times, record)
    # The stored trace follows the STGR convention (temporal-spatial boxes normalised to 0..1);
    # the SFT target converts it back to the frame's pixels, which the completion cites.
    stored = _normalised(reasoning, s.width, s.height) if task == records_lib.TASK_ST else reasoning
    record.update(question=question, answer=answer, reasoning_process=stored, sft_answer=said)
    completion = f"<think>{reasoning}</think>\n<answer>{said}</answer>"
    return Sample(records_lib.validate_record(record), frames, times, completion)

  def __iter__(self) -> Iterator[Sample]:
    i = 0
    while True:
      yield self.sample(i)
      i += 1

  def _claim(self, track: Track, i: int, times: np.ndarray) -> str:
    box = ",".join(str(v) for v in track.boxes[i])
    return f"<obj>{track.name}</obj><box>[{box}]</box>at<t>{times[i]:.1f}</t>s"

  def _st(self, rng, tracks, target, times, record):
    vis = target.visible()
    picks = sorted({vis[0], vis[-1]} if len(vis) > 1 else {vis[0]})
    w, h = self.spec.width, self.spec.height
    record["key_frames"] = [{"idx": i, "time": float(times[i]), "path": ""} for i in picks]
    record["key_items"] = {
        str(i): {t.name: [[t.boxes[i][0] / w, t.boxes[i][1] / h, t.boxes[i][2] / w,
                           t.boxes[i][3] / h]]
                 for t in tracks if t.boxes[i] is not None and t is target}
        for i in picks}
    del rng
    region = "left" if target.boxes[vis[0]][0] + target.boxes[vis[0]][2] < w else "right"
    claims = " and then ".join(self._claim(target, i, times) for i in picks)
    if self.spec.named:
      question = (f"Where is the {target.name} when it first shows up, and on which side does "
                  "it start?")
      reasoning = f"I look for the {target.name}. It is {claims}, so it starts on the {region}."
      answer = f"the {target.name} starts on the {region}"
      return question, answer, reasoning, answer
    question = (f"Which {target.shape} shows up first on the {region} side, and what colour is "
                "it?")
    reasoning = (f"I look for a {target.shape} on the {region} side. It is {claims}, so it is "
                 f"the {target.colour} one.")
    answer = f"the {target.name}"
    return question, answer, reasoning, answer

  def _segment(self, target, times):
    vis = target.visible()
    return float(times[vis[0]]), float(times[vis[-1]])

  def _tg(self, rng, tracks, target, times, record):
    del rng, tracks, record
    s, e = self._segment(target, times)
    question = f"When is the {target.name} on screen?"
    reasoning = (f"The {target.name} first appears at <t>{s:.1f}</t>s and is last seen at "
                 f"<t>{e:.1f}</t>s.")
    return question, f"[{s:.1f}, {e:.1f}]", reasoning, f"From <t>{s:.1f}</t>s to <t>{e:.1f}</t>s."

  def _tg_mcq(self, rng, tracks, target, times, record):
    question, segment, reasoning, said = self._tg(rng, tracks, target, times, record)
    s, e = self._segment(target, times)
    options, seen = [(s, e)], {(s, e)}
    while len(options) < 4:
      a = float(times[int(rng.integers(0, len(times)))])
      b = float(times[int(rng.integers(0, len(times)))])
      pair = (min(a, b), max(a, b) + (0.5 if a == b else 0.0))
      if pair not in seen:
        seen.add(pair)
        options.append(pair)
    order = rng.permutation(4)
    letter = LETTERS[int(np.argwhere(order == 0)[0, 0])]
    listed = " ".join(f"{LETTERS[k]}. from {options[j][0]:.1f}s to {options[j][1]:.1f}s."
                      for k, j in enumerate(order))
    return (f"{question} Options: {listed}", f"{letter}\n{segment}", reasoning,
            f"{said}\nCorrect Option: {letter}")

  def _vqa(self, rng, tracks, target, times, record):
    del rng, tracks, times, record
    box = target.boxes[0]
    item = f"<obj>{target.shape}</obj><box>[{','.join(map(str, box))}]</box>"
    reasoning = f"There is one {target.shape} in the image, the {target.colour} one: {item}."
    return f"Where is the {target.shape}?", item, reasoning, item

  def _mcq(self, rng, tracks, target, times, record):
    del times, record, tracks
    others = [c for c in rng.permutation(list(COLOURS)) if c != target.colour][:3]
    options = [target.colour] + list(others)
    order = rng.permutation(4)
    letter = LETTERS[int(np.argwhere(order == 0)[0, 0])]
    listed = " ".join(f"{LETTERS[k]}. {options[j]}" for k, j in enumerate(order))
    question = f"What colour is the {target.shape} in the video? Options: {listed}"
    reasoning = f"The {target.shape} I see is {target.colour}, which is option {letter}."
    return question, letter, reasoning, letter

  def _free(self, rng, tracks, target, times, record):
    del rng, target, times, record
    n = len(tracks)
    names = ", ".join(t.name for t in tracks)
    question = "How many objects appear in the video?"
    answer = f"{NUMBER_WORDS[min(n, 8)]} objects appear"
    return question, answer, f"I count the objects: {names}. That makes {n}.", answer


def _cell(v: float, span: int, n: int) -> int:
  """The cell (0..n-1) of a coordinate `v` in [0, span], cells equally likely."""
  return min(int(v / max(span, 1) * n), n - 1)


def _after_the_target(tracks: list[Track]) -> None:
  """Objects of the asked object's shape (look-alikes) appear only after it does: the
  temporal-spatial question asks for the one of its shape that shows up first, so exactly one
  object fits it (one that would appear no later is hidden until after)."""
  target = tracks[0]
  first = target.visible()[0]
  for t in tracks[1:]:
    if t.shape == target.shape:
      t.boxes[:first + 1] = [None] * (first + 1)


def _normalised(text: str, width: int, height: int) -> str:
  """Pixel boxes of a trace divided by the frame's (W, H), four decimals."""
  def scale(match: re.Match) -> str:
    x1, y1, x2, y2 = (float(v) for v in match.group(1).split(","))
    return "<box>[" + ",".join(f"{v:.4f}" for v in (x1 / width, y1 / height, x2 / width,
                                                        y2 / height)) + "]</box>"
  return re.sub(r"<box>\[([^\]]*)\]</box>", scale, text)


def corpus(spec: WorldSpec = WorldSpec(), n: int = 600) -> Iterator[str]:
  """Text of the first `n` samples (questions, completions): the tiny tokenizer's corpus."""
  world = SyntheticWorld(spec)
  for i in range(n):
    s = world.sample(i)
    yield s.record["question"]
    yield s.completion
