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
import io
import os
import shutil
import tempfile
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


class Appender:
  """Appends text to a file one `write` at a time, each complete on return. A local file is kept
  open in append mode and flushed; an object store cannot append, so a remote file's text is
  kept and the file rewritten whole (temporary name, then rename) at each write."""

  def __init__(self, target: PathLike):
    self.path = path(target)
    self.remote = is_remote(self.path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._parts: list[str] = []
    self._f = None
    if self.remote:
      self._parts.append(self.path.read_text(encoding="utf-8") if self.path.exists() else "")
    else:
      self._f = self.path.open("a", encoding="utf-8")  # pylint: disable=consider-using-with

  def write(self, text: str) -> None:
    if self._f is not None:
      self._f.write(text)
      self._f.flush()
    else:
      self._parts.append(text)
      write_text(self.path, "".join(self._parts))

  def close(self) -> None:
    if self._f is not None:
      self._f.close()
      self._f = None

  def __enter__(self) -> "Appender":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_text(source: PathLike) -> str:
  """The text of a file (local or remote)."""
  return path(source).read_text(encoding="utf-8")


def files_under(folder: PathLike) -> list[str]:
  """Relative names ('a/b.txt') of every file below `folder`, sorted ([] if it is missing)."""
  folder = path(folder)
  out = []
  def visit(d: epath.Path, prefix: str) -> None:
    for child in d.iterdir():
      if child.is_dir():
        visit(child, f"{prefix}{child.name}/")
      else:
        out.append(prefix + child.name)
  if folder.is_dir():
    visit(folder, "")
  return sorted(out)


def copy_tree(src: PathLike, dst: PathLike) -> None:
  """Copies the files under folder `src` into folder `dst` (either may be remote; files are
  replaced atomically)."""
  src, dst = path(src), path(dst)
  for rel in files_under(src):
    write_bytes(dst / rel, (src / rel).read_bytes())


class LocalMirror:
  """A local folder for libraries that only write local files (TensorFlow checkpoints and
  summaries, tokenizers' `save`, safetensors), whose files end up in `target`.

  A local target is used directly (`sync` does nothing). For a remote one the files are written
  to a temporary local folder, copied into `target` by `sync()` and by `close()`, which also
  removes the temporary folder. Only files changed since the last sync are copied."""

  def __init__(self, target: PathLike):
    self.target = path(target)
    self.remote = is_remote(self.target)
    self._sent: dict[str, tuple[int, int]] = {}
    if self.remote:
      self.local = tempfile.mkdtemp(prefix="vcoach-")
    else:
      self.target.mkdir(parents=True, exist_ok=True)
      self.local = os.fspath(self.target)

  def sync(self) -> None:
    if not self.remote:
      return
    for root, _, files in os.walk(self.local):
      for name in files:
        f = os.path.join(root, name)
        st = os.stat(f)
        rel = os.path.relpath(f, self.local)
        if self._sent.get(rel) == (st.st_size, st.st_mtime_ns):
          continue
        dst = self.target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(f, "rb") as src, atomic_open(dst, "wb") as out:  # src: the mirror's own
          shutil.copyfileobj(src, out, 16 << 20)
        self._sent[rel] = (st.st_size, st.st_mtime_ns)

  def close(self, sync: bool = True) -> None:
    if self.remote:
      try:
        if sync:
          self.sync()
      finally:
        shutil.rmtree(self.local, ignore_errors=True)


@contextlib.contextmanager
def local_dir_for(target: PathLike) -> Iterator[str]:
  """A local folder whose files end up in folder `target` when the block ends normally (the
  target itself when local; see `LocalMirror`). On error nothing is copied."""
  mirror = LocalMirror(target)
  ok = False
  try:
    yield mirror.local
    ok = True
  finally:
    mirror.close(sync=ok)


@contextlib.contextmanager
def local_copy(source: PathLike) -> Iterator[str]:
  """A local path holding `source`'s content (a file or a folder): `source` itself when local,
  else a temporary copy, removed when the block ends."""
  source = path(source)
  if not is_remote(source):
    yield os.fspath(source)
    return
  tmp = tempfile.mkdtemp(prefix="vcoach-")
  try:
    local = os.path.join(tmp, source.name)
    if source.is_dir():
      copy_tree(source, local)
    else:
      with open(local, "wb") as f:
        f.write(source.read_bytes())
    yield local
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def write_png(target: PathLike, image) -> None:
  """Writes a PIL image as PNG to `target` atomically (PIL itself writes local files only)."""
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  write_bytes(target, buffer.getvalue())


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
