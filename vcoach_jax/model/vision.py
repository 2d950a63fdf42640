"""The Qwen2.5-VL vision tower: patch embedding, window/full-attention blocks, 2x2 patch merger.

Attention is segmented: every patch belongs to a window (window blocks) or to a temporal patch
of its image (full-attention blocks) and attends exactly the patches of that segment. Patches
are gathered into a padded `[segments, max_len]` table, attention runs batched over segments
(cost O(N * max_len), never an N x N mask), and results are gathered back by an inverse index.
Norms, MLPs and the merger (which mixes only the 4 patches of one merge unit, never split by a
window) work in the processor's patch order, so the reference's permute-by-window and its
inverse are not needed.

Host-side bookkeeping (`vision_aux`) depends only on `grid_thw` and is numpy.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vcoach_jax.model import layers as lyr
from vcoach_jax.model.config import VisionConfig
from vcoach_jax.model.rope import apply_rotary, vision_cos_sin, vision_rotary_ids
from vcoach_jax.model.text import MLP
from vcoach_jax.parallel import activations as act
from vcoach_jax.parallel.activations import shard

PATCHES = (act.PATCHES, None)  # [patches, width]


class Segments(NamedTuple):
  """A partition of the N patches into attention segments, as gather tables."""
  gather: np.ndarray  # [S, L] int32 patch index of each (segment, slot); padding slots hold 0
  valid: np.ndarray  # [S, L] bool, False on padding slots
  inverse: np.ndarray  # [N] int32 flat slot (segment * L + slot) of each patch


class VisionAux(NamedTuple):
  """Index arrays for one call of the vision tower."""
  rotary_ids: np.ndarray  # [N, 2] (row, col) of each patch
  windows: Segments  # window-attention blocks
  frames: Segments  # full-attention blocks (one segment per temporal patch of each image)


def segments_from_ids(ids: np.ndarray) -> Segments:
  """Gather tables for segment ids 0..S-1 (every id present)."""
  ids = np.asarray(ids)
  counts = np.bincount(ids)
  s, l = len(counts), int(counts.max())
  order = np.argsort(ids, kind="stable")
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  slot = np.arange(len(ids)) - np.repeat(starts, counts)  # rank within the segment, sorted order
  gather = np.zeros((s, l), np.int32)
  valid = np.zeros((s, l), bool)
  gather[ids[order], slot] = order
  valid[ids[order], slot] = True
  inverse = np.empty(len(ids), np.int32)
  inverse[order] = ids[order] * l + slot
  return Segments(gather, valid, inverse)


def vision_aux(cfg: VisionConfig, grid_thw: np.ndarray) -> VisionAux:
  """Computes the rotary ids and attention segments of the patches of all images in `grid_thw`.

  Args:
    cfg: vision config.
    grid_thw: [num_images, 3] (t, h, w) in patches, in the order the patches are concatenated.
  """
  m = cfg.spatial_merge_size
  win = cfg.window_size // m // cfg.patch_size
  if win < 1:
    raise ValueError(f"window_size {cfg.window_size} is smaller than one merged patch")
  window_ids, frame_ids = [], []
  next_window = next_frame = 0
  for t, h, w in np.asarray(grid_thw).tolist():
    gh, gw = h // m, w // m
    nwh, nww = -(-gh // win), -(-gw // win)
    rows = np.arange(gh)[:, None] // win
    cols = np.arange(gw)[None, :] // win
    per_frame = (rows * nww + cols).reshape(-1)  # [gh*gw] window of each merge unit
    units = (np.arange(t)[:, None] * nwh * nww + per_frame[None]).reshape(-1) + next_window
    window_ids.append(np.repeat(units, m * m))
    frame_ids.append(np.repeat(np.arange(t) + next_frame, h * w))
    next_window += t * nwh * nww
    next_frame += t
  return VisionAux(vision_rotary_ids(grid_thw, m), segments_from_ids(np.concatenate(window_ids)),
                   segments_from_ids(np.concatenate(frame_ids)))


class VisionAttention(nnx.Module):
  """Multi-head attention with a fused qkv projection and 2-D rotary."""

  def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, impl: str, chunk: int = 512,
               rngs: nnx.Rngs):
    d = cfg.hidden_size
    kw = dict(bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.qkv = lyr.Linear(d, 3 * d, axes=(lyr.VIT_EMBED, lyr.VIT_HEADS), **kw)
    self.proj = lyr.Linear(d, d, axes=(lyr.VIT_HEADS, lyr.VIT_EMBED), **kw)
    self.num_heads, self.head_dim, self.impl, self.chunk = cfg.num_heads, cfg.head_dim, impl, chunk

  @jax.named_scope("vision_attention")
  def __call__(self, x, cos, sin, seg: Segments):
    """x [N, D]; cos/sin [N, H]; seg: the attention segments (arrays)."""
    n = x.shape[0]
    qkv = shard(self.qkv(x).reshape(n, 3, self.num_heads, self.head_dim),
                (act.PATCHES, None, lyr.VIT_HEADS, None))
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    # Segments over the batch axes (queries also split by slot when the segments do not divide);
    # each segment's keys and values whole on its devices.
    queries = (act.SEGMENTS, act.LENGTH, lyr.VIT_HEADS, None)
    keys = (act.SEGMENTS, None, lyr.VIT_HEADS, None)
    q, k, v = shard(q[seg.gather], queries), shard(k[seg.gather], keys), shard(v[seg.gather], keys)
    mask = shard(seg.valid[:, :, None] & seg.valid[:, None, :], queries[:2] + (None,))  # [S, L, L]
    out = shard(lyr.attention(q, k, v, mask, self.impl, self.chunk), queries)
    out = out.reshape(-1, self.num_heads, self.head_dim)[seg.inverse]  # [N, heads, H]
    out = shard(out.reshape(n, -1), (act.PATCHES, lyr.VIT_HEADS))
    return shard(self.proj(out), PATCHES)


class VisionBlock(nnx.Module):
  def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, impl: str, chunk: int = 512,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.norm1 = lyr.RMSNorm(cfg.hidden_size, eps=1e-6, **kw)
    self.attn = VisionAttention(cfg, impl=impl, chunk=chunk, rngs=rngs, **kw)
    self.norm2 = lyr.RMSNorm(cfg.hidden_size, eps=1e-6, **kw)
    self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, axes=(lyr.VIT_EMBED, lyr.VIT_MLP),
                   bias=True, rngs=rngs, lead=(act.PATCHES,), **kw)

  @jax.named_scope("vision_block")
  def __call__(self, x, cos, sin, seg: Segments):
    x = shard(x + self.attn(self.norm1(x), cos, sin, seg), PATCHES)
    return shard(x + self.mlp(self.norm2(x)), PATCHES)


class PatchMerger(nnx.Module):
  """RMSNorm, then each 2x2 merge unit (4 consecutive patches) -> MLP(GELU) -> text width."""

  def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    wide = cfg.hidden_size * cfg.merge_unit
    kw = dict(bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.ln_q = lyr.RMSNorm(cfg.hidden_size, eps=1e-6, dtype=dtype, param_dtype=param_dtype)
    self.mlp_0 = lyr.Linear(wide, wide, axes=(lyr.VIT_MLP, lyr.VIT_MLP), **kw)
    self.mlp_2 = lyr.Linear(wide, cfg.out_hidden_size, axes=(lyr.VIT_MLP, lyr.EMBED), **kw)
    self.wide = wide

  @jax.named_scope("patch_merger")
  def __call__(self, x):
    x = shard(self.ln_q(x).reshape(-1, self.wide), PATCHES)
    return shard(self.mlp_2(jax.nn.gelu(self.mlp_0(x), approximate=False)), PATCHES)


class VisionTower(nnx.Module):
  """HF `visual.*`: flattened patches [N, C*Tp*P*P] -> merged tokens [N / 4, out_hidden]."""

  def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, impl: str = "xla",
               chunk: int = 512, remat: str = "none", scan: bool = False, rngs: nnx.Rngs):
    self.patch_embed = lyr.Linear(cfg.patch_dim, cfg.hidden_size, axes=(lyr.PATCH, lyr.VIT_EMBED),
                                  bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    blocks = [VisionBlock(cfg, dtype=dtype, param_dtype=param_dtype, impl=impl, chunk=chunk,
                          rngs=rngs) for _ in range(cfg.depth)]
    # scan: one VisionBlock with stacked weights under lax.scan (see TextModel).
    self.blocks = lyr.stack_modules(blocks) if scan else nnx.List(blocks)
    self.scan = scan
    self.merger = PatchMerger(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.full_blocks = tuple(cfg.fullatt_block_indexes)
    self.head_dim = cfg.head_dim
    self.remat = remat

  @jax.named_scope("vision_tower")
  def __call__(self, pixels: jax.Array, rotary_ids: jax.Array, windows: Segments,
               frames: Segments) -> jax.Array:
    """pixels [N, patch_dim]; the index arrays come from `vision_aux`. Returns [N/4, out]."""
    x = shard(self.patch_embed(shard(pixels, PATCHES)), PATCHES)
    cos, sin = vision_cos_sin(shard(rotary_ids, PATCHES), self.head_dim)
    cos, sin = shard(cos, PATCHES), shard(sin, PATCHES)
    do_remat, policy = lyr.remat_policy(self.remat)
    if self.scan:
      return self.merger(self._scan(x, cos, sin, windows, frames, do_remat, policy))

    def run(block, x, seg):
      return block(x, cos, sin, seg)
    if do_remat:
      run = nnx.remat(run, policy=policy, prevent_cse=True)
    for i, block in enumerate(self.blocks):
      x = run(block, x, frames if i in self.full_blocks else windows)
    return self.merger(x)

  def _scan(self, x, cos, sin, windows: Segments, frames: Segments, do_remat, policy):
    """The stacked blocks under `lax.scan`; a full-attention block takes the frame segments and
    a window block the window ones (`lax.cond` on the block's index)."""
    graphdef, stacked = nnx.split(self.blocks)
    depth = jax.tree.leaves(stacked)[0].shape[0]
    full = jnp.asarray([i in self.full_blocks for i in range(depth)])

    def body(x, xs):
      block_state, is_full = xs
      block = nnx.merge(graphdef, block_state)
      x = jax.lax.cond(is_full, lambda x: block(x, cos, sin, frames),
                       lambda x: block(x, cos, sin, windows), x)
      return x, None
    if do_remat:
      body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    x, _ = jax.lax.scan(body, x, (stacked, full))
    return x
