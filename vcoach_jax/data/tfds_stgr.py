"""STGR json + media -> a TFDS dataset of decoded, resized frames (`vcoach prepare`, DESIGN.md §6).

  result = prepare("stgr.json", {"": "/data/media"}, "/data/stgr_tfds")
  ds = load("/data/stgr_tfds").as_dataset(split="train")

Each example holds the sampled frames (uint8 [n, h, w, 3], already smart-resized), their
timestamps, the key-frame images resized to the frame size with their times, indices and boxes,
the question, the answer, the task and the metadata the rewards read (`image_size`,
`image_size_refine`, `video_sample_fps`, `video_duration`). The train loop never decodes video.

Two phases, so an interrupted `prepare` resumes: (1) each record is validated, decoded and written
to `OUT/_work/` as one .npz (a verdict line per record goes to `OUT/_work/status.jsonl`); a rerun
skips every record that already has a verdict; (2) the TFDS dataset is written from those files
(TFDS writes to a temporary folder and renames it at the end). Bad records are skipped and
counted by reason, or, with `strict=True`, the first one stops the run with its message.

The synthetic world is available through the same builder (`build_synthetic`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from vcoach_jax.data import records as records_lib
from vcoach_jax.data import video as video_lib

VERSION = "1.0.0"
EVAL_OFFSET = 10 ** 6  # synthetic eval records are world samples from this index on
log = logging.getLogger(__name__)


def features():
  """The TFDS features of one example."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  image = lambda: tfds.features.Tensor(shape=(None, None, None, 3), dtype=np.uint8,
                                       encoding="zlib")
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(), "task": tfds.features.Text(),
      "source": tfds.features.Text(), "question": tfds.features.Text(),
      "answer": tfds.features.Text(), "reasoning_process": tfds.features.Text(),
      "sft_answer": tfds.features.Text(),
      "frames": image(),  # [n, h, w, 3]; n = 1 for a still image
      "timestamps": tfds.features.Tensor(shape=(None,), dtype=np.float32),
      "key_frames": image(),  # [k, h, w, 3] resized to the frame size
      "key_frame_times": tfds.features.Tensor(shape=(None,), dtype=np.float32),
      "key_frame_idx": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "key_items": tfds.features.Text(),  # JSON {str(idx): {name: [[x1,y1,x2,y2] 0..1]}}
      "image_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
      "image_size_refine": tfds.features.Tensor(shape=(2,), dtype=np.int32),
      "video_sample_fps": tfds.features.Tensor(shape=(), dtype=np.float32),
      "video_duration": tfds.features.Tensor(shape=(), dtype=np.float32),
  })


def _builder_class():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top

  class Stgr(tfds.core.GeneratorBasedBuilder):
    """Decoded STGR records (or synthetic-world records) for VisionCoach training."""
    VERSION = tfds.core.Version(VERSION)

    # TFDS looks for a checksums file beside the builder's code through a path check that needs
    # the `importlib_resources` package (not a dependency here); naming the file directly skips it.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      return epath.Path(__file__)

    def __init__(self, *, examples: Mapping[str, Callable[[], Iterable]] | None = None,
                 **kwargs):
      self._examples = examples or {}
      super().__init__(**kwargs)

    def _info(self):
      return self.dataset_info_from_configs(features=features())

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(make) for split, make in self._examples.items()}

    def _generate_examples(self, make):
      yield from make()

  return Stgr


_BUILDER = None


def builder(out_dir: str, examples=None):
  """The TFDS builder writing to / reading from `out_dir` (dataset name `stgr`)."""
  global _BUILDER
  if _BUILDER is None:
    _BUILDER = _builder_class()
  return _BUILDER(data_dir=out_dir, examples=examples)


def load(out_dir: str):
  """A builder over a dataset `prepare` wrote (no class registration needed)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  path = os.path.join(out_dir, "stgr", VERSION)
  if not os.path.isfile(os.path.join(path, "dataset_info.json")):
    raise FileNotFoundError(f"{out_dir!r} has no prepared dataset (expected {path}); run "
                            "`vcoach prepare` first")
  return tfds.builder_from_directory(path)


# ---------------------------------------------------------------------------------------------
# One record -> one example.


def example(record: Mapping[str, Any], frames: np.ndarray, times: np.ndarray,
            key_frames: np.ndarray, size: tuple[int, int], refine: tuple[int, int],
            sample_fps: float, duration: float) -> dict[str, Any]:
  """The feature dict of one record (numpy values)."""
  h, w = frames.shape[1:3]
  return {
      "id": record["id"], "task": record["task"], "source": record["source"],
      "question": record["question"], "answer": record["answer"],
      "reasoning_process": record["reasoning_process"], "sft_answer": record["sft_answer"],
      "frames": frames.astype(np.uint8), "timestamps": np.asarray(times, np.float32),
      "key_frames": np.asarray(key_frames, np.uint8).reshape(-1, h, w, 3),
      "key_frame_times": np.array([kf["time"] for kf in record["key_frames"]], np.float32),
      "key_frame_idx": np.array([kf["idx"] for kf in record["key_frames"]], np.int32),
      "key_items": json.dumps(record["key_items"], sort_keys=True),
      "image_size": np.asarray(size, np.int32), "image_size_refine": np.asarray(refine, np.int32),
      "video_sample_fps": np.float32(sample_fps), "video_duration": np.float32(duration),
  }


def _media(roots: Mapping[str, str], record: Mapping[str, Any], rel: str) -> str:
  root = roots.get(record["source"], roots.get("", ""))
  return os.path.join(root, rel)


def decode_record(record: Mapping[str, Any], roots: Mapping[str, str],
                  spec: video_lib.VideoSpec, where: str = "") -> dict[str, Any]:
  """Decodes the media of a validated record; raises RecordError (missing/corrupt media...)."""
  rid = record["id"]

  def fail(reason, field, value, expected):
    raise records_lib.RecordError(
        reason, f"{where}record id {rid!r}: field {field!r} = {value!r}: {expected}", rid)

  if record["task"] == records_lib.TASK_VQA:
    path = _media(roots, record, record["image_path"])
    if not os.path.isfile(path):
      fail("missing_media", "image_path", record["image_path"], f"expected an image at {path}")
    try:
      image, original = video_lib.load_image(path, spec)
    except ValueError as e:
      fail("corrupt_media", "image_path", record["image_path"], f"unreadable: {e}")
    record = dict(record, image_size=list(original))
    records_lib.validate_record(record, where=where)  # the answer box against the real size
    h, w = image.shape[:2]
    return example(record, image[None], np.zeros(1), np.zeros((0, h, w, 3)), original, (w, h),
                   0.0, 0.0)
  path = _media(roots, record, record["video_path"])
  if not os.path.isfile(path):
    fail("missing_media", "video_path", record["video_path"], f"expected a video at {path}")
  try:
    v = video_lib.decode_video(path, spec)
  except ValueError as e:
    fail("corrupt_media", "video_path", record["video_path"], f"undecodable: {e}")
  records_lib.check_against_video(record, v.duration, where=where)
  keys = []
  h, w = v.frames.shape[1:3]
  for i, kf in enumerate(record["key_frames"]):
    kpath = _media(roots, record, kf["path"]) if kf["path"] else ""
    if kpath and os.path.isfile(kpath):
      from PIL import Image  # pylint: disable=g-import-not-at-top
      try:
        with Image.open(kpath) as im:
          keys.append(video_lib.resize_image_to(np.asarray(im.convert("RGB")), h, w))
      except OSError as e:
        fail("corrupt_media", f"key_frames[{i}].path", kf["path"], f"unreadable image: {e}")
    elif kf["path"]:
      fail("missing_media", f"key_frames[{i}].path", kf["path"], f"expected a JPEG at {kpath}")
    else:  # no JPEG: the video frame nearest the key frame's time
      keys.append(v.frames[int(np.argmin(np.abs(v.timestamps - kf["time"])))])
  return example(record, v.frames, v.timestamps, np.asarray(keys).reshape(-1, h, w, 3), v.size,
                 v.size, v.sample_fps, v.duration)


# ---------------------------------------------------------------------------------------------
# prepare.


def read_json_records(path: str) -> list[Any]:
  """Records of a JSON array file or a JSONL file; an unparsable JSONL line is kept as an
  Exception object so it can be counted like any bad record."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  stripped = text.lstrip()
  if stripped.startswith("["):
    try:
      data = json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"file {path!r} is not valid JSON: {e}") from None
    return data
  out = []
  for n, line in enumerate(text.splitlines(), start=1):
    if line.strip():
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError as e:
        out.append(ValueError(f"file {path!r} line {n}: not valid JSON: {e}"))
  return out


@dataclasses.dataclass
class PrepareResult:
  written: int
  skipped: collections.Counter
  resumed: int  # records whose verdict came from an earlier, interrupted run
  out_dir: str

  def table(self) -> str:
    rows = [("written", self.written)] + sorted(self.skipped.items())
    rows.append(("total", self.written + sum(self.skipped.values())))
    width = max(len(r) for r, _ in rows)
    lines = [f"{'outcome':<{width}}  records", f"{'-' * width}  -------"]
    lines += [f"{r:<{width}}  {n:7d}" for r, n in rows]
    if self.resumed:
      lines.append(f"({self.resumed} records taken from an earlier interrupted run)")
    return "\n".join(lines)


def _key(index: int, raw: Any) -> str:
  rid = raw.get("id") if isinstance(raw, dict) else None
  return hashlib.sha1(f"{index}:{rid!r}".encode()).hexdigest()[:16]


def prepare(json_path: str, roots: Mapping[str, str], out_dir: str,
            spec: video_lib.VideoSpec = video_lib.VideoSpec(), strict: bool = False,
            progress: bool = True, split: str = "train") -> PrepareResult:
  """Validates and decodes every record, then writes the TFDS dataset; resumable.

  Args:
    json_path: STGR json (array) or jsonl.
    roots: media root per record `source`; the "" entry is the default root.
    out_dir: output folder (the dataset goes to OUT/stgr/1.0.0, work files to OUT/_work).
    spec: video constants.
    strict: stop at the first bad record with its message instead of skipping it.
    progress: show a progress bar.
    split: the split name to write.

  Returns:
    Counts written / skipped by reason.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  raws = read_json_records(json_path)
  work = os.path.join(out_dir, "_work")
  os.makedirs(work, exist_ok=True)
  status_path = os.path.join(work, "status.jsonl")
  status = {}
  if os.path.exists(status_path):
    with open(status_path, encoding="utf-8") as f:
      for line in f:
        try:
          entry = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by the interruption: that record is redone
        status[entry["key"]] = entry
  resumed = sum(1 for i, r in enumerate(raws) if _key(i, r) in status)
  where = f"file {json_path}, "
  first_index = {}  # id -> index of its first record
  for index, raw in enumerate(raws):
    if isinstance(raw, dict) and isinstance(raw.get("id"), (str, int)):
      first_index.setdefault(str(raw["id"]), index)
  with open(status_path, "a", encoding="utf-8") as log_file:
    for index, raw in enumerate(tqdm(raws, desc="prepare", unit="rec", disable=not progress)):
      key = _key(index, raw)
      entry = status.get(key)
      if entry and entry["status"] != "ok" and strict:
        raise records_lib.RecordError(entry["reason"], entry["message"])
      if entry and (entry["status"] != "ok" or os.path.exists(os.path.join(work, key + ".npz"))):
        continue
      try:
        if isinstance(raw, Exception):
          raise records_lib.RecordError("bad_json", str(raw))
        record = records_lib.validate_record(raw, where=where, index=index)
        if first_index.setdefault(record["id"], index) != index:
          first = first_index[record["id"]]
          raise records_lib.RecordError(
              "duplicate_id", f"{where}record id {record['id']!r}: field 'id' = "
              f"{record['id']!r}: expected a unique id (record #{first} has it too)", record["id"])
        ex = decode_record(record, roots, spec, where=where)
        tmp = os.path.join(work, key + ".tmp.npz")
        np.savez(tmp, record=json.dumps(record), **{k: v for k, v in ex.items()
                                                    if isinstance(v, (np.ndarray, np.generic))})
        os.replace(tmp, os.path.join(work, key + ".npz"))
        entry = {"key": key, "index": index, "status": "ok", "id": record["id"]}
      except records_lib.RecordError as e:
        if strict:
          raise
        log.warning("skipping: %s", e)
        entry = {"key": key, "index": index, "status": "skipped", "reason": e.reason,
                 "message": str(e)}
      status[key] = entry
      log_file.write(json.dumps(entry) + "\n")
      log_file.flush()

  ok_keys = [(_key(i, r)) for i, r in enumerate(raws) if status[_key(i, r)]["status"] == "ok"]
  skipped = collections.Counter(status[_key(i, r)]["reason"] for i, r in enumerate(raws)
                                if status[_key(i, r)]["status"] != "ok")

  def examples() -> Iterator[tuple[str, dict[str, Any]]]:
    for key in ok_keys:
      with np.load(os.path.join(work, key + ".npz")) as z:
        record = json.loads(str(z["record"]))
        arrays = {k: z[k] for k in z.files if k != "record"}
      yield key, example(record, arrays["frames"], arrays["timestamps"], arrays["key_frames"],
                         tuple(arrays["image_size"]), tuple(arrays["image_size_refine"]),
                         float(arrays["video_sample_fps"]), float(arrays["video_duration"]))

  builder(out_dir, {split: examples}).download_and_prepare()
  return PrepareResult(len(ok_keys), skipped, resumed, out_dir)


def build_synthetic(out_dir: str, world_spec, splits: Mapping[str, tuple[int, int]]):
  """Writes the synthetic world as the same TFDS dataset.

  Args:
    out_dir: output folder.
    world_spec: a `synthetic.WorldSpec`.
    splits: {split name: (first index, count)}, e.g. {"train": (0, 512), "eval": (10**6, 64)}.
  """
  from vcoach_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  world = synthetic.SyntheticWorld(world_spec)

  def make(first, count):
    def gen():
      for i in range(first, first + count):
        s = world.sample(i)
        size = (s.frames.shape[2], s.frames.shape[1])
        keys = np.asarray(s.key_frame_images).reshape(-1, size[1], size[0], 3)
        duration = len(s.times) / world_spec.fps
        yield s.record["id"], example(s.record, s.frames, s.times, keys, size, size,
                                      world_spec.fps, duration)
    return gen

  b = builder(out_dir, {name: make(*rng) for name, rng in splits.items()})
  b.download_and_prepare()
  return b


def synthetic_from_config(config, out_dir: str):
  """The synthetic world of `config.synthetic` as a TFDS dataset in `out_dir`, written there
  first if it is not yet (splits `train` and `eval`, seeded apart); returns a reading builder.
  In a multi-process run process 0 writes it and the others wait for it."""
  import jax  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from vcoach_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  done = os.path.isfile(os.path.join(out_dir, "stgr", VERSION, "dataset_info.json"))
  if not done and jax.process_index() == 0:
    s = config.synthetic
    build_synthetic(out_dir, synthetic.WorldSpec.from_config(s),
                    {"train": (0, s.num_train), "eval": (EVAL_OFFSET, s.num_eval)})
  distributed.sync(f"synthetic world {out_dir}")
  return load(out_dir)
