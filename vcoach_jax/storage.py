"""Every file the project reads or writes on a user's path goes through here.

Paths are `etils.epath.Path` (the abstraction orbax and TFDS use), so a work folder, a
checkpoint, metrics or a prepared dataset may live on an object store (`gs://bucket/run`) as well
as on local disk; never `pathlib.Path(user_path)` + `open()`, which turns `gs://b/x` into a local
folder named `gs:`.

Outputs are written to a temporary name beside the target and renamed into place when complete,
so an interrupted or failed write (a kill, a full disk) never leaves a half-written file under
the real name, and a reader sees the old file or the new one:

  storage.write_text(path, text)                 # whole file at once
  with storage.atomic_open(path) as f:           # streamed; renamed on success, removed on error
    for line in lines: f.write(line)
  storage.refuse_same_file(out, inputs, flag="--out")   # before anything is read
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import IO, Iterable, Iterator

from etils import epath

Path = epath.Path
PathLike = epath.PathLike

_REMOTE_PREFIXES = ("gs://", "s3://", "az://", "hf://")


def path(p: PathLike) -> epath.Path:
  """The project's path object for a user path (local or `gs://`, `s3://`, ...).

  A local path is made absolute (a relative one against the current directory); a remote one is
  kept as given."""
  p = epath.Path(p)
  return p if is_remote(p) else epath.Path(os.path.abspath(os.fspath(p)))


def is_remote(p: PathLike) -> bool:
  """True for an object-store path (`gs://`, `s3://`, `az://`, `hf://`)."""
  return os.fspath(p).startswith(_REMOTE_PREFIXES)


def _temp_name(target: epath.Path) -> epath.Path:
  return target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def atomic_open(target: PathLike, mode: str = "w",
                encoding: str | None = "utf-8") -> Iterator[IO]:
  """Opens a temporary file beside `target` for writing; renames it over `target` when the block
  ends normally, removes it when the block raises (the exception propagates). The parent folder
  is created if missing."""
  if mode not in ("w", "wb"):
    raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
  target = path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = _temp_name(target)
  f = tmp.open(mode) if mode == "wb" else tmp.open(mode, encoding=encoding)
  try:
    with f:
      yield f
  except BaseException:
    with contextlib.suppress(OSError):
      tmp.unlink()
    raise
  tmp.replace(target)


def write_text(target: PathLike, text: str) -> None:
  """Writes `text` to `target` atomically (temporary name, then rename)."""
  with atomic_open(target, "w") as f:
    f.write(text)


def write_bytes(target: PathLike, data: bytes) -> None:
  """Writes `data` to `target` atomically (temporary name, then rename)."""
  with atomic_open(target, "wb") as f:
    f.write(data)


def remove_temporaries(folder: PathLike) -> int:
  """Removes temporary files left in `folder` by an interrupted `atomic_open`; returns how many."""
  folder = path(folder)
  if not folder.exists():
    return 0
  n = 0
  for p in folder.glob(".*.tmp-*"):
    with contextlib.suppress(OSError):
      p.unlink()
      n += 1
  return n


def same_file(a: PathLike, b: PathLike) -> bool:
  """True when two paths name the same file (after making local paths absolute and resolving
  links; a local path that does not exist yet is compared by its absolute name)."""
  pa, pb = path(a), path(b)
  if is_remote(pa) or is_remote(pb):
    return os.fspath(pa).rstrip("/") == os.fspath(pb).rstrip("/")
  if pa.exists() and pb.exists():
    return os.path.samefile(os.fspath(pa), os.fspath(pb))
  return os.path.realpath(os.fspath(pa)) == os.path.realpath(os.fspath(pb))


def refuse_same_file(out: PathLike, inputs: Iterable[PathLike], flag: str = "--out") -> None:
  """Raises ValueError when the output path names one of the inputs (checked before any read, so
  writing the output can never truncate its own input)."""
  for inp in inputs:
    if same_file(out, inp):
      raise ValueError(f"{flag} {os.fspath(out)} is the input file {os.fspath(inp)}; "
                       "write the output to another path")


def read_json(p: PathLike, what: str = "file"):
  """Parses the JSON file at `p`; a missing file or invalid JSON is one line naming `what` and
  the path."""
  import json  # pylint: disable=g-import-not-at-top
  try:
    return json.loads(path(p).read_text())
  except FileNotFoundError:
    raise FileNotFoundError(f"{what} {os.fspath(p)} does not exist") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{what} {os.fspath(p)} is not valid JSON: {e}") from None
