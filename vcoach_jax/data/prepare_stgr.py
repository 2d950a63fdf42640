"""`vcoach prepare`: STGR json + media -> the TFDS dataset of `tfds_stgr`; resumable, several
splits per folder, output local or `gs://` (docs/data.md).

  result = prepare("stgr.json", {"": "/data/media"}, "/data/stgr_tfds",
                   key_frame_roots={"STR_plm": "/data/stgr/plm/kfs"})
  print(result.table())

The output folder OUT holds

  stgr/<VERSION>/             the TFDS dataset, with every split prepared into OUT
  _work/records/KEY.npz       one decoded record that is kept
  _work/records/KEY.skip.json one skipped record: its reason and message
  _work/splits/SPLIT.json     the keys of the split's last complete run; `running` while a run of
                              that split is in progress

KEY is a hash of the record as written in the file, the size and modification time of every
media file it names (video or image, key-frame JPEGs; "missing" for an absent one), the video
config and the dataset version. A rerun reuses every record whose key it finds and evaluates the
others, so fixing a record, adding its missing video or changing `video.*` redoes exactly the
records concerned, and an interrupted run resumes where it stopped. Each run writes the dataset
anew from the work files of every split (no video is decoded again), into a folder beside the
old one that then replaces it. Run one `prepare` at a time on a folder.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import uuid
from typing import Any, Iterator, Mapping

import numpy as np

from vcoach_jax import storage
from vcoach_jax.data import records as records_lib
from vcoach_jax.data import tfds_stgr
from vcoach_jax.data import video as video_lib

log = logging.getLogger(__name__)


def read_json_records(path) -> list[Any]:
  """Records of a JSON array file or a JSONL file; an unparsable JSONL line is kept as an
  Exception object so it can be counted like any bad record."""
  p = storage.path(path)
  if p.is_dir():
    raise ValueError(f"records file {os.fspath(path)} is a folder; expected a JSON array or "
                     "JSONL file")
  if not p.exists():
    raise FileNotFoundError(f"records file {os.fspath(path)} does not exist")
  try:
    text = p.read_text(encoding="utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"records file {os.fspath(path)} is not UTF-8 text: {e}") from None
  if text.lstrip().startswith("["):
    try:
      return json.loads(text)
    except json.JSONDecodeError as e:
      raise ValueError(f"file {os.fspath(path)!r} is not valid JSON: {e}") from None
  out = []
  for n, line in enumerate(text.splitlines(), start=1):
    if line.strip():
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError as e:
        out.append(ValueError(f"file {os.fspath(path)!r} line {n}: not valid JSON: {e}"))
  return out


@dataclasses.dataclass
class PrepareResult:
  written: int
  skipped: collections.Counter
  resumed: int  # verdicts taken from an earlier run of this split that was interrupted
  out_dir: str
  reused: int = 0  # verdicts of unchanged records taken from an earlier, finished run
  clipped: int = 0  # kept records with a box coordinate clipped into 0..1
  split: str = "train"

  def table(self) -> str:
    rows = [("written", self.written)] + sorted(self.skipped.items())
    rows.append(("total", self.written + sum(self.skipped.values())))
    width = max(len(r) for r, _ in rows + [("clipped_box", 0)])
    lines = [f"{'outcome':<{width}}  records", f"{'-' * width}  -------"]
    lines += [f"{r:<{width}}  {n:7d}" for r, n in rows]
    if self.clipped:
      lines.append(f"{'clipped_box':<{width}}  {self.clipped:7d}  (written, with a box coordinate "
                   f"at most {records_lib.BOX_TOLERANCE} outside 0..1 clipped into it)")
    if self.resumed:
      lines.append(f"({self.resumed} records taken from an earlier interrupted run)")
    if self.reused:
      lines.append(f"({self.reused} unchanged records reused from an earlier run)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Work files.


def _stamp(path: str | None) -> Any:
  """(size, mtime in ns) of a media file, or "missing"."""
  if not path:
    return None
  try:
    st = os.stat(path)
  except OSError:
    return "missing"
  return [st.st_size, st.st_mtime_ns]


def record_key(raw: Any, roots: Mapping[str, str], key_frame_roots: Mapping[str, str] | None,
               spec: video_lib.VideoSpec) -> str:
  """The work-file key of one record (see the module docstring)."""
  if isinstance(raw, dict):
    main, keys = tfds_stgr.media_paths(raw, roots, key_frame_roots)
    media = [[p, _stamp(p)] for p in [main] + keys if p]
    content = json.dumps(raw, sort_keys=True, default=repr)
  else:
    media, content = [], repr(raw)
  text = json.dumps({"record": content, "media": media, "video": dataclasses.asdict(spec),
                     "version": tfds_stgr.VERSION}, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_json(path: storage.Path) -> Any:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, ValueError):
    return None


def _manifests(splits_dir: storage.Path) -> dict[str, dict[str, Any]]:
  out = {}
  for p in splits_dir.glob("*.json") if splits_dir.exists() else ():
    m = _read_json(p)
    if isinstance(m, dict):
      out[p.name[:-len(".json")]] = m
  return out


def _write_manifest(splits_dir: storage.Path, split: str, **fields) -> None:
  storage.write_text(splits_dir / f"{split}.json", json.dumps(fields))


def _save_example(path: storage.Path, record: Mapping[str, Any], ex: Mapping[str, Any]) -> None:
  arrays = {k: v for k, v in ex.items() if isinstance(v, (np.ndarray, np.generic))}
  with storage.atomic_open(path, "wb") as f:
    np.savez(f, record=json.dumps(record), **arrays)


def _load_example(path: storage.Path) -> tuple[str, dict[str, Any]]:
  with path.open("rb") as f, np.load(f) as z:
    record = json.loads(str(z["record"]))
    a = {k: z[k] for k in z.files if k != "record"}
  return record["id"], tfds_stgr.example(
      record, a["frames"], a["timestamps"], a["key_frames"], tuple(a["image_size"]),
      tuple(a["image_size_refine"]), float(a["video_sample_fps"]), float(a["video_duration"]))


# ---------------------------------------------------------------------------------------------
# The dataset.


def _recover(out: storage.Path) -> None:
  """Puts back a dataset moved aside by a run interrupted while swapping; removes half-built
  ones, and the work files of the earlier layout (keyed on position and id, never reusable)."""
  work, final = out / "_work", tfds_stgr.dataset_dir(out)
  if not work.exists():
    return
  for p in list(work.glob("*.npz")) + list(work.glob("status.jsonl")):
    with contextlib.suppress(OSError):
      p.unlink()
  for p in sorted(work.glob("old-*")):
    if not final.exists():
      final.parent.mkdir(parents=True, exist_ok=True)
      p.rename(final)
    else:
      p.rmtree()
  for p in work.glob("build-*"):
    p.rmtree()


def _write_dataset(out: storage.Path, splits: Mapping[str, list[str]], progress: bool) -> None:
  """Writes the TFDS dataset of `splits` ({name: work keys}) into a folder beside the old one,
  then swaps it in."""
  records_dir = out / "_work" / "records"

  def generator(keys):
    def gen() -> Iterator[tuple[str, dict[str, Any]]]:
      for key in keys:
        yield key, _load_example(records_dir / f"{key}.npz")[1]
    return gen

  tag = uuid.uuid4().hex[:12]
  staging = out / "_work" / f"build-{tag}"
  with tfds_stgr.tfds_progress(progress):
    tfds_stgr.builder(staging, {name: generator(keys) for name, keys in splits.items()}
                      ).download_and_prepare()
  final = tfds_stgr.dataset_dir(out)
  final.parent.mkdir(parents=True, exist_ok=True)
  old = out / "_work" / f"old-{tag}"
  if final.exists():
    final.rename(old)
  (staging / "stgr" / tfds_stgr.VERSION).rename(final)
  for p in (old, staging):
    if p.exists():
      p.rmtree()


def _collect_garbage(records_dir: storage.Path, manifests: Mapping[str, Mapping[str, Any]]
                     ) -> None:
  """Removes work files no split refers to (records since changed), unless a split's run is in
  progress (its work files are in no manifest yet)."""
  if any(m.get("running") for m in manifests.values()):
    return
  keep = {k for m in manifests.values() for k in m.get("seen", [])}
  for p in records_dir.iterdir():
    if p.name.split(".")[0] not in keep:
      with contextlib.suppress(OSError):
        p.unlink()


# ---------------------------------------------------------------------------------------------
# prepare.


def _verdict(raw, index, key, where, roots, key_frame_roots, spec, records_dir, existing,
             first_index):
  """(status, reason, message, clipped, cached) of one record; writes its work file."""
  if (isinstance(raw, dict) and isinstance(raw.get("id"), (str, int))
      and first_index[str(raw["id"])] != index):
    rid = str(raw["id"])
    return ("skipped", "duplicate_id", f"{where}record id {rid!r}: field 'id' = {rid!r}: "
            f"expected a unique id (record #{first_index[rid]} has it too)", 0, False)
  counts = collections.Counter()
  if f"{key}.npz" in existing:
    records_lib.validate_record(raw, where=where, index=index, counts=counts)
    return "ok", None, None, int(counts["clipped_box"] > 0), True
  if f"{key}.skip.json" in existing:
    entry = _read_json(records_dir / f"{key}.skip.json")
    if isinstance(entry, dict):
      return "skipped", entry["reason"], entry["message"], 0, True
  try:
    if isinstance(raw, Exception):
      raise records_lib.RecordError("bad_json", str(raw))
    record = records_lib.validate_record(raw, where=where, index=index, counts=counts)
    ex = tfds_stgr.decode_record(record, roots, spec, where=where,
                                 key_frame_roots=key_frame_roots)
    _save_example(records_dir / f"{key}.npz", record, ex)
    return "ok", None, None, int(counts["clipped_box"] > 0), False
  except records_lib.RecordError as e:
    storage.write_text(records_dir / f"{key}.skip.json",
                       json.dumps({"reason": e.reason, "message": str(e)}))
    return "skipped", e.reason, str(e), 0, False


def prepare(json_path, roots: Mapping[str, str], out_dir,
            spec: video_lib.VideoSpec = video_lib.VideoSpec(), strict: bool = False,
            progress: bool = True, split: str = "train",
            key_frame_roots: Mapping[str, str] | None = None) -> PrepareResult:
  """Validates and decodes every record, then writes the TFDS dataset; resumable.

  Args:
    json_path: STGR json (array) or jsonl.
    roots: media root per record `source` prefix; the "" entry is the fallback root.
    out_dir: output folder, local or `gs://` (the dataset goes to OUT/stgr/<VERSION>, work
      files to OUT/_work). Other splits already prepared there are kept.
    spec: video constants.
    strict: stop at the first bad record with its message instead of skipping it.
    progress: show progress bars (ours and TFDS's).
    split: the split name to write.
    key_frame_roots: key-frame JPEG root per `source` prefix ("" = fallback); a record with
      none uses its media root.

  Returns:
    Counts written / skipped by reason, clipped, reused.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  if not re.fullmatch(r"[A-Za-z0-9_]+", split):
    raise ValueError(f"--split {split!r}: a split name is letters, digits and '_'")
  raws = read_json_records(json_path)
  out = storage.path(out_dir)
  work = out / "_work"
  records_dir, splits_dir = work / "records", work / "splits"
  records_dir.mkdir(parents=True, exist_ok=True)
  splits_dir.mkdir(parents=True, exist_ok=True)
  _recover(out)
  before = _manifests(splits_dir).get(split, {})
  interrupted = bool(before.get("running"))
  _write_manifest(splits_dir, split, running=True, keys=before.get("keys", []),
                  seen=before.get("seen", []))
  existing = {p.name for p in records_dir.iterdir()}
  where = f"file {os.fspath(json_path)}, "
  first_index = {}
  for index, raw in enumerate(raws):
    if isinstance(raw, dict) and isinstance(raw.get("id"), (str, int)):
      first_index.setdefault(str(raw["id"]), index)
  ok, seen, skipped, clipped, cached = [], [], collections.Counter(), 0, 0
  for index, raw in enumerate(tqdm(raws, desc="prepare", unit="rec", disable=not progress)):
    key = record_key(raw, roots, key_frame_roots, spec)
    status, reason, message, clip, hit = _verdict(raw, index, key, where, roots,
                                                  key_frame_roots, spec, records_dir, existing,
                                                  first_index)
    cached += hit
    if status == "ok":
      ok.append(key)
      clipped += clip
    else:
      if strict:
        raise records_lib.RecordError(reason, message)
      if not hit:
        log.warning("skipping: %s", message)
      skipped[reason] += 1
    seen.append(key)
  if not ok:
    _write_manifest(splits_dir, split, running=False, keys=before.get("keys", []),
                    seen=before.get("seen", []))
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(skipped.items())) or "the file is empty"
    raise ValueError(f"file {os.fspath(json_path)}: no valid record among {len(raws)} ({reasons});"
                     f" nothing written for split {split!r}")
  manifests = _manifests(splits_dir)
  splits = {name: m["keys"] for name, m in manifests.items() if name != split and m.get("keys")}
  splits[split] = ok
  built = work / "dataset.json"  # the splits the dataset in place was written from
  if _read_json(built) != splits or not tfds_stgr.dataset_dir(out).exists():
    _write_dataset(out, splits, progress)
    storage.write_text(built, json.dumps(splits))
  _write_manifest(splits_dir, split, running=False, keys=ok, seen=seen)
  _collect_garbage(records_dir, _manifests(splits_dir))
  return PrepareResult(len(ok), skipped, cached if interrupted else 0, os.fspath(out_dir),
                       reused=0 if interrupted else cached, clipped=clipped, split=split)
