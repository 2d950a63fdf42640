"""Rotary position embeddings: M-RoPE for the text decoder and 2-D rotary for the vision tower.

Position bookkeeping that depends only on token ids and grids (`mrope_positions`,
`vision_rotary_ids`) is host-side numpy; the rotary maths (`mrope_cos_sin`, `vision_cos_sin`,
`apply_rotary`) is jax and runs under jit.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vcoach_jax.model.config import ModelConfig


class MRopePositions(NamedTuple):
  """Multimodal rotary positions of a (left-padded) batch."""
  positions: np.ndarray  # [3, B, T] int32: (time, height, width) ids; padding gets 1.
  deltas: np.ndarray  # [B] int32: next position id minus the padded length (for decode steps).


def _grid_positions(t: int, h: int, w: int, second_per_grid: float, tokens_per_second: float):
  """[3, t*h*w] (time, height, width) ids of one merged vision grid, starting at 0."""
  tt = (np.arange(t, dtype=np.float64) * second_per_grid * tokens_per_second).astype(np.int64)
  ti = np.broadcast_to(tt[:, None, None], (t, h, w))
  hi = np.broadcast_to(np.arange(h)[None, :, None], (t, h, w))
  wi = np.broadcast_to(np.arange(w)[None, None, :], (t, h, w))
  return np.stack([ti.reshape(-1), hi.reshape(-1), wi.reshape(-1)])


def mrope_positions(cfg: ModelConfig, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                    image_grid_thw: np.ndarray | None = None, video_grid_thw: np.ndarray | None = None,
                    second_per_grid_ts: np.ndarray | None = None) -> MRopePositions:
  """The (t, h, w) position ids of every token, as transformers' `get_rope_index` computes them.

  Text tokens get equal t/h/w ids counting on from the previous segment's max + 1; each image or
  video run (located by the token after a vision-start token) gets its merged grid, with time ids
  `floor(frame * second_per_grid_t * tokens_per_second)` for videos and 0 for images. Images and
  videos are consumed in order of appearance across the batch; padded positions are skipped.

  Args:
    cfg: model config (token ids, merge size, tokens_per_second).
    input_ids: [B, T] int.
    attention_mask: [B, T] 1 for real tokens (left or right padding), default all ones.
    image_grid_thw: [num_images, 3] grids in patches, in batch order.
    video_grid_thw: [num_videos, 3].
    second_per_grid_ts: [num_videos] seconds per temporal grid step (default 1.0).

  Returns:
    MRopePositions with positions [3, B, T] and deltas [B].
  """
  input_ids = np.asarray(input_ids)
  b, t_len = input_ids.shape
  mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask)
  positions = np.ones((3, b, t_len), np.int64)
  deltas = np.zeros((b,), np.int64)
  if image_grid_thw is None and video_grid_thw is None:
    pos = np.cumsum(mask, -1) - 1
    pos = np.where(mask == 0, 1, pos)
    positions[:] = pos[None]
    deltas = pos.max(-1) + 1 - t_len
    return MRopePositions(positions.astype(np.int32), deltas.astype(np.int32))
  merge = cfg.vision.spatial_merge_size
  tps = cfg.vision.tokens_per_second
  image_i = video_i = 0
  for i in range(b):
    ids = input_ids[i][mask[i] == 1]
    starts = np.nonzero(ids == cfg.vision_start_token_id)[0]
    kinds = ids[starts + 1] if len(starts) else np.zeros((0,), ids.dtype)
    n_img = int((kinds == cfg.image_token_id).sum())
    n_vid = int((kinds == cfg.video_token_id).sum())
    tokens = ids.tolist()
    pieces, st, next_id = [], 0, 0
    for _ in range(n_img + n_vid):
      ed_img = _index(tokens, cfg.image_token_id, st) if n_img > 0 else len(tokens) + 1
      ed_vid = _index(tokens, cfg.video_token_id, st) if n_vid > 0 else len(tokens) + 1
      if ed_img < ed_vid:
        gt, gh, gw = (int(x) for x in image_grid_thw[image_i])
        sec, ed = 0.0, ed_img
        image_i += 1
        n_img -= 1
      else:
        gt, gh, gw = (int(x) for x in video_grid_thw[video_i])
        sec = 1.0 if second_per_grid_ts is None else float(np.asarray(second_per_grid_ts)[video_i])
        ed = ed_vid
        video_i += 1
        n_vid -= 1
      gh, gw = gh // merge, gw // merge
      text_len = ed - st
      pieces.append(np.broadcast_to(np.arange(text_len) + next_id, (3, text_len)))
      grid = _grid_positions(gt, gh, gw, sec, tps) + text_len + next_id
      pieces.append(grid)
      next_id = int(grid.max()) + 1
      st = ed + gt * gh * gw
    if st < len(tokens):
      text_len = len(tokens) - st
      pieces.append(np.broadcast_to(np.arange(text_len) + next_id, (3, text_len)))
    row = np.concatenate(pieces, axis=1)
    positions[:, i, mask[i] == 1] = row
    deltas[i] = row.max() + 1 - t_len
  return MRopePositions(positions.astype(np.int32), deltas.astype(np.int32))


def _index(tokens: list[int], value: int, start: int) -> int:
  try:
    return tokens.index(value, start)
  except ValueError:
    return len(tokens) + 1


def inv_freq(dim: int, theta: float) -> jax.Array:
  """[dim // 2] inverse frequencies of standard RoPE over `dim` channels."""
  return 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))


def mrope_cos_sin(positions: jax.Array, head_dim: int, theta: float,
                  section: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """cos/sin [B, T, head_dim] (fp32) for M-RoPE.

  Frequency j of the half-dimension uses the time ids for j < s0, the height ids for
  s0 <= j < s0+s1 and the width ids after; both halves repeat the same frequencies.

  Args:
    positions: [3, B, T] int (time, height, width).
    head_dim: channels per head.
    theta: RoPE base.
    section: (s0, s1, s2) with sum == head_dim // 2.
  """
  freq = inv_freq(head_dim, theta)  # [H/2]
  which = np.repeat(np.arange(3), section)  # [H/2] component per frequency
  pos = positions.astype(jnp.float32)[which]  # [H/2, B, T]
  angles = jnp.einsum("jbt,j->btj", pos, freq)  # [B, T, H/2]
  emb = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def vision_rotary_ids(grid_thw: np.ndarray, merge: int) -> np.ndarray:
  """[N, 2] (row, col) patch ids of every vision patch in the processor's merge-block order."""
  out = []
  for t, h, w in np.asarray(grid_thw).tolist():
    rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
    cols = np.broadcast_to(np.arange(w)[None, :], (h, w))
    def blocked(x):
      return x.reshape(h // merge, merge, w // merge, merge).transpose(0, 2, 1, 3).reshape(-1)
    ids = np.stack([blocked(rows), blocked(cols)], axis=-1)
    out.append(np.tile(ids, (t, 1)))
  return np.concatenate(out, axis=0).astype(np.int32)


def vision_cos_sin(ids: jax.Array, head_dim: int, theta: float = 10000.0):
  """cos/sin [..., N, head_dim] of ids [..., N, 2] for 2-D vision rotary: the first quarter of
  channels rotate with the row id, the second quarter with the column id; the second half
  repeats the first."""
  freq = inv_freq(head_dim // 2, theta)  # [H/4]
  angles = ids.astype(jnp.float32)[..., None] * freq  # [..., N, 2, H/4]
  angles = angles.reshape(ids.shape[:-1] + (-1,))  # [..., N, H/2]
  emb = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x [..., T, N, H] by cos/sin [..., T, H] (rotate-half convention), in fp32."""
  dtype = x.dtype
  x = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  out = x * cos[..., None, :] + rotated * sin[..., None, :]
  return out.astype(dtype)
