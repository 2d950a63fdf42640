"""The whole Qwen2.5-VL: vision tower + text decoder + LM head, forward with a KV cache.

Host side, `prepare_inputs` turns the HF processor's dict of numpy arrays into `ModelInputs`
(M-RoPE positions, vision segment ids, the flat slots of vision tokens); device side,
`Qwen2_5_VL.__call__` is a pure function of those arrays. `logits`, `prefill` and `decode_step`
are the jitted entry points (graph and state split at the jit boundary).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vcoach_jax.model import layers as lyr
from vcoach_jax.model.config import ModelConfig
from vcoach_jax.model.rope import mrope_cos_sin, mrope_positions
from vcoach_jax.model.text import TextModel
from vcoach_jax.model.vision import Segments, VisionTower, vision_aux
from vcoach_jax.parallel import activations as act


class ModelInputs(NamedTuple):
  """Device inputs of one forward (a pytree; vision fields are None for text-only batches)."""
  input_ids: jax.Array  # [B, T] int32
  attention_mask: jax.Array  # [B, T] bool, False on padding
  positions: jax.Array  # [3, B, T] int32 M-RoPE ids
  rope_deltas: jax.Array  # [B] int32 (next position id - T)
  pixels: jax.Array | None = None  # [N, C*Tp*P*P] image patches then video patches
  rotary_ids: jax.Array | None = None  # [N, 2]
  windows: Segments | None = None  # window-attention segments of the patches
  frames: Segments | None = None  # full-attention segments (temporal patches)
  vision_slots: jax.Array | None = None  # [..., N / merge_unit] flat index b * T + t per token


@flax.struct.dataclass
class KVCache:
  """Preallocated decoder cache; slot s of every row holds the token fed at step s."""
  k: jax.Array  # [L, B, S, K, H]
  v: jax.Array  # [L, B, S, K, H]
  valid: jax.Array  # [B, S] bool: slot holds a real (non-padding) token
  index: jax.Array  # [] int32: next slot to write
  rope_deltas: jax.Array  # [B] int32: position id of slot s is s + rope_deltas


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> KVCache:
  shape = (cfg.num_hidden_layers, batch, max_len, cfg.num_key_value_heads, cfg.head_dim)
  return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                 valid=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32),
                 rope_deltas=jnp.zeros((batch,), jnp.int32))


class Qwen2_5_VL(nnx.Module):
  """Qwen2_5_VLForConditionalGeneration in NNX (HF names: `visual`, `model`, `lm_head`)."""

  def __init__(self, cfg: ModelConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
               rngs: nnx.Rngs | None = None):
    rngs = rngs or nnx.Rngs(0)
    self.config = cfg
    self.visual = VisionTower(cfg.vision, dtype=dtype, param_dtype=param_dtype,
                              impl=cfg.attention_impl, chunk=cfg.attention_chunk,
                              remat=cfg.remat_policy, scan=cfg.scan_layers, rngs=rngs)
    self.model = TextModel(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.lm_head = None if cfg.tie_word_embeddings else lyr.Linear(
        cfg.hidden_size, cfg.vocab_size, axes=(lyr.EMBED, lyr.VOCAB), bias=False, dtype=dtype,
        param_dtype=param_dtype, rngs=rngs)
    self.dtype = dtype
    self.layout = None  # where activations go (`parallel.activations.attach`); None: XLA decides

  def _layout(self):
    """The activation layout, open while a model method traces (`activations.use`)."""
    return act.use(getattr(self, "layout", None))

  def embed(self, inputs: ModelInputs) -> jax.Array:
    """Token embeddings with vision features scattered into the image/video token slots."""
    with self._layout():
      x = act.shard(self.model.embed(inputs.input_ids), act.RESIDUAL)  # [B, T, D]
      if inputs.pixels is None:
        return x
      feats = self.visual(inputs.pixels, inputs.rotary_ids, inputs.windows, inputs.frames)
      b, t, d = x.shape
      # Slots out of range (padding patches of a fixed-shape batch) are dropped; slots of shape
      # [G, n] scatter the same features into G rows (`batching.repeat_rows`).
      x = x.reshape(b * t, d).at[inputs.vision_slots].set(feats.astype(x.dtype), mode="drop")
      return act.shard(x.reshape(b, t, d), act.RESIDUAL)

  def head(self, h: jax.Array) -> jax.Array:
    """[..., D] -> [..., vocab] fp32 logits."""
    with self._layout():
      lead = act.RESIDUAL[:h.ndim - 1] if h.ndim <= 3 else (None,) * (h.ndim - 1)
      h = act.shard(h, lead + (None,))
      if self.lm_head is None:
        out = jnp.einsum("...d,vd->...v", h, self.model.embed_tokens[...].astype(h.dtype))
      else:
        out = self.lm_head(h)
      return act.shard(out.astype(jnp.float32), lead + (lyr.VOCAB,))

  def hidden_states(self, inputs: ModelInputs) -> jax.Array:
    """[B, T, D] final-norm hidden states of a full causal forward (no cache, no LM head): what
    the loss heads (completion log-probs, the selector) read."""
    with self._layout():
      cfg = self.config
      x = self.embed(inputs)
      cos, sin = mrope_cos_sin(inputs.positions, cfg.head_dim, cfg.rope_theta, cfg.mrope_section)
      t = x.shape[1]
      causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
      mask = causal[None] & inputs.attention_mask.astype(bool)[:, None, :]
      h, _, _ = self.model(x, cos, sin, mask)
      return h

  def __call__(self, inputs: ModelInputs, cache: KVCache | None = None, *,
               last_only: bool = False):
    """Full forward over `inputs` (optionally writing them into `cache` from its `index`).

    Args:
      last_only: apply the LM head to the last position only (a left-padded prompt's next-token
        logits): the prefill never holds a [B, T, vocab] array.

    Returns:
      (logits [B, T, vocab] fp32 ([B, 1, vocab] with `last_only`), updated cache or None).
    """
    pick = (lambda h: h[:, -1:]) if last_only else (lambda h: h)  # noqa: E731
    if cache is None:
      return self.head(pick(self.hidden_states(inputs))), None
    h, cache = self.hidden_states_cached(inputs, cache)
    return self.head(pick(h)), cache

  def hidden_states_cached(self, inputs: ModelInputs, cache: KVCache):
    """[B, T, D] hidden states of `inputs` attending the cache's valid slots before them, and
    the cache with `inputs` written from its `index` (differentiable: the RL loss runs a
    prompt once per group this way, `rl.logprobs`)."""
    with self._layout():
      cfg = self.config
      x = self.embed(inputs)
      cos, sin = mrope_cos_sin(inputs.positions, cfg.head_dim, cfg.rope_theta, cfg.mrope_section)
      t = x.shape[1]
      valid = inputs.attention_mask.astype(bool)
      idx = cache.index
      kv_valid = jax.lax.dynamic_update_slice(cache.valid, valid, (0, idx))
      slots = jnp.arange(cache.valid.shape[1])
      causal = slots[None, :] <= (idx + jnp.arange(t))[:, None]  # [T, S]
      mask = causal[None] & kv_valid[:, None, :]
      h, k, v = self.model(x, cos, sin, mask, cache.k, cache.v, idx)
      cache = cache.replace(k=k, v=v, valid=kv_valid, index=idx + t,
                            rope_deltas=inputs.rope_deltas)
      return h, cache


# ------------------------------------------------------------------------------------------------
# Host-side input preparation.

def _np(inputs: Mapping[str, Any], key: str):
  value = inputs.get(key)
  return None if value is None else np.asarray(value)


def prepare_inputs(cfg: ModelConfig, inputs: Mapping[str, Any]) -> ModelInputs:
  """Turns the HF processor's dict (numpy or torch arrays) into `ModelInputs` (numpy).

  Keys: `input_ids`, `attention_mask` (optional), `pixel_values` + `image_grid_thw`,
  `pixel_values_videos` + `video_grid_thw` (+ `second_per_grid_ts`), all optional but the ids.
  """
  ids = _np(inputs, "input_ids").astype(np.int32)
  mask = _np(inputs, "attention_mask")
  mask = np.ones_like(ids) if mask is None else mask.astype(np.int32)
  image_grid, video_grid = _np(inputs, "image_grid_thw"), _np(inputs, "video_grid_thw")
  image_px, video_px = _np(inputs, "pixel_values"), _np(inputs, "pixel_values_videos")
  if image_px is None:
    image_grid = None
  if video_px is None:
    video_grid = None
  pixels, grids, slots = [], [], []
  flat = ids.reshape(-1)
  for px, grid, token, name in ((image_px, image_grid, cfg.image_token_id, "image"),
                                (video_px, video_grid, cfg.video_token_id, "video")):
    if px is None:
      continue
    where = np.nonzero(flat == token)[0]
    n_feats = int(np.prod(grid, axis=-1).sum()) // cfg.vision.merge_unit
    if len(where) != n_feats:
      raise ValueError(f"{name} features and {name} tokens do not match: tokens {len(where)}, "
                       f"features {n_feats} (grids {grid.tolist()})")
    if px.shape != (int(np.prod(grid, axis=-1).sum()), cfg.vision.patch_dim):
      raise ValueError(f"pixel values for {name}s have shape {px.shape}, expected "
                       f"({int(np.prod(grid, axis=-1).sum())}, {cfg.vision.patch_dim})")
    pixels.append(px.astype(np.float32))
    grids.append(grid)
    slots.append(where.astype(np.int32))
  rope = mrope_positions(cfg, ids, mask, image_grid, video_grid,
                         _np(inputs, "second_per_grid_ts"))
  out = dict(input_ids=ids, attention_mask=mask.astype(bool), positions=rope.positions,
             rope_deltas=rope.deltas)
  if pixels:
    aux = vision_aux(cfg.vision, np.concatenate(grids))
    out.update(pixels=np.concatenate(pixels), rotary_ids=aux.rotary_ids,
               windows=aux.windows, frames=aux.frames,
               vision_slots=np.concatenate(slots))
  return ModelInputs(**out)


# ------------------------------------------------------------------------------------------------
# Jitted entry points. The model is split into (graphdef, state) so the weights are arguments.

@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, inputs: ModelInputs):
  return nnx.merge(graphdef, state)(inputs)[0]


@functools.partial(jax.jit, static_argnums=0, donate_argnums=3)
def _prefill(graphdef, state, inputs: ModelInputs, cache: KVCache):
  logits, cache = nnx.merge(graphdef, state)(inputs, cache, last_only=True)
  return logits[:, 0], cache


@functools.partial(jax.jit, static_argnums=0, donate_argnums=3)
def _decode(graphdef, state, tokens: jax.Array, cache: KVCache):
  b = tokens.shape[0]
  pos = jnp.broadcast_to((cache.index + cache.rope_deltas)[None, :, None], (3, b, 1))
  inputs = ModelInputs(input_ids=tokens[:, None].astype(jnp.int32),
                       attention_mask=jnp.ones((b, 1), bool), positions=pos.astype(jnp.int32),
                       rope_deltas=cache.rope_deltas)
  logits, cache = nnx.merge(graphdef, state)(inputs, cache)
  return logits[:, 0], cache


def logits(model: Qwen2_5_VL, inputs: Mapping[str, Any]) -> jax.Array:
  """[B, T, vocab] fp32 logits for the HF processor's dict of numpy arrays."""
  graphdef, state = nnx.split(model)
  return _forward(graphdef, state, prepare_inputs(model.config, inputs))


def prefill(model: Qwen2_5_VL, inputs: Mapping[str, Any] | ModelInputs, max_len: int,
            cache_dtype=None):
  """Runs the (left-padded) prompt and returns (last-position logits [B, vocab], KVCache).

  The cache holds `max_len` slots; the prompt fills slots [0, T).
  """
  if not isinstance(inputs, ModelInputs):
    inputs = prepare_inputs(model.config, inputs)
  b, t = inputs.input_ids.shape
  if t > max_len:
    raise ValueError(f"prompt length {t} exceeds the cache length {max_len}")
  cache = init_cache(model.config, b, max_len, cache_dtype or model.dtype)
  graphdef, state = nnx.split(model)
  return _prefill(graphdef, state, inputs, cache)


def decode_step(model: Qwen2_5_VL, tokens: jax.Array, cache: KVCache):
  """Feeds one token per sequence ([B] int) at the cache's next slot; returns
  (logits [B, vocab], cache). The cache argument is donated."""
  graphdef, state = nnx.split(model)
  return _decode(graphdef, state, jnp.asarray(tokens), cache)
