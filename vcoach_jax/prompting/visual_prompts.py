"""The four visual prompts drawn on key frames (docs/design.md §8.5), pure numpy.

Every renderer maps frames uint8 `[F, H, W, 3]` and per-frame boxes (normalised xyxy, any number
per frame) to new frames of the same shape and dtype, vectorised over frames and boxes,
deterministic (no randomness, no fonts from the system):

  darken     pixels outside the union of the (truncated, padded, clipped) boxes times 0.3 — the
             arithmetic of the released helper, so its known values hold (200 -> 60 outside,
             200 inside)
  circle     a red anti-aliased ellipse circumscribing each box (this project's choice)
  numbers    the frame's 1-based index, white on black, in the top-left corner (ours)
  attention  a warm Gaussian heat map per box blended over the frame, far regions dimmed (ours)

  frames = render("circle", key_frames, [boxes_of_frame_0, boxes_of_frame_1], indices=[3, 7])
  images = prompt_key_frames(record, key_frames, "darken", indices)   # boxes from the record
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import numpy as np

DARKEN_FACTOR = 0.3  # reference: outside pixels * 0.3
DARKEN_PAD = 10  # reference: boxes grown by 10 px on every side
CIRCLE_RGB = (255, 0, 0)
CIRCLE_WIDTH = 0.01  # line width as a fraction of the shorter frame side (at least 2 px)
NUMBER_HEIGHT = 0.08  # label box height as a fraction of the frame height
ATTENTION_ALPHA = 0.4  # blend weight of the colour map at the heat map's peak
ATTENTION_SIGMA = 0.5  # Gaussian sigma per axis, as a fraction of the box side
ATTENTION_DIM = 0.8  # brightness far from every box (1 = no dimming)

# A 5 x 7 bitmap of the ten digits, one string of 7 rows of 5 pixels each.
_DIGITS = (
    "01110 10001 10011 10101 11001 10001 01110", "00100 01100 00100 00100 00100 00100 01110",
    "01110 10001 00001 00010 00100 01000 11111", "11110 00001 00001 01110 00001 00001 11110",
    "00010 00110 01010 10010 11111 00010 00010", "11111 10000 11110 00001 00001 10001 01110",
    "00110 01000 10000 11110 10001 10001 01110", "11111 00001 00010 00100 01000 01000 01000",
    "01110 10001 10001 01110 10001 10001 01110", "01110 10001 10001 01111 00001 00010 01100")
FONT = np.array([[[c == "1" for c in row] for row in d.split()] for d in _DIGITS])  # [10, 7, 5]


# ---------------------------------------------------------------------------------------------
# Boxes.


def pad_boxes(boxes_per_frame: Sequence[Any], num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-frame box lists -> (boxes float64 [F, N, 4] normalised xyxy, valid bool [F, N]).

  N is the largest count of any frame (at least 1); missing boxes are invalid rows.
  """
  if len(boxes_per_frame) != num_frames:
    raise ValueError(f"{num_frames} frames but boxes for {len(boxes_per_frame)} frames")
  arrays = [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes_per_frame]
  n = max([len(a) for a in arrays] + [1])
  boxes = np.zeros((num_frames, n, 4), np.float64)
  valid = np.zeros((num_frames, n), bool)
  for i, a in enumerate(arrays):
    boxes[i, :len(a)], valid[i, :len(a)] = a, True
  return boxes, valid


def _check_frames(frames: np.ndarray) -> np.ndarray:
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"expected frames uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
  return frames


CHUNK_PIXELS = 1 << 18  # frames are processed in chunks of about this many pixels (cache-sized)


def _chunked(renderer):
  """Runs a `(frames, boxes_per_frame, **kw)` renderer over chunks of frames: each chunk is still
  one vectorised call, and its float temporaries stay small enough for the CPU caches (one
  448x448 frame at a time is faster than sixteen in numpy)."""
  @functools.wraps(renderer)
  def run(frames, boxes_per_frame, **kw):
    frames = _check_frames(frames)
    if len(boxes_per_frame) != len(frames):
      raise ValueError(f"{len(frames)} frames but boxes for {len(boxes_per_frame)} frames")
    step = max(1, CHUNK_PIXELS // max(1, frames.shape[1] * frames.shape[2]))
    if len(frames) <= step:
      return renderer(frames, boxes_per_frame, **kw)
    return np.concatenate([renderer(frames[i:i + step], boxes_per_frame[i:i + step], **kw)
                           for i in range(0, len(frames), step)])
  return run


def _pixel_centres(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  return np.arange(h, dtype=np.float32) + 0.5, np.arange(w, dtype=np.float32) + 0.5


# ---------------------------------------------------------------------------------------------
# Renderers.


def darken_mask(boxes: np.ndarray, valid: np.ndarray, h: int, w: int,
                pad: int = DARKEN_PAD) -> np.ndarray:
  """bool [F, H, W]: the union of the boxes scaled to pixels (truncated toward zero), grown by
  `pad` px on every side and clipped to the image (end coordinates exclusive)."""
  px = np.trunc(boxes * np.array([w, h, w, h], np.float64)).astype(np.int64)
  x1, y1 = np.maximum(px[..., 0] - pad, 0), np.maximum(px[..., 1] - pad, 0)
  x2, y2 = np.minimum(px[..., 2] + pad, w), np.minimum(px[..., 3] + pad, h)
  ys, xs = np.arange(h), np.arange(w)
  rows = (ys >= y1[..., None]) & (ys < y2[..., None]) & valid[..., None]  # [F, N, H]
  cols = (xs >= x1[..., None]) & (xs < x2[..., None])  # [F, N, W]
  # Union over boxes of rows x cols, as one boolean matrix product per frame.
  return np.einsum("fnh,fnw->fhw", rows.astype(np.uint8), cols.astype(np.uint8)) > 0


def scale_pixels(frames: np.ndarray, factor: float) -> np.ndarray:
  """uint8 frames times `factor` in float64, truncated back to uint8 (the reference's cast),
  as a lookup in the 256 precomputed values (float32 or integer shortcuts differ on some
  values: 70 * 0.3 is 20.999... in float64, so 20)."""
  if not 0 <= factor <= 1:
    raise ValueError(f"darken factor must be in [0, 1], got {factor}")
  return (np.arange(256, dtype=np.float64) * factor).astype(np.uint8)[frames]


@_chunked
def darken(frames: np.ndarray, boxes_per_frame: Sequence[Any], *,
           factor: float = DARKEN_FACTOR, pad: int = DARKEN_PAD) -> np.ndarray:
  """Pixels outside the padded boxes times `factor` (float, then truncated back to uint8).

  Every pixel is scaled at once, then each padded box is copied back from the input (the union
  of rectangles; the same bytes as masking with `darken_mask`).
  """
  frames = _check_frames(frames)
  f, h, w, _ = frames.shape
  boxes, valid = pad_boxes(boxes_per_frame, f)
  out = scale_pixels(frames, factor)
  px = np.trunc(boxes * np.array([w, h, w, h], np.float64)).astype(np.int64)
  x1, y1 = np.maximum(px[..., 0] - pad, 0), np.maximum(px[..., 1] - pad, 0)
  x2, y2 = np.minimum(px[..., 2] + pad, w), np.minimum(px[..., 3] + pad, h)
  for i, n in zip(*np.nonzero(valid)):
    ys, xs = slice(y1[i, n], y2[i, n]), slice(x1[i, n], x2[i, n])
    out[i, ys, xs] = frames[i, ys, xs]
  return out


def _ellipse_windows(boxes: np.ndarray, valid: np.ndarray, h: int, w: int, reach: float):
  """Per valid box: (frame, centre, semi-axes, pixel window [y0, y1) x [x0, x1)) of the ellipse
  through its corners with its aspect ratio (semi-axes sqrt(2) x the half sides)."""
  frame, n = np.nonzero(valid)
  b = boxes[frame, n].astype(np.float32) * np.array([w, h, w, h], np.float32)  # [K, 4]
  cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
  root2 = np.float32(np.sqrt(2))
  ax = np.maximum((b[:, 2] - b[:, 0]) / 2, 0.5) * root2
  ay = np.maximum((b[:, 3] - b[:, 1]) / 2, 0.5) * root2
  x0 = np.clip(np.floor(cx - ax - reach), 0, w).astype(np.int64)
  x1 = np.clip(np.ceil(cx + ax + reach), 0, w).astype(np.int64)
  y0 = np.clip(np.floor(cy - ay - reach), 0, h).astype(np.int64)
  y1 = np.clip(np.ceil(cy + ay + reach), 0, h).astype(np.int64)
  return frame, (cx, cy), (ax, ay), (y0, y1, x0, x1)


def circle_coverage(boxes: np.ndarray, valid: np.ndarray, h: int, w: int,
                    width: float) -> np.ndarray:
  """float32 [F, H, W] in [0, 1]: how much of each pixel the ellipse outlines cover.

  The distance of a pixel centre to an ellipse is approximated to first order as
  |r - 1| / |grad r| with r the normalised radius; coverage is a 1-px linear ramp at the edges of
  the line (the anti-aliasing). All ellipses are evaluated at once on windows of one common size
  around them; each window is then max-combined into its frame.
  """
  f = boxes.shape[0]
  alpha = np.zeros((f, h, w), np.float32)
  frame, (cx, cy), (ax, ay), (y0, y1, x0, x1) = _ellipse_windows(boxes, valid, h, w,
                                                                 width / 2 + 1)
  if not len(frame):
    return alpha
  ch, cw = int((y1 - y0).max()), int((x1 - x0).max())
  u = (x0[:, None] + np.arange(cw, dtype=np.float32) + 0.5 - cx[:, None]) / ax[:, None]
  v = (y0[:, None] + np.arange(ch, dtype=np.float32) + 0.5 - cy[:, None]) / ay[:, None]
  r = np.sqrt(u[:, None, :] ** 2 + v[:, :, None] ** 2)  # [K, ch, cw]
  grad = np.sqrt((u / ax[:, None])[:, None, :] ** 2 + (v / ay[:, None])[:, :, None] ** 2)
  dist = np.abs(r - 1) * r / np.maximum(grad, 1e-6)  # |r - 1| / |grad r|, grad r = grad / r
  cover = np.clip(np.float32(width / 2 + 0.5) - dist, 0, 1)
  for k, i in enumerate(frame):
    win = alpha[i, y0[k]:y1[k], x0[k]:x1[k]]
    np.maximum(win, cover[k, :win.shape[0], :win.shape[1]], out=win)
  return alpha


def circle_width(h: int, w: int) -> int:
  """Line width in pixels: 1% of the shorter side, at least 2."""
  return max(2, int(round(CIRCLE_WIDTH * min(h, w))))


@_chunked
def circle(frames: np.ndarray, boxes_per_frame: Sequence[Any]) -> np.ndarray:
  """A red ellipse (255, 0, 0) circumscribing each box, anti-aliased."""
  frames = _check_frames(frames)
  f, h, w, _ = frames.shape
  boxes, valid = pad_boxes(boxes_per_frame, f)
  width = circle_width(h, w)
  alpha = circle_coverage(boxes, valid, h, w, width)
  out = frames.copy()
  red = np.asarray(CIRCLE_RGB, np.float32)
  # Blend inside each ellipse's window only, from the input frame, so windows that overlap
  # write the same values.
  frame, _, _, (y0, y1, x0, x1) = _ellipse_windows(boxes, valid, h, w, width / 2 + 1)
  for k, i in enumerate(frame):
    win = (i, slice(y0[k], y1[k]), slice(x0[k], x1[k]))
    a = alpha[win][..., None]
    out[win] = np.clip(np.rint(frames[win] * (1 - a) + red * a), 0, 255).astype(np.uint8)
  return out


def number_layout(h: int) -> tuple[int, int]:
  """(glyph scale in px per font pixel, margin in px) for a label ~8% of the frame height."""
  box = NUMBER_HEIGHT * h
  margin = max(1, int(round(box / 9)))
  scale = max(1, int(round((box - 2 * margin) / 7)))
  return scale, margin


def number_patch(indices: Sequence[int], h: int) -> tuple[np.ndarray, np.ndarray]:
  """(white bool [F, bh, bw], inside bool [F, bh, bw]): each frame's label on its black box,
  laid out for the frame with the most digits; `inside` marks each frame's own box."""
  indices = np.asarray(indices, np.int64)
  if indices.ndim != 1 or (indices < 0).any():
    raise ValueError(f"frame indices must be non-negative integers, got {indices.tolist()}")
  s, m = number_layout(h)
  ndig = np.array([len(str(int(i))) for i in indices])
  width = int(ndig.max()) if len(ndig) else 1
  digits = np.zeros((len(indices), width), np.int64)
  for j in range(width):  # right-aligned digits of every frame at once
    digits[:, width - 1 - j] = (indices // 10 ** j) % 10
  glyphs = FONT[digits] & (np.arange(width) >= width - ndig[:, None])[..., None, None]
  glyphs = np.pad(glyphs, ((0, 0), (0, 0), (0, 0), (0, 1)))  # one font pixel between digits
  text = glyphs.transpose(0, 2, 1, 3).reshape(len(indices), 7, width * 6)[..., :-1]
  text = text.repeat(s, axis=1).repeat(s, axis=2)  # [F, 7s, (6 width - 1) s]
  # Left-align each frame's digits: roll its text left past the unused leading digits.
  shift = (width - ndig) * 6 * s
  cols = (np.arange(text.shape[2])[None, :] + shift[:, None]) % text.shape[2]
  text = np.take_along_axis(text, cols[:, None, :].repeat(text.shape[1], 1), axis=2)
  white = np.pad(text, ((0, 0), (m, m), (m, m)))
  bw = (ndig * 6 - 1) * s + 2 * m
  inside = np.arange(white.shape[2])[None, None, :] < bw[:, None, None]
  inside = np.broadcast_to(inside, white.shape)
  return white & inside, inside


def numbers(frames: np.ndarray, indices: Sequence[int]) -> np.ndarray:
  """Each frame's 1-based index in the top-left corner: white digits on a black box."""
  frames = _check_frames(frames)
  f, h, w, _ = frames.shape
  if len(indices) != f:
    raise ValueError(f"{f} frames but {len(indices)} frame indices")
  white, inside = number_patch(indices, h)
  bh, bw = min(white.shape[1], h), min(white.shape[2], w)
  out = frames.copy()
  corner = out[:, :bh, :bw]
  label = np.where(white[:, :bh, :bw], np.uint8(255), np.uint8(0))[..., None]
  out[:, :bh, :bw] = np.where(inside[:, :bh, :bw, None], label, corner)
  return out


def heat_map(boxes: np.ndarray, valid: np.ndarray, h: int, w: int) -> np.ndarray:
  """float32 [F, H, W] in [0, 1]: the max over boxes of a Gaussian centred on the box with
  sigma = ATTENTION_SIGMA x the box's side on each axis (at least 1 px); separable, so each box
  costs one outer product."""
  b = boxes.astype(np.float32) * np.array([w, h, w, h], np.float32)
  cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
  sx = np.maximum((b[..., 2] - b[..., 0]) * ATTENTION_SIGMA, 1.0)
  sy = np.maximum((b[..., 3] - b[..., 1]) * ATTENTION_SIGMA, 1.0)
  ys, xs = _pixel_centres(h, w)
  gx = np.exp(-0.5 * ((xs - cx[..., None]) / sx[..., None]) ** 2)  # [F, N, W]
  gy = np.exp(-0.5 * ((ys - cy[..., None]) / sy[..., None]) ** 2) * valid[..., None]  # [F, N, H]
  heat = np.zeros((boxes.shape[0], h, w), np.float32)
  for n in range(boxes.shape[1]):
    np.maximum(heat, gy[:, n, :, None] * gx[:, n, None, :], out=heat)
  return heat


WARM_LOW = np.array([255, 40, 0], np.float32)  # colour of heat 0 (red)
WARM_HIGH = np.array([255, 240, 120], np.float32)  # colour of heat 1 (light yellow)


def warm_colours(heat: np.ndarray) -> np.ndarray:
  """float32 [..., 3]: heat 0 -> red, heat 1 -> light yellow."""
  heat = heat[..., None]
  return WARM_LOW * (1 - heat) + WARM_HIGH * heat


@_chunked
def attention(frames: np.ndarray, boxes_per_frame: Sequence[Any]) -> np.ndarray:
  """A warm heat map over the boxes blended at up to 0.4; regions far from boxes dimmed.

  out = frame * dim * (1 - alpha) + colour * alpha, alpha = 0.4 heat, dim = 0.8 + 0.2 heat,
  rounded half up; never above 255 since dim <= 1 and colours <= 255.
  """
  frames = _check_frames(frames)
  f, h, w, _ = frames.shape
  boxes, valid = pad_boxes(boxes_per_frame, f)
  heat = heat_map(boxes, valid, h, w)
  alpha = ATTENTION_ALPHA * heat
  keep = (ATTENTION_DIM + (1 - ATTENTION_DIM) * heat) * (1 - alpha)  # [F, H, W]
  out = np.empty_like(frames)
  for c in range(3):  # per channel: broadcasting over a trailing axis of 3 is slow in numpy
    colour = (WARM_LOW[c] + (WARM_HIGH[c] - WARM_LOW[c]) * heat) * alpha + 0.5
    out[..., c] = frames[..., c] * keep + colour  # truncation of x + 0.5: rounds half up
  return out


# The visual prompts (`prompt_type`, `selector.types`): name -> fn(frames, boxes_per_frame,
# indices, darken_factor, darken_pad) -> frames. `raw` first: the class of "no prompt".
RENDERERS = {
    "raw": lambda frames, boxes, indices, factor, pad: frames.copy(),
    "darken": lambda frames, boxes, indices, factor, pad: darken(frames, boxes, factor=factor,
                                                                 pad=pad),
    "circle": lambda frames, boxes, indices, factor, pad: circle(frames, boxes),
    "numbers": lambda frames, boxes, indices, factor, pad: numbers(
        frames, range(1, len(frames) + 1) if indices is None else indices),
    "attention": lambda frames, boxes, indices, factor, pad: attention(frames, boxes),
}
PROMPT_TYPES = tuple(RENDERERS)


def render(kind: str, frames: np.ndarray, boxes_per_frame: Sequence[Any],
           indices: Sequence[int] | None = None, *, darken_factor: float = DARKEN_FACTOR,
           darken_pad: int = DARKEN_PAD) -> np.ndarray:
  """Draws the visual prompt `kind` on frames uint8 [F, H, W, 3].

  Args:
    kind: one of PROMPT_TYPES (`raw` returns a copy).
    frames: the images to draw on.
    boxes_per_frame: F lists of normalised xyxy boxes (empty lists allowed).
    indices: 1-based positions of the frames in the prompt's frame list (`numbers`; default
      1..F).
    darken_factor, darken_pad: the darken constants (reference 0.3 and 10 px).
  """
  frames = _check_frames(frames)
  if kind not in RENDERERS:
    raise ValueError(f"unknown prompt type {kind!r}; expected one of {PROMPT_TYPES}")
  return RENDERERS[kind](frames, boxes_per_frame, indices, darken_factor, darken_pad)


# ---------------------------------------------------------------------------------------------
# Records.


def key_frame_boxes(record: Mapping[str, Any], per_key_frame: bool = True) -> list[np.ndarray]:
  """Boxes (normalised xyxy, float64 [n, 4]) to draw on each of the record's key frames.

  With `per_key_frame` each key frame gets the boxes of its own `key_items` entry; otherwise
  every key frame gets all boxes of all key frames (the released helper's behaviour).
  """
  items = record.get("key_items") or {}

  def boxes_of(idx) -> list[list[float]]:
    objects = items.get(str(idx)) or {}
    return [box for name in sorted(objects) for box in (objects[name] or [])]

  frames = record.get("key_frames") or []
  own = [np.asarray(boxes_of(kf["idx"]), np.float64).reshape(-1, 4) for kf in frames]
  if per_key_frame:
    return own
  every = np.concatenate(own) if own else np.zeros((0, 4))
  return [every] * len(frames)


def prompt_key_frames(record: Mapping[str, Any], key_frames: np.ndarray, kind: str,
                      indices: Sequence[int] | None = None, *, per_key_frame_boxes: bool = True,
                      darken_factor: float = DARKEN_FACTOR, darken_pad: int = DARKEN_PAD
                      ) -> np.ndarray:
  """The record's key-frame images uint8 [K, H, W, 3] with the visual prompt `kind` drawn.

  Args:
    record: an STGR record (`key_frames` [{idx, time}], `key_items` {str(idx): {name: [boxes
      normalised 0..1]}}).
    key_frames: the key-frame images, in the order of `record["key_frames"]`.
    kind: one of PROMPT_TYPES.
    indices: the key frames' 1-based positions in the prompt's frame list (`numbers`).
    per_key_frame_boxes: each key frame's own boxes (default) or all boxes of the record.
  """
  key_frames = np.asarray(key_frames)
  n = len(record.get("key_frames") or [])
  if len(key_frames) != n:
    raise ValueError(f"record id {record.get('id')!r}: {len(key_frames)} key-frame images for "
                     f"{n} key_frames")
  if n == 0:
    return key_frames.copy()
  return render(kind, key_frames, key_frame_boxes(record, per_key_frame_boxes), indices,
                darken_factor=darken_factor, darken_pad=darken_pad)
