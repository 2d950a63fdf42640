"""What a checkpoint step promises about itself, and the checks that hold it to it.

At save, three things are recorded:
  * array checksums: for every array of the saved tree (params, optimizer state, rng), two 32-bit
    sums of its raw bits weighted by position, computed on device (exact under any sharding,
    since integer sums modulo 2^32 do not depend on the reduction order). They travel inside the
    step as the orbax item `manifest`.
  * the data position's files (small): size and sha256, in the same item.
  * the step folder's files and sizes, listed once the step is committed (`files.json` in the
    step folder; a listing, nothing is read back).
At restore, a missing or resized file, a data-position file whose hash differs, an array whose
checksum differs, or a non-finite floating array is a `CheckpointError` naming the step and the
file or array, in one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp

from vcoach_jax import storage

FILES_NAME = "files.json"


class CheckpointError(ValueError):
  """A checkpoint step that cannot be trusted or read; the message names the step and file."""


# TensorStore's errors cite the OS's reason mid-line ("...to file 19: No space left on device
# [os_error_code='28']"), sometimes before a page of spec.
_OS_REASON = re.compile(r"[^:\[\]\"]+ \[os_error_code='\d+'\]")


def first_line(error: BaseException) -> str:
  """The first non-empty line of an exception's message (library errors can run to pages)."""
  for line in str(error).splitlines():
    line = line.strip()
    if line:  # a long line keeps its start (what failed), the OS's reason and its end
      if len(line) <= 320:
        return line
      cut = line[180:-130]
      os_reason = _OS_REASON.search(cut)
      middle = f" ... {os_reason.group(0).strip()}" if os_reason else ""
      return f"{line[:180]}{middle} ... {line[-130:]}"
  return type(error).__name__


def describe_read_error(error: BaseException) -> str:
  """One line for an exception raised while reading a step: TensorStore's names the array and
  the folder in a multi-page spec; other errors give their first line."""
  text = str(error)
  paths = re.findall(r"'path': '([^']*)'", text)
  arrays = [p for p in paths if p and not p.startswith("/") and "://" not in p]
  folders = [p for p in paths if p.startswith("/") or "://" in p]
  if "TensorStore" in text and arrays:
    where = f" in {folders[0].rstrip('/')}" if folders else ""
    return (f"array {arrays[-1].rstrip('/')} could not be read{where} (a data file is missing, "
            "truncated or damaged)")
  return first_line(error)


def _name(path) -> str:
  """'train/params/lm_head/kernel' for a pytree key path."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(p for p in parts if p != "value")


def _bits(x: jax.Array) -> jax.Array:
  """The raw bits of `x` as a flat uint32 vector (one element per 1/2/4-byte value, two per
  8-byte value)."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32).reshape(-1)
  size = x.dtype.itemsize
  if size in (1, 2):
    unsigned = jnp.uint8 if size == 1 else jnp.uint16
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).reshape(-1)
  return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)


def _sums(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  u = _bits(x)
  i = jnp.arange(u.size, dtype=jnp.uint32)
  a = jnp.sum(u * (i * jnp.uint32(2654435761) + jnp.uint32(1)), dtype=jnp.uint32)
  b = jnp.sum(u ^ (i * jnp.uint32(40503) + jnp.uint32(7)), dtype=jnp.uint32)
  finite = jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
  return a, b, finite


@jax.jit
def _all_sums(tree):
  return jax.tree.map(_sums, tree)


def array_report(tree: Any) -> dict[str, tuple[str, bool]]:
  """`{array name: (checksum hex, all finite)}` for every array of `tree`."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  arrays = [jnp.asarray(x) for _, x in leaves]
  # One jitted program per device set: a state may mix mesh-placed arrays with single-device
  # ones (an rng key), which one jit call refuses.
  groups: dict[Any, list[int]] = {}
  for i, x in enumerate(arrays):
    groups.setdefault(frozenset(d.id for d in x.devices()), []).append(i)
  sums: list[Any] = [None] * len(arrays)
  for idx in groups.values():
    for i, s in zip(idx, jax.device_get(_all_sums([arrays[i] for i in idx]))):
      sums[i] = s
  return {_name(p): (f"{int(a):08x}{int(b):08x}", bool(f))
          for (p, _), (a, b, f) in zip(leaves, sums)}


def checksums(tree: Any) -> dict[str, str]:
  return {name: c for name, (c, _) in array_report(tree).items()}


def check_arrays(tree: Any, saved: dict[str, str] | None, where: str) -> None:
  """Raises CheckpointError naming the first array whose checksum differs from `saved` (when
  given) or that holds a NaN or an infinity."""
  for name, (c, finite) in array_report(tree).items():
    if saved is not None and name in saved and saved[name] != c:
      raise CheckpointError(f"{where}: array {name} does not match the checksum written at "
                            f"save ({saved[name]}, read {c}); its data file is corrupt")
    if not finite:
      raise CheckpointError(f"{where}: array {name} holds NaN or infinite values")


def file_digest(p) -> dict[str, Any]:
  data = storage.path(p).read_bytes()
  return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def data_files(folder) -> dict[str, dict[str, Any]]:
  """`{name: {size, sha256}}` of the data position's files in `folder`."""
  return {rel: file_digest(storage.path(folder) / rel) for rel in storage.files_under(folder)}


def check_data_files(folder, saved: dict[str, dict[str, Any]], where: str) -> None:
  for rel, want in saved.items():
    p = storage.path(folder) / rel
    if not p.exists():
      raise CheckpointError(f"{where}: data-position file {p} is missing")
    got = file_digest(p)
    if got != want:
      raise CheckpointError(f"{where}: data-position file {p} is corrupt or truncated "
                            f"({got['size']} bytes, {want['size']} written)")


def write_file_list(step_dir) -> None:
  """Records the committed step folder's files and sizes in `files.json`."""
  step_dir = storage.path(step_dir)
  sizes = {rel: (step_dir / rel).stat().length for rel in storage.files_under(step_dir)
           if rel != FILES_NAME}
  storage.write_text(step_dir / FILES_NAME, json.dumps({"files": sizes}, indent=0))


def check_file_list(step_dir, where: str) -> None:
  """Every file listed at save is present with its size (a step without a list, written by an
  older version or killed right after its commit, is not checked here)."""
  step_dir = storage.path(step_dir)
  listing = step_dir / FILES_NAME
  if not listing.exists():
    return
  try:
    sizes = json.loads(listing.read_text())["files"]
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"{where}: {listing} is unreadable ({first_line(e)})") from None
  for rel, size in sizes.items():
    p = step_dir / rel
    if not p.exists():
      raise CheckpointError(f"{where}: file {os.fspath(p)} is missing")
    got = p.stat().length
    if got != size:
      raise CheckpointError(f"{where}: file {os.fspath(p)} has {got} bytes, {size} were "
                            "written (truncated or overwritten)")
