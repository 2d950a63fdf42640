"""Visual-prompt rendering throughput: 16 frames of 448x448, two boxes each, per renderer.

Baseline (named, measured in the same run): a per-frame PIL drawing loop doing the same job the
usual way — darken with `Image.point` + pasting the padded box crops back, circle with
`ImageDraw.ellipse(outline, width)` (not anti-aliased), numbers with `ImageDraw.rectangle` +
`ImageDraw.text` (PIL's default font), attention as filled ellipses blurred with
`GaussianBlur`, coloured with `ImageOps.colorize` and composited. Also shown: this project's
numpy renderers called one frame at a time (what vectorising over frames buys by itself).
Ratio = vectorised frames/s over PIL frames/s. Best of `--repeats` timings each.

  python benchmarks/render_bench.py [--frames 16] [--size 448] [--repeats 5]
"""

import argparse
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from vcoach_jax.prompting import visual_prompts as vp

KINDS = ("darken", "circle", "numbers", "attention")


def _pil_frame(kind: str, frame: np.ndarray, boxes: np.ndarray, index: int) -> np.ndarray:
  h, w = frame.shape[:2]
  im = Image.fromarray(frame)
  px = [(int(b[0] * w), int(b[1] * h), int(b[2] * w), int(b[3] * h)) for b in boxes]
  if kind == "darken":
    out = im.point(lambda v: int(v * 0.3))
    for x1, y1, x2, y2 in px:
      box = (max(x1 - 10, 0), max(y1 - 10, 0), min(x2 + 10, w), min(y2 + 10, h))
      out.paste(im.crop(box), box[:2])
    return np.asarray(out)
  draw = ImageDraw.Draw(im)
  if kind == "circle":
    lw = vp.circle_width(h, w)
    for x1, y1, x2, y2 in px:
      cx, cy, ax, ay = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 1.414, (y2 - y1) / 1.414
      draw.ellipse((cx - ax, cy - ay, cx + ax, cy + ay), outline=(255, 0, 0), width=lw)
    return np.asarray(im)
  if kind == "numbers":
    size = int(0.08 * h)
    font = ImageFont.load_default(size=size)
    text = str(index)
    left, top, right, bottom = draw.textbbox((4, 4), text, font=font)
    draw.rectangle((0, 0, right + 4, bottom + 4), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(im)
  heat = Image.new("L", (w, h), 0)
  hdraw = ImageDraw.Draw(heat)
  for x1, y1, x2, y2 in px:
    hdraw.ellipse((x1, y1, x2, y2), fill=255)
  heat = heat.filter(ImageFilter.GaussianBlur(radius=max(4, (px[0][2] - px[0][0]) // 3)))
  colour = ImageOps.colorize(heat, black=(255, 40, 0), white=(255, 240, 120))
  dimmed = im.point(lambda v: int(v * 0.8))
  return np.asarray(Image.composite(colour, dimmed, heat.point(lambda v: int(v * 0.4))))


def _best(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--size", type=int, default=448)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  f, s = args.frames, args.size
  frames = rng.integers(0, 256, (f, s, s, 3)).astype(np.uint8)
  boxes = []
  for _ in range(f):
    xy = rng.uniform(0.05, 0.6, (2, 2))
    wh = rng.uniform(0.1, 0.3, (2, 2))
    boxes.append(np.concatenate([xy, xy + wh], 1))
  indices = list(range(1, f + 1))
  print(f"{f} frames of {s}x{s}, 2 boxes each; frames/s, best of {args.repeats}")
  print(f"{'renderer':10s} {'PIL loop':>10s} {'numpy/frame':>12s} {'vectorised':>11s} "
        f"{'vs PIL':>7s}")
  for kind in KINDS:
    pil = _best(lambda: [_pil_frame(kind, frames[i], boxes[i], indices[i]) for i in range(f)],
                args.repeats)
    one = _best(lambda: [vp.render(kind, frames[i:i + 1], boxes[i:i + 1], indices[i:i + 1])
                         for i in range(f)], args.repeats)
    vec = _best(lambda: vp.render(kind, frames, boxes, indices), args.repeats)
    print(f"{kind:10s} {f / pil:10.0f} {f / one:12.0f} {f / vec:11.0f} {pil / vec:6.2f}x")


if __name__ == "__main__":
  main()
