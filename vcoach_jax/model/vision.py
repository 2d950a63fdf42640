"""The Qwen2.5-VL vision tower: patch embedding, window/full-attention blocks, 2x2 patch merger.

Attention is segmented: every patch belongs to a window (window blocks) or to a temporal patch
of its image (full-attention blocks) and attends exactly the patches of that segment. The N
patches of a call form K blocks of P = N / K consecutive patches (one block per prompt row of a
fixed-shape batch, `batching.batch_inputs`; one block for a single example, `vision_aux`), and no
segment crosses a block. Each block's patches are gathered into a padded `[segments, max_len]`
table, attention runs batched over blocks and segments (cost O(N * max_len), never an N x N
mask), and results are gathered back by an inverse index, all within the block: with the blocks
split over the batch axes of a mesh, the tower runs without moving activations between devices.
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

PATCHES = (act.BATCH, act.PATCHES, None)  # [blocks, patches of a block, width]


class Segments(NamedTuple):
  """A partition of each block's patches into attention segments, as gather tables (the
  leading K axis: blocks; `segments_from_ids` gives one block's tables without it)."""
  gather: np.ndarray  # [K, S, L] int32 patch index (in its block) of each slot; 0 on padding
  valid: np.ndarray  # [K, S, L] bool, False on padding slots
  inverse: np.ndarray  # [K, P] int32 flat slot (segment * L + slot) of each patch of a block


class VisionAux(NamedTuple):
  """Index arrays for one call of the vision tower."""
  rotary_ids: np.ndarray  # [N, 2] (row, col) of each patch
  windows: Segments  # window-attention blocks
  frames: Segments  # full-attention blocks (one segment per temporal patch of each image)


def segments_from_ids(ids: np.ndarray) -> Segments:
  """Gather tables (of one block: `[S, L]`, `[N]`) for segment ids 0..S-1 (every id present)."""
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


def one_block(seg: Segments) -> Segments:
  """One block's tables with the leading block axis (K = 1)."""
  return Segments(*(np.asarray(x)[None] for x in seg))


def vision_aux(cfg: VisionConfig, grid_thw: np.ndarray) -> VisionAux:
  """Computes the rotary ids and attention segments of the patches of all images in `grid_thw`,
  as one block.

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
  return VisionAux(vision_rotary_ids(grid_thw, m),
                   one_block(segments_from_ids(np.concatenate(window_ids))),
                   one_block(segments_from_ids(np.concatenate(frame_ids))))


def _take(x: jax.Array, index: jax.Array) -> jax.Array:
  """Per block: x [K, P, ...] indexed by index [K, ...] along P (a gather local to each block)."""
  return jax.vmap(lambda a, i: a[i])(x, index)


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
    """x [K, P, D]; cos/sin [K, P, H]; seg: the blocks' attention segments (arrays)."""
    blocks, p = x.shape[:2]
    qkv = shard(self.qkv(x).reshape(blocks, p, 3, self.num_heads, self.head_dim),
                (act.BATCH, act.PATCHES, None, lyr.VIT_HEADS, None))
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    # Blocks over the batch axes, then segments over what the blocks left (queries also split by
    # slot when the segments do not divide); each segment's keys and values whole on its devices.
    queries = (act.BATCH, act.SEGMENTS, act.LENGTH, lyr.VIT_HEADS, None)
    keys = (act.BATCH, act.SEGMENTS, None, lyr.VIT_HEADS, None)
    q, k, v = (shard(_take(q, seg.gather), queries), shard(_take(k, seg.gather), keys),
               shard(_take(v, seg.gather), keys))
    _, s, l = seg.gather.shape
    mask = shard(seg.valid[..., :, None] & seg.valid[..., None, :], queries[:3] + (None,))
    flat = lambda a: a.reshape((blocks * s,) + a.shape[2:])  # noqa: E731  [K*S, L, ...]
    out = lyr.attention(flat(q), flat(k), flat(v), flat(mask), self.impl, self.chunk)
    out = shard(out.reshape(blocks, s, l, self.num_heads, self.head_dim), queries)
    out = _take(out.reshape(blocks, s * l, self.num_heads, self.head_dim), seg.inverse)
    out = shard(out.reshape(blocks, p, -1), (act.BATCH, act.PATCHES, lyr.VIT_HEADS))
    return shard(self.proj(out), PATCHES)


class VisionBlock(nnx.Module):
  def __init__(self, cfg: VisionConfig, *, dtype, param_dtype, impl: str, chunk: int = 512,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.norm1 = lyr.RMSNorm(cfg.hidden_size, eps=1e-6, **kw)
    self.attn = VisionAttention(cfg, impl=impl, chunk=chunk, rngs=rngs, **kw)
    self.norm2 = lyr.RMSNorm(cfg.hidden_size, eps=1e-6, **kw)
    self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, axes=(lyr.VIT_EMBED, lyr.VIT_MLP),
                   bias=True, rngs=rngs, lead=PATCHES[:2], **kw)

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
    """x [K, P, D] -> [K, P / 4, out]."""
    x = shard(self.ln_q(x).reshape(x.shape[0], -1, self.wide), PATCHES)
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
    """pixels [N, patch_dim] (K blocks of N / K patches, K the segment tables' leading axis);
    the index arrays come from `vision_aux` or `batching.batch_inputs`. Returns [N/4, out]."""
    blocks = windows.gather.shape[0]
    block = lambda a: shard(a.reshape((blocks, -1) + a.shape[1:]), PATCHES)  # noqa: E731
    x = shard(self.patch_embed(block(pixels)), PATCHES)
    cos, sin = vision_cos_sin(block(rotary_ids), self.head_dim)
    cos, sin = shard(cos, PATCHES), shard(sin, PATCHES)
    do_remat, policy = lyr.remat_policy(self.remat)
    if self.scan:
      x = self._scan(x, cos, sin, windows, frames, do_remat, policy)
      return self._merged(x)

    def run(block, x, seg):
      return block(x, cos, sin, seg)
    if do_remat:
      run = nnx.remat(run, policy=policy, prevent_cse=True)
    for i, vit_block in enumerate(self.blocks):
      x = run(vit_block, x, frames if i in self.full_blocks else windows)
    return self._merged(x)

  def _merged(self, x):
    out = self.merger(x)  # [K, P / 4, out]
    return out.reshape(-1, out.shape[-1])

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
