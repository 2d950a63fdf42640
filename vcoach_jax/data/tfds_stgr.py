"""STGR records + media -> TFDS examples of decoded, resized frames (docs/data.md).

  ds = load("/data/stgr_tfds").as_dataset(split="train")

Each example holds the sampled frames (uint8 [n, h, w, 3], already smart-resized), their
timestamps, the key-frame images resized to the frame size with their times, indices and boxes,
the question, the answer, the task and the metadata the rewards read (`image_size`,
`image_size_refine`, `video_sample_fps`, `video_duration`). Times and rates are float64: a
float32 time can land on the other side of a whole second than the record's, which flips the
rewards' 1-second gates. The train loop never decodes video.

`vcoach prepare` (resumable, several splits per folder) is `vcoach_jax.data.prepare_stgr`;
`prepare` here is the same function. The synthetic world is written through the same builder
(`build_synthetic`).
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from vcoach_jax import storage
from vcoach_jax.data import records as records_lib
from vcoach_jax.data import video as video_lib

VERSION = "1.1.0"  # 1.1.0: float64 times and rates
EVAL_OFFSET = 10 ** 6  # synthetic eval records are world samples from this index on
# The synthetic world's splits (`config.eval.split`): name -> fn(config.synthetic) -> (first
# world sample, count); the splits are seeded apart.
SYNTHETIC_SPLITS = {
    "train": lambda s: (0, s.num_train),
    "eval": lambda s: (EVAL_OFFSET, s.num_eval),
}


def features():
  """The TFDS features of one example."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  image = lambda: tfds.features.Tensor(shape=(None, None, None, 3), dtype=np.uint8,
                                       encoding="zlib")
  # tf.train.Example keeps floats as float32; raw bytes keep a float64 exactly.
  exact = lambda shape: tfds.features.Tensor(shape=shape, dtype=np.float64, encoding="bytes")
  return tfds.features.FeaturesDict({
      "id": tfds.features.Text(), "task": tfds.features.Text(),
      "source": tfds.features.Text(), "question": tfds.features.Text(),
      "answer": tfds.features.Text(), "reasoning_process": tfds.features.Text(),
      "sft_answer": tfds.features.Text(),
      "frames": image(),  # [n, h, w, 3]; n = 1 for a still image
      "timestamps": exact((None,)),
      "key_frames": image(),  # [k, h, w, 3] resized to the frame size
      "key_frame_times": exact((None,)),
      "key_frame_idx": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "key_items": tfds.features.Text(),  # JSON {str(idx): {name: [[x1,y1,x2,y2] 0..1]}}
      "image_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
      "image_size_refine": tfds.features.Tensor(shape=(2,), dtype=np.int32),
      "video_sample_fps": exact(()), "video_duration": exact(()),
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

    # TFDS prints "Downloading and preparing dataset ..." and "... downloaded and prepared to
    # <folder>" on stdout, where the command's summary goes; nothing is downloaded here and the
    # folder named is a staging one, so both stay silent.
    def _log_download_bytes(self):
      pass

    def _log_download_done(self):
      pass

    def _info(self):
      return self.dataset_info_from_configs(features=features())

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(make) for split, make in self._examples.items()}

    def _generate_examples(self, make):
      yield from make()

  return Stgr


_BUILDER = None


def builder(out_dir, examples=None):
  """The TFDS builder writing to / reading from `out_dir` (dataset name `stgr`; local or
  `gs://`)."""
  global _BUILDER
  if _BUILDER is None:
    _BUILDER = _builder_class()
  return _BUILDER(data_dir=storage.path(out_dir), examples=examples)


@contextlib.contextmanager
def tfds_progress(enable: bool):
  """TFDS's own progress bars on or off for the block, then as they were (TFDS keeps the switch
  in a module global with no getter)."""
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top
  before = getattr(tqdm_utils, "_active", True)
  tqdm_utils.display_progress_bar(enable)
  try:
    yield
  finally:
    tqdm_utils.display_progress_bar(before)


def dataset_dir(out_dir) -> "storage.Path":
  """Where `prepare` puts the dataset inside `out_dir`."""
  return storage.path(out_dir) / "stgr" / VERSION


def load(out_dir):
  """A builder over a dataset `prepare` wrote (no class registration needed)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  path = dataset_dir(out_dir)
  if not (path / "dataset_info.json").exists():
    older = sorted(p.name for p in (path.parent.iterdir() if path.parent.is_dir() else ())
                   if (p / "dataset_info.json").exists())
    hint = (f"; it holds an older format ({', '.join(older)}): run `vcoach prepare` again"
            if older else "; run `vcoach prepare` first")
    raise FileNotFoundError(f"{os.fspath(out_dir)!r} has no prepared dataset (expected "
                            f"{os.fspath(path)}){hint}")
  return tfds.builder_from_directory(path)


def root_for(roots: Mapping[str, str], source: str) -> str | None:
  """The root of a record whose `source` is given: among the `SOURCE` keys that `source` equals
  or starts with, the longest; else the fallback (key ""); None when there is neither."""
  best = max((k for k in roots if k and source.startswith(k)), key=len, default=None)
  return roots[best] if best is not None else roots.get("")


def media_paths(record: Mapping[str, Any], roots: Mapping[str, str],
                key_frame_roots: Mapping[str, str] | None = None
                ) -> tuple[str | None, list[str]]:
  """(the video or image path, the key-frame JPEG paths) of a record, joined to their roots;
  the first is None when no root applies. Key-frame JPEGs are relative to the key-frame root
  of the record's source, or to its media root when no key-frame root applies."""
  source = record.get("source") or ""
  root = root_for(roots, source)
  key_root = root_for(key_frame_roots or {}, source)
  key_root = root if key_root is None else key_root
  rel = record.get("image_path") if record.get("task") == records_lib.TASK_VQA else (
      record.get("video_path"))
  main = os.path.join(root, rel) if root is not None and isinstance(rel, str) else None
  keys = []
  for kf in record.get("key_frames") or []:
    path = kf.get("path") if isinstance(kf, dict) else None
    keys.append(os.path.join(key_root, path) if key_root is not None and isinstance(path, str)
                and path else "")
  return main, keys


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
      "frames": frames.astype(np.uint8), "timestamps": np.asarray(times, np.float64),
      "key_frames": np.asarray(key_frames, np.uint8).reshape(-1, h, w, 3),
      "key_frame_times": np.array([kf["time"] for kf in record["key_frames"]], np.float64),
      "key_frame_idx": np.array([kf["idx"] for kf in record["key_frames"]], np.int32),
      "key_items": json.dumps(record["key_items"], sort_keys=True),
      "image_size": np.asarray(size, np.int32), "image_size_refine": np.asarray(refine, np.int32),
      "video_sample_fps": np.float64(sample_fps), "video_duration": np.float64(duration),
  }


def decode_record(record: Mapping[str, Any], roots: Mapping[str, str],
                  spec: video_lib.VideoSpec, where: str = "",
                  key_frame_roots: Mapping[str, str] | None = None) -> dict[str, Any]:
  """Decodes the media of a validated record; raises RecordError (missing/corrupt media...).

  `roots` / `key_frame_roots` map a `source` prefix to a folder ("" = the fallback); see
  `media_paths`."""
  rid = record["id"]

  def fail(reason, field, value, expected):
    raise records_lib.RecordError(
        reason, f"{where}record id {rid!r}: field {field!r} = {value!r}: {expected}", rid)

  path, key_paths = media_paths(record, roots, key_frame_roots)
  if path is None:
    fail("no_media_root", "source", record["source"],
         f"a media root for this source (--media-root {record['source'] or 'SOURCE'}=DIR) or a "
         "fallback --media-root DIR")
  if record["task"] == records_lib.TASK_VQA:
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
  if not os.path.isfile(path):
    fail("missing_media", "video_path", record["video_path"], f"expected a video at {path}")
  try:
    v = video_lib.decode_video(path, spec)
  except ValueError as e:
    fail("corrupt_media", "video_path", record["video_path"], f"undecodable: {e}")
  records_lib.check_against_video(record, v.duration, where=where)
  keys = []
  h, w = v.frames.shape[1:3]
  for i, (kf, kpath) in enumerate(zip(record["key_frames"], key_paths)):
    if kpath and os.path.isfile(kpath):
      from PIL import Image  # pylint: disable=g-import-not-at-top
      try:
        with Image.open(kpath) as im:
          keys.append(video_lib.resize_image_to(np.asarray(im.convert("RGB")), h, w))
      except OSError as e:
        fail("corrupt_media", f"key_frames[{i}].path", kf["path"], f"unreadable image: {e}")
    elif kf["path"]:
      fail("missing_media", f"key_frames[{i}].path", kf["path"],
           f"expected a JPEG at {kpath} (key-frame paths are relative to the record's key-frame "
           "root, --key-frame-root, else to its media root)")
    else:  # no JPEG: the video frame nearest the key frame's time
      keys.append(v.frames[int(np.argmin(np.abs(v.timestamps - kf["time"])))])
  return example(record, v.frames, v.timestamps, np.asarray(keys).reshape(-1, h, w, 3), v.size,
                 v.size, v.sample_fps, v.duration)


def prepare(*args, **kwargs):
  """`vcoach_jax.data.prepare_stgr.prepare` (kept here for callers of the old place)."""
  from vcoach_jax.data import prepare_stgr  # pylint: disable=g-import-not-at-top
  return prepare_stgr.prepare(*args, **kwargs)


def read_json_records(path):
  """`vcoach_jax.data.prepare_stgr.read_json_records`."""
  from vcoach_jax.data import prepare_stgr  # pylint: disable=g-import-not-at-top
  return prepare_stgr.read_json_records(path)


# ---------------------------------------------------------------------------------------------
# The synthetic world.


def synthetic_example(sample, world_spec) -> dict[str, Any]:
  """The feature dict of one synthetic world sample (what the training pipeline reads back)."""
  size = (sample.frames.shape[2], sample.frames.shape[1])
  keys = np.asarray(sample.key_frame_images).reshape(-1, size[1], size[0], 3)
  duration = len(sample.times) / world_spec.fps
  return example(sample.record, sample.frames, sample.times, keys, size, size, world_spec.fps,
                 duration)


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
        yield s.record["id"], synthetic_example(s, world_spec)
    return gen

  b = builder(out_dir, {name: make(*rng) for name, rng in splits.items()})
  b.download_and_prepare()
  return b


def synthetic_splits(synthetic_config) -> dict[str, tuple[int, int]]:
  """{split: (first world sample, count)} of `config.synthetic`."""
  return {name: split(synthetic_config) for name, split in SYNTHETIC_SPLITS.items()}


def synthetic_from_config(config, out_dir: str):
  """The synthetic world of `config.synthetic` as a TFDS dataset in `out_dir`, written there
  first if it is not yet (splits `train` and `eval`, seeded apart); returns a reading builder.
  In a multi-process run process 0 writes it and the others wait for it. Writing takes seconds:
  TFDS's own progress bars stay off (a `--no-progress` run prints none)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from vcoach_jax.parallel import distributed  # pylint: disable=g-import-not-at-top
  done = (dataset_dir(out_dir) / "dataset_info.json").exists()
  if not done and jax.process_index() == 0:
    s = config.synthetic
    with tfds_progress(False):
      build_synthetic(out_dir, synthetic.WorldSpec.from_config(s), synthetic_splits(s))
  distributed.sync(f"synthetic world {out_dir}")
  return load(out_dir)
