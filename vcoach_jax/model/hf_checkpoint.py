"""Hugging Face Qwen2.5-VL checkpoints <-> the NNX model.

`load_hf` builds the model abstractly (`nnx.eval_shape`), checks every tensor name and shape in
the safetensors headers against it (one error listing all missing / unexpected names and shape
mismatches), then builds each parameter with `jax.make_array_from_callback` from its
memory-mapped tensor: a process reads only the slices its own devices hold, so neither the whole
model nor (on a multi-host mesh) a whole sharded tensor ever sits in one host buffer. `save_hf`
writes config.json and safetensors (sharded with an index above `max_shard_bytes`) that
transformers loads, streaming one shard at a time.

The name table `_RULES` maps HF names to NNX paths; linear weights are transposed to `[in, out]`
and the Conv3d patch embedding is flattened to a `[C*Tp*P*P, D]` matrix.
"""

from __future__ import annotations

import json
import mmap
import os
import pathlib
import re
import struct
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from vcoach_jax import storage
from vcoach_jax.model import layers as lyr
from vcoach_jax.model.config import ModelConfig
from vcoach_jax.model.qwen2_5_vl import Qwen2_5_VL
from vcoach_jax.parallel import distributed
from vcoach_jax.parallel import mesh as mesh_lib

# (HF name regex, NNX dotted path template, transform). First match wins.
_RULES: tuple[tuple[str, str, str | None], ...] = (
    (r"visual\.patch_embed\.proj\.weight", "visual.patch_embed.kernel", "patch"),
    (r"visual\.merger\.mlp\.(\d)\.weight", r"visual.merger.mlp_\1.kernel", "T"),
    (r"visual\.merger\.mlp\.(\d)\.bias", r"visual.merger.mlp_\1.bias", None),
    (r"(.*\.(?:norm1|norm2|ln_q|input_layernorm|post_attention_layernorm|norm))\.weight",
     r"\1.weight", None),
    (r"model\.embed_tokens\.weight", "model.embed_tokens", None),
    (r"(.*)\.weight", r"\1.kernel", "T"),
    (r"(.*)\.bias", r"\1.bias", None),
)

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
           "BOOL": np.bool_}
_DTYPE_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class CheckpointError(ValueError):
  """A checkpoint folder that does not fit the model its config.json describes."""


def hf_to_path(name: str) -> tuple[tuple[str | int, ...], str | None] | None:
  """HF tensor name -> (NNX path, transform) or None when no rule matches."""
  for pattern, template, transform in _RULES:
    if re.fullmatch(pattern, name):
      dotted = re.sub(pattern, template, name)
      return tuple(int(p) if p.isdigit() else p for p in dotted.split(".")), transform
  return None


def path_to_hf(path: tuple[str | int, ...]) -> tuple[str, str | None]:
  """NNX path -> (HF name, transform of the forward direction)."""
  dotted = ".".join(str(p) for p in path)
  if dotted == "visual.patch_embed.kernel":
    return "visual.patch_embed.proj.weight", "patch"
  if dotted == "model.embed_tokens":
    return "model.embed_tokens.weight", None
  dotted = re.sub(r"merger\.mlp_(\d)", r"merger.mlp.\1", dotted)
  if dotted.endswith(".kernel"):
    return dotted[:-len(".kernel")] + ".weight", "T"
  return dotted, None


def _to_model_layout(x: np.ndarray, transform: str | None) -> np.ndarray:
  if transform == "T":
    return x.T
  if transform == "patch":
    return x.reshape(x.shape[0], -1).T
  return x


def _model_shape(shape: tuple[int, ...], transform: str | None) -> tuple[int, ...]:
  if transform == "T":
    return tuple(reversed(shape))
  if transform == "patch":
    return (int(np.prod(shape[1:])), shape[0])
  return tuple(shape)


# ------------------------------------------------------------------------------------------------
# safetensors, read through mmap (zero-copy) and written directly.

class _SafetensorsFile:
  def __init__(self, path: pathlib.Path):
    self.path = path
    size = os.path.getsize(path)
    try:
      with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > size - 8:
          raise ValueError(f"its header claims {n} bytes, the file has {size}")
        header = json.loads(f.read(n))
      header.pop("__metadata__", None)
      end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError) as e:
      raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if 8 + n + end > size:
      raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, its header "
                            f"describes {8 + n + end})")
    self.header, self.base = header, 8 + n
    self._mm = None

  def tensor(self, name: str) -> np.ndarray:
    if self._mm is None:
      with open(self.path, "rb") as f:
        self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    info = self.header[name]
    start, end = info["data_offsets"]
    dtype = np.dtype(_DTYPES[info["dtype"]])
    return np.frombuffer(self._mm, dtype=dtype, count=(end - start) // dtype.itemsize,
                         offset=self.base + start).reshape(info["shape"])


def _checkpoint_files(path: pathlib.Path) -> dict[str, _SafetensorsFile]:
  """Tensor name -> file, from `model.safetensors.index.json` or all `*.safetensors`."""
  index = path / "model.safetensors.index.json"
  if index.exists():
    weight_map = json.loads(index.read_text())["weight_map"]
    names = sorted(set(weight_map.values()))
    missing = [n for n in names if not (path / n).exists()]
    if missing:
      raise CheckpointError(f"{path}: the index names shard files that are missing: {missing}")
    files = {n: _SafetensorsFile(path / n) for n in names}
    out = {}
    for tensor, fname in weight_map.items():
      if tensor not in files[fname].header:
        raise CheckpointError(f"{path}: index puts {tensor!r} in {fname}, which lacks it")
      out[tensor] = files[fname]
    return out
  shards = sorted(path.glob("*.safetensors"))
  if not shards:
    raise CheckpointError(f"{path}: no *.safetensors files and no model.safetensors.index.json")
  out = {}
  for shard in shards:
    f = _SafetensorsFile(shard)
    out.update({name: f for name in f.header})
  return out


def _write_safetensors(path: pathlib.Path, tensors: dict[str, np.ndarray]) -> None:
  header, offset = {}, 0
  for name, x in tensors.items():
    header[name] = {"dtype": _DTYPE_NAMES[x.dtype], "shape": list(x.shape),
                    "data_offsets": [offset, offset + x.nbytes]}
    offset += x.nbytes
  header["__metadata__"] = {"format": "pt"}
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for x in tensors.values():
      f.write(np.ascontiguousarray(x).tobytes())


# ------------------------------------------------------------------------------------------------

def load_hf(path: str | pathlib.Path, dtype=jnp.float32, mesh: jax.sharding.Mesh | None = None,
            rules: mesh_lib.Rules = mesh_lib.DEFAULT_RULES, **runtime: Any) -> Qwen2_5_VL:
  """Loads a HF Qwen2.5-VL folder (config.json + safetensors) into a (sharded) NNX model.

  Args:
    path: the checkpoint folder.
    dtype: parameter and compute dtype (softmax, norms and logits stay fp32).
    mesh: place each tensor by its logical axes on this mesh; default the first local device.
    rules: logical -> mesh axis rules.
    **runtime: runtime config fields (`attention_impl`, `remat_policy`).

  Raises:
    CheckpointError: listing missing and unexpected tensor names and shape mismatches.
  """
  with storage.local_copy(path) as local:  # a remote folder is read from a local copy
    return _load_local(pathlib.Path(local), dtype, mesh, rules, **runtime)


def _load_local(path: pathlib.Path, dtype, mesh, rules, **runtime: Any) -> Qwen2_5_VL:
  if not (path / "config.json").exists():
    raise CheckpointError(f"{path}: config.json is missing")
  cfg = ModelConfig.from_file(path / "config.json", **runtime)
  abstract = nnx.eval_shape(lambda: Qwen2_5_VL(cfg, dtype=dtype, param_dtype=dtype,
                                               rngs=nnx.Rngs(0)))
  graphdef, abs_state = nnx.split(abstract)
  expected = {tuple(p): v for p, v in nnx.to_flat_state(abs_state)}
  files = _checkpoint_files(path)

  plan, unexpected, mismatched = {}, [], []
  for name, f in files.items():
    target, transform, layer = _target(hf_to_path(name), cfg)
    if target not in expected or (layer is not None and layer >= _depth(cfg, target)):
      if not (name == "lm_head.weight" and cfg.tie_word_embeddings):
        unexpected.append(name)
      continue
    got = _model_shape(tuple(f.header[name]["shape"]), transform)
    want = tuple(expected[target].get_value().shape)[0 if layer is None else 1:]
    if got != want:
      mismatched.append(f"{name}: checkpoint {tuple(f.header[name]['shape'])} -> {got}, "
                        f"config.json implies {want}")
    if layer is None:
      plan[target] = (name, transform)
    else:
      plan.setdefault(target, {})[layer] = (name, transform)
  missing = []
  for p in expected:
    if not lyr.is_stacked_layer_path(p):
      missing += [] if p in plan else [path_to_hf(p)[0]]
    else:
      missing += [path_to_hf(_layer_path(p, i))[0] for i in range(_depth(cfg, p))
                  if i not in plan.get(p, {})]
  if missing or unexpected or mismatched:
    parts = [f"checkpoint {path} does not match its config.json:"]
    if missing:
      parts.append(f"  missing ({len(missing)}): {sorted(missing)}")
    if unexpected:
      parts.append(f"  unexpected ({len(unexpected)}): {sorted(unexpected)}")
    if mismatched:
      parts.append(f"  shape mismatches ({len(mismatched)}):\n    " + "\n    ".join(mismatched))
    raise CheckpointError("\n".join(parts))

  single = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  values = {}
  for target, entry in plan.items():
    sharding = single if mesh is None else mesh_lib.variable_sharding(expected[target], mesh, rules)
    if isinstance(entry, dict):  # stacked layers: slice [l0:l1, rest] reads layers l0..l1-1
      srcs = [_to_model_layout(files[n].tensor(n), t) for n, t in (entry[i] for i in sorted(entry))]
      shape = (len(srcs),) + srcs[0].shape
      read = lambda idx, srcs=srcs: np.stack([x[idx[1:]] for x in srcs[idx[0]]])  # noqa: E731
    else:
      src = _to_model_layout(files[entry[0]].tensor(entry[0]), entry[1])
      shape, read = src.shape, src.__getitem__
    values[target] = _place(shape, read, dtype, sharding)
  state = nnx.from_flat_state({p: v.replace(values[p]) for p, v in expected.items()})
  return nnx.merge(graphdef, state)


def _target(mapped, cfg: ModelConfig):
  """(NNX path, transform, layer) of a mapped HF name; with `scan_layers`, a decoder layer's or
  vision block's tensor goes to the stacked path and its index to `layer` (else None)."""
  if mapped is None:
    return None, None, None
  target, transform = mapped
  if cfg.scan_layers and len(target) > 2 and target[:2] in lyr.STACKED_PREFIXES:
    return target[:2] + target[3:], transform, target[2]
  return target, transform, None


def _depth(cfg: ModelConfig, path: tuple) -> int:
  """How many layers the stacked path `path` holds."""
  return cfg.num_hidden_layers if path[0] == "model" else cfg.vision.depth


def _layer_path(path: tuple, i: int) -> tuple:
  """The unrolled path of layer `i` of a stacked-layer path."""
  return tuple(path[:2]) + (i,) + tuple(path[2:])


def _place(shape: tuple[int, ...], read, dtype, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array whose slices come from `read(index)` (views of memory-mapped tensors): a
  process reads only the slices its own devices hold, each distinct one once, however many
  devices replicate it."""
  slices: dict[tuple, np.ndarray] = {}

  def one(index: tuple[slice, ...]) -> np.ndarray:
    key = tuple((s.start, s.stop, s.step) for s in index)
    if key not in slices:
      slices[key] = np.array(read(index), dtype=dtype)  # a copy: never alias the read-only map
    return slices[key]
  return jax.make_array_from_callback(tuple(shape), sharding, one)


def _host(x: jax.Array) -> np.ndarray:
  if not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)


def hf_tensors(model: Qwen2_5_VL, dtype=None) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, host array in HF layout) for every parameter, LoRA deltas merged in."""
  from vcoach_jax.model import lora  # pylint: disable=g-import-not-at-top
  cfg = model.config
  for path, value in lora.merged_params(model):
    if lyr.is_stacked_layer_path(path):
      for i in range(value.shape[0]):
        yield _hf_tensor(cfg, _layer_path(path, i), value[i], dtype)
    else:
      yield _hf_tensor(cfg, path, value, dtype)


def _hf_tensor(cfg: ModelConfig, path: tuple, value: jax.Array, dtype) -> tuple[str, np.ndarray]:
  """(HF name, host array in HF layout) of one unstacked parameter."""
  name, transform = path_to_hf(path)
  x = _host(value)
  if dtype is not None:
    x = x.astype(dtype)
  if transform == "T":
    x = x.T
  elif transform == "patch":
    v = cfg.vision
    x = x.T.reshape(v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size,
                    v.patch_size)
  return name, np.ascontiguousarray(x)


def save_hf(model: Qwen2_5_VL, path: str | pathlib.Path, dtype=None,
            max_shard_bytes: int = 4 << 30, tokenizer=None) -> None:
  """Writes `model` as a HF Qwen2.5-VL folder (config.json + safetensors [+ index]), with the
  tokenizer files when a `tokenizer` (transformers) is given, so the folder is self-contained.

  LoRA adapters are merged into the written weights. Tensors are gathered one at a time (every
  process takes part in the gather of a tensor sharded across hosts) and each safetensors shard
  is written by process 0 as soon as it is full, so at most one shard sits in host memory.
  """
  writer = jax.process_index() == 0
  # safetensors and the tokenizer's files are written locally (the target itself when local, a
  # temporary folder copied into a remote target at the end).
  mirror = storage.LocalMirror(path) if writer else None
  try:
    _save(model, pathlib.Path(mirror.local) if writer else None, dtype, max_shard_bytes,
          tokenizer)
  except BaseException:
    if mirror is not None:
      mirror.close(sync=False)
    raise
  if mirror is not None:
    mirror.close()
  distributed.sync(f"save_hf {path}")  # nobody reads the folder before process 0 finished it


def _save(model, path: pathlib.Path | None, dtype, max_shard_bytes: int, tokenizer) -> None:
  writer = path is not None
  shard_files: list[tuple[pathlib.Path, list[str]]] = []
  current: dict[str, np.ndarray] = {}
  size = total = 0
  first_dtype = None

  def flush():  # every process gathers each tensor; only the writer has a folder to write to
    if writer:
      part = path / f".part-{len(shard_files):05d}.safetensors"
      _write_safetensors(part, current)
      shard_files.append((part, list(current)))

  for name, x in hf_tensors(model, dtype):
    first_dtype = first_dtype or x.dtype
    if current and size + x.nbytes > max_shard_bytes:
      flush()
      current, size = {}, 0
    current[name] = x
    size += x.nbytes
    total += x.nbytes
  flush()
  if writer:
    _finish_folder(model, path, shard_files, total, first_dtype, tokenizer)


def _finish_folder(model, path: pathlib.Path, shard_files, total: int, first_dtype,
                   tokenizer) -> None:
  """Process 0: tokenizer files, config.json, the shards under their final names (+ index)."""
  if tokenizer is not None:
    tokenizer.save_pretrained(str(path))
  cfg_json = model.config.to_hf()
  cfg_json["torch_dtype"] = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16",
                             np.dtype(ml_dtypes.bfloat16): "bfloat16"}.get(first_dtype, "float32")
  (path / "config.json").write_text(json.dumps(cfg_json, indent=2))
  if len(shard_files) == 1:
    shard_files[0][0].replace(path / "model.safetensors")
    return
  weight_map = {}
  for i, (part, names) in enumerate(shard_files):
    fname = f"model-{i + 1:05d}-of-{len(shard_files):05d}.safetensors"
    part.replace(path / fname)
    weight_map.update({name: fname for name in names})
  (path / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
