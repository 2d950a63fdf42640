"""Readers of each benchmark's public annotation format, from local paths, into `EvalItem`s.

  items = loaders.load("vstar", "V_STaR_test.json", video_dir="videos/")
  items = loaders.synthetic_items(config, split="eval")

Formats (what the public releases look like; assumptions are named where the format is not
pinned down by a spec):
- V-STAR: a JSON list; each entry has vid, domain, fps, width, height, frame_count, question,
  answer, temporal_question, timestamps [start, end] (seconds), spatial_question,
  spatial_question_2 and bboxes, either `[{"timestamp", "frame_index", "xmin", "ymin", "xmax",
  "ymax"}]` (the preprocessed test file) or `[{"<timestamp>_<frame_index>": {"xmin", ...}}]`
  (the raw release). Boxes are pixels of the original video. Video: `<video_dir>/<vid>.mp4`.
- Charades-STA: text lines `vid start end##sentence` (charades_sta_test.txt); id `vid_<line>`.
- VideoMME: rows (json list, jsonl or parquet) with video_id, videoID (the file name), question_id,
  question, options (`"A. text"`), answer (a letter), duration (short/medium/long), domain,
  task_type (the category).
- WorldSense: worldsense_qa.json, `{video_id: {domain, duration?, task0: {question, candidates,
  answer, task_type, task_domain}, task1: ...}}` (the layout the reference loader reads; the
  per-video domain and duration fields are optional).
- VideoMMMU: rows with id, question, options (plain texts), answer, question_type
  (`multiple-choice` or open); the category is the row's `category`/`track` or else the file's
  stem (the release ships one file per track: Perception, Comprehension, Adaptation).
- PerceptionTest: the mc_question JSON `{video_id: {metadata: {...}, mc_question: [{id,
  question, options, answer_id, area, reasoning}]}}`, or flat rows with video_name,
  question_id, options, answer_id, area, reasoning (the parquet release). Category is the area,
  domain the reasoning type.

A malformed file raises ValueError naming the file, the item and the field.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
from typing import Any, Callable, Mapping, Sequence

from vcoach_jax import storage
from vcoach_jax.evaluation.items import (  # pylint: disable=g-importing-member
    BENCHMARKS, EvalItem, Request, TASK_VSTAR)
from vcoach_jax.evaluation.judge import LETTERS
from vcoach_jax.rewards import targets as targets_lib

__all__ = ["EvalItem", "Request", "load", "load_vstar", "load_charades", "load_videomme",
           "load_worldsense", "load_videommmu", "load_perceptiontest", "synthetic_items",
           "synthetic_index"]

_LETTER_PREFIX = re.compile(r"^\s*\(?([A-J])[.):]\s*")


def _fail(path, item, field: str, value: Any, expected: str):
  shown = json.dumps(value, default=str)
  shown = shown if len(shown) <= 100 else shown[:97] + "..."
  raise ValueError(f"{path}: item {item!r}: field {field!r} = {shown}: expected {expected}")


def _num(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _get(path, item, row: Mapping[str, Any], field: str, kind: type | tuple = str,
         expected: str = "a string") -> Any:
  if not isinstance(row, Mapping):
    _fail(path, item, "(entry)", row, "a JSON object")
  if field not in row:
    _fail(path, item, field, None, f"{expected} (the field is missing)")
  value = row[field]
  ok = _num(value) if kind is float else isinstance(value, kind) and not isinstance(value, bool)
  if not ok:
    _fail(path, item, field, value, expected)
  return value


def read_json(path) -> Any:
  """A .json / .jsonl / .parquet file as Python data (parquet needs pyarrow)."""
  path = storage.path(path)
  if not path.is_file():
    raise FileNotFoundError(f"annotation file {path} does not exist")
  if path.suffix == ".parquet":
    try:
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ValueError(f"{path}: reading parquet needs pyarrow; install it or convert the file "
                       "to JSON lines") from None
    return pq.read_table(path).to_pylist()
  text = path.read_text(encoding="utf-8")
  if path.suffix == ".jsonl":
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
      if line.strip():
        try:
          rows.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
    return rows
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def _rows(path) -> list[Any]:
  data = read_json(path)
  if not isinstance(data, list):
    _fail(path, "(file)", "(top level)", type(data).__name__, "a list of entries")
  return data


def _unique(path, items: list[EvalItem]) -> list[EvalItem]:
  seen = set()
  for item in items:
    if item.id in seen:
      _fail(path, item.id, "id", item.id, "ids unique within the file")
    seen.add(item.id)
  return items


def _video(video_dir, name: str) -> str:
  return os.path.join(str(video_dir), f"{name}.mp4") if video_dir is not None else f"{name}.mp4"


def _options(path, item, value: Any, field: str = "options") -> tuple[str, ...]:
  if isinstance(value, str):  # some releases store the list as its repr
    try:
      value = json.loads(value.replace("'", '"'))
    except json.JSONDecodeError:
      _fail(path, item, field, value, "a list of option strings")
  if not isinstance(value, list) or len(value) < 2 or not all(isinstance(o, str) for o in value):
    _fail(path, item, field, value, "a list of at least two option strings")
  if len(value) > len(LETTERS):
    _fail(path, item, field, value, f"at most {len(LETTERS)} options")
  return tuple(_LETTER_PREFIX.sub("", o, count=1).strip() for o in value)


def _letter(path, item, value: Any, options: Sequence[str], field: str = "answer") -> str:
  letters = LETTERS[:len(options)]
  if not isinstance(value, str) or value.strip().rstrip(".").strip("()") not in letters:
    _fail(path, item, field, value, f"one of the option letters {list(letters)}")
  return value.strip().rstrip(".").strip("()")


def _box(path, item, field, value) -> tuple[float, float, float, float]:
  names = ("xmin", "ymin", "xmax", "ymax")
  if not isinstance(value, Mapping) or not all(_num(value.get(k)) for k in names):
    _fail(path, item, field, value, "an object with numbers xmin, ymin, xmax, ymax")
  return tuple(float(value[k]) for k in names)


def _vstar_boxes(path, item, value) -> tuple[tuple[float, tuple[float, ...]], ...]:
  if not isinstance(value, list) or not value:
    _fail(path, item, "bboxes", value, "a non-empty list of boxes")
  out = []
  for i, entry in enumerate(value):
    field = f"bboxes[{i}]"
    if isinstance(entry, Mapping) and "timestamp" in entry:
      if not _num(entry["timestamp"]):
        _fail(path, item, f"{field}.timestamp", entry["timestamp"], "a number of seconds")
      out.append((float(entry["timestamp"]), _box(path, item, field, entry)))
    elif isinstance(entry, Mapping) and len(entry) == 1:
      (key, box), = entry.items()
      try:
        t = float(str(key).split("_")[0])
      except ValueError:
        _fail(path, item, field, key, 'a key "<timestamp>_<frame index>"')
      out.append((t, _box(path, item, f"{field}[{key!r}]", box)))
    else:
      _fail(path, item, field, entry, '{"timestamp", "xmin", ...} or {"<t>_<frame>": {...}}')
  return tuple(sorted(out, key=lambda p: p[0]))


def load_vstar(path, video_dir=None) -> list[EvalItem]:
  """V-STAR (see the module docstring); `video_dir` defaults to the file's folder."""
  video_dir = pathlib.Path(path).parent if video_dir is None else video_dir
  items = []
  for index, row in enumerate(_rows(path)):
    rid = row.get("id", f"{row.get('vid')}_{index}") if isinstance(row, Mapping) else f"#{index}"
    vid = _get(path, rid, row, "vid", (str, int), "a video id")
    fps, frames = (_get(path, rid, row, k, float, "a positive number") for k in ("fps", "frame_count"))
    w, h = (_get(path, rid, row, k, float, "a positive number") for k in ("width", "height"))
    if fps <= 0 or frames <= 0 or w <= 0 or h <= 0:
      _fail(path, rid, "fps/frame_count/width/height", [fps, frames, w, h], "positive numbers")
    ts = row.get("timestamps")
    if not (isinstance(ts, list) and len(ts) == 2 and all(map(_num, ts)) and ts[0] <= ts[1]):
      _fail(path, rid, "timestamps", ts, "[start, end] in seconds with start <= end")
    questions = {k: _get(path, rid, row, f, str) for k, f in (
        ("when", "temporal_question"), ("where", "spatial_question"),
        ("where_2", "spatial_question_2"))}
    questions["object"] = str(row.get("object") or "")
    items.append(EvalItem(
        id=str(rid), benchmark="vstar", video=_video(video_dir, str(vid)),
        question=_get(path, rid, row, "question"), task=TASK_VSTAR,
        answer=_get(path, rid, row, "answer"), segment=(float(ts[0]), float(ts[1])),
        boxes=_vstar_boxes(path, rid, row.get("bboxes")), box_size=(int(w), int(h)),
        domain=str(row.get("domain") or ""), duration=round(frames / fps, 2),
        questions=questions))
  return _unique(path, items)


def load_charades(path, video_dir=None) -> list[EvalItem]:
  """Charades-STA `vid start end##sentence` lines; `video_dir` defaults to the file's folder."""
  path = storage.path(path)
  if not path.is_file():
    raise FileNotFoundError(f"annotation file {path} does not exist")
  video_dir = path.parent if video_dir is None else video_dir
  items = []
  for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
    if not line.strip():
      continue
    head, sep, sentence = line.partition("##")
    parts = head.split()
    rid = f"{parts[0]}_{n}" if parts else f"line {n}"
    if not sep or not sentence.strip():
      _fail(path, rid, "sentence", line, '"vid start end##sentence"')
    if len(parts) != 3:
      _fail(path, rid, "vid start end", head, "three space-separated fields")
    try:
      start, end = float(parts[1]), float(parts[2])
    except ValueError:
      _fail(path, rid, "start/end", parts[1:], "numbers of seconds")
    if not 0 <= start <= end:
      _fail(path, rid, "start/end", [start, end], "0 <= start <= end")
    items.append(EvalItem(id=rid, benchmark="charades", video=_video(video_dir, parts[0]),
                          question=sentence.strip(), task=targets_lib.TASK_TG,
                          segment=(start, end)))
  return _unique(path, items)


def _mcq_item(path, benchmark, rid, video, question, options, answer, **fields) -> EvalItem:
  return EvalItem(id=str(rid), benchmark=benchmark, video=video, question=question,
                  task=targets_lib.TASK_MCQ, options=options,
                  answer=_letter(path, rid, answer, options), **fields)


def load_videomme(path, video_dir=None) -> list[EvalItem]:
  """VideoMME rows (see the module docstring)."""
  video_dir = pathlib.Path(path).parent if video_dir is None else video_dir
  items = []
  for index, row in enumerate(_rows(path)):
    rid = row.get("question_id", f"#{index}") if isinstance(row, Mapping) else f"#{index}"
    name = row.get("videoID") or _get(path, rid, row, "video_id", (str, int), "a video id")
    options = _options(path, rid, _get(path, rid, row, "options", (list, str), "a list"))
    items.append(_mcq_item(
        path, "videomme", rid, _video(video_dir, str(name)), _get(path, rid, row, "question"),
        options, row.get("answer"), category=str(row.get("task_type") or ""),
        domain=str(row.get("domain") or ""), length=str(row.get("duration") or "")))
  return _unique(path, items)


def load_worldsense(path, video_dir=None) -> list[EvalItem]:
  """WorldSense worldsense_qa.json (see the module docstring)."""
  video_dir = pathlib.Path(path).parent if video_dir is None else video_dir
  data = read_json(path)
  if not isinstance(data, Mapping):
    _fail(path, "(file)", "(top level)", type(data).__name__, "an object {video id: entry}")
  items = []
  for vid, entry in data.items():
    if not isinstance(entry, Mapping):
      _fail(path, vid, "(entry)", entry, "an object with task0, task1, ...")
    tasks = sorted((k for k in entry if re.fullmatch(r"task\d+", k)), key=lambda k: int(k[4:]))
    if not tasks:
      _fail(path, vid, "task0", None, "at least one task entry task0, task1, ...")
    duration = entry.get("duration")
    for key in tasks:
      rid, task = f"{vid}_{key}", entry[key]
      options = _options(path, rid, _get(path, rid, task, "candidates", (list, str), "a list"),
                         "candidates")
      items.append(_mcq_item(
          path, "worldsense", rid, _video(video_dir, str(entry.get("video_id", vid))),
          _get(path, rid, task, "question"), options, task.get("answer"),
          category=str(task.get("task_type") or ""), domain=str(entry.get("domain") or ""),
          duration=float(duration) if _num(duration) else 0.0))
  return _unique(path, items)


def load_videommmu(path, video_dir=None) -> list[EvalItem]:
  """VideoMMMU rows; open questions are judged free-form (see the module docstring)."""
  video_dir = pathlib.Path(path).parent if video_dir is None else video_dir
  items = []
  for index, row in enumerate(_rows(path)):
    rid = row.get("id", f"#{index}") if isinstance(row, Mapping) else f"#{index}"
    rid = _get(path, rid, row, "id", (str, int), "an id")
    category = str(row.get("category") or row.get("track") or pathlib.Path(path).stem)
    question = _get(path, rid, row, "question")
    if row.get("question_type", "multiple-choice") == "multiple-choice":
      options = _options(path, rid, _get(path, rid, row, "options", (list, str), "a list"))
      items.append(_mcq_item(path, "videommmu", rid, _video(video_dir, str(rid)), question,
                             options, row.get("answer"), category=category))
    else:
      items.append(EvalItem(id=str(rid), benchmark="videommmu", video=_video(video_dir, str(rid)),
                            question=question, task=targets_lib.TASK_FREE,
                            answer=str(_get(path, rid, row, "answer", (str, int, float), "an answer")),
                            category=category))
  return _unique(path, items)


def load_perceptiontest(path, video_dir=None) -> list[EvalItem]:
  """PerceptionTest multiple-choice questions (see the module docstring)."""
  video_dir = pathlib.Path(path).parent if video_dir is None else video_dir
  data = read_json(path)
  rows = []
  if isinstance(data, Mapping):  # {video_id: {metadata, mc_question: [...]}}
    for vid, entry in data.items():
      questions = entry.get("mc_question") if isinstance(entry, Mapping) else None
      if not isinstance(questions, list):
        _fail(path, vid, "mc_question", questions, "a list of questions")
      rows += [(vid, q) for q in questions]
  elif isinstance(data, list):
    rows = [(r.get("video_name") if isinstance(r, Mapping) else None, r) for r in data]
  else:
    _fail(path, "(file)", "(top level)", type(data).__name__, "an object or a list")
  items = []
  for index, (vid, q) in enumerate(rows):
    qid = q.get("id", q.get("question_id", index)) if isinstance(q, Mapping) else index
    rid = f"{vid}_{qid}"
    if not isinstance(vid, str) or not vid:
      _fail(path, rid, "video_name", vid, "a video name")
    options = _options(path, rid, _get(path, rid, q, "options", (list, str), "a list"))
    answer_id = q.get("answer_id")
    if not isinstance(answer_id, int) or isinstance(answer_id, bool) or not (
        0 <= answer_id < len(options)):
      _fail(path, rid, "answer_id", answer_id, f"an option index 0..{len(options) - 1}")
    items.append(_mcq_item(path, "perceptiontest", rid, _video(video_dir, vid),
                           _get(path, rid, q, "question"), options, LETTERS[answer_id],
                           category=str(q.get("area") or ""),
                           domain=str(q.get("reasoning") or "")))
  return _unique(path, items)


LOADERS: dict[str, Callable[..., list[EvalItem]]] = {
    "vstar": load_vstar, "charades": load_charades, "videomme": load_videomme,
    "worldsense": load_worldsense, "videommmu": load_videommmu,
    "perceptiontest": load_perceptiontest,
}


def load(benchmark: str, path, video_dir=None) -> list[EvalItem]:
  """The items of `benchmark` (a name of BENCHMARKS other than synthetic) from `path`."""
  if benchmark not in LOADERS:
    raise ValueError(f"unknown benchmark {benchmark!r}; expected one of {list(BENCHMARKS)}")
  return LOADERS[benchmark](path, video_dir)


# --- the synthetic world as a benchmark -----------------------------------------------------------


def _synthetic_item(record: Mapping[str, Any], duration: float) -> EvalItem:
  """V-STAR-style ground truth of one world record: answer, segment, boxes (as applicable)."""
  from vcoach_jax.data import records as records_lib  # pylint: disable=g-import-not-at-top
  task, answer = record["task"], record["answer"]
  w, h = record["image_size"]
  gt_answer, segment, boxes = "", None, ()
  if task in (targets_lib.TASK_ST, targets_lib.TASK_FREE, targets_lib.TASK_MCQ):
    gt_answer = answer
  if task == targets_lib.TASK_TG_MCQ:
    gt_answer, _, seg_text = answer.partition("\n")
    segment = records_lib.parse_segment(seg_text)
  if task == targets_lib.TASK_TG:
    segment = records_lib.parse_segment(answer)
  if task == targets_lib.TASK_ST:
    boxes = tuple(
        (kf["time"], (b[0] * w, b[1] * h, b[2] * w, b[3] * h))
        for kf in record["key_frames"]
        for obj_boxes in record["key_items"][str(kf["idx"])].values() for b in obj_boxes)
  if task == targets_lib.TASK_VQA:
    boxes = ((0.0, tuple(float(v) for v in records_lib.answer_box(answer))),)
  return EvalItem(id=record["id"], benchmark="synthetic", video="", question=record["question"],
                  task=task, answer=gt_answer, segment=segment, boxes=boxes, box_size=(w, h),
                  category=task, domain="synthetic", duration=duration, record=dict(record))


def synthetic_items(config, split: str = "eval") -> list[EvalItem]:
  """The synthetic world's `split` (`eval`: the held-out records; `train`) as EvalItems.

  The same records `data.tfds_stgr.synthetic_from_config` writes for that split; pixels are
  regenerated from the id by `SyntheticWorld(spec).sample(synthetic_index(item))`.
  """
  from vcoach_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tfds_stgr  # pylint: disable=g-import-not-at-top
  s = config.synthetic
  splits = tfds_stgr.synthetic_splits(s)
  if split not in splits:
    raise ValueError(f"unknown synthetic split {split!r}; expected one of {list(splits)}")
  spec = synthetic.WorldSpec.from_config(s)
  world = synthetic.SyntheticWorld(spec)
  first, count = splits[split]
  items = []
  for i in range(first, first + count):
    sample = world.sample(i)
    items.append(_synthetic_item(sample.record, len(sample.times) / spec.fps))
  return items


def synthetic_index(item: EvalItem) -> int:
  """The world index of a synthetic item (its id is `syn-<seed>-<index>`)."""
  return int(item.id.rsplit("-", 1)[1])
