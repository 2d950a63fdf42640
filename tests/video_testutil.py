"""Tiny videos for tests, written with nothing but PIL: Motion-JPEG in an AVI container, which
decord (ffmpeg) decodes like any video file."""

import io
import struct

import numpy as np
from PIL import Image


def _chunk(tag: bytes, data: bytes) -> bytes:
  return tag + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def _list(kind: bytes, data: bytes) -> bytes:
  return _chunk(b"LIST", kind + data)


def write_avi(path, frames: np.ndarray, fps: float) -> None:
  """Writes uint8 frames [n, h, w, 3] as an MJPEG AVI at `fps` frames per second."""
  frames = np.asarray(frames, np.uint8)
  n, h, w = frames.shape[:3]
  jpegs = []
  for frame in frames:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=90)
    jpegs.append(buf.getvalue())
  avih = struct.pack("<14I", int(1e6 / fps), 0, 0, 0x10, n, 0, 1, 0, w, h, 0, 0, 0, 0)
  strh = struct.pack("<4s4sIHHIIIIIIIIhhhh", b"vids", b"MJPG", 0, 0, 0, 0, 1000,
                     int(round(fps * 1000)), 0, n, 0, 0xFFFFFFFF, 0, 0, 0, w, h)
  strf = struct.pack("<IiiHH4sIiiII", 40, w, h, 1, 24, b"MJPG", w * h * 3, 0, 0, 0, 0)
  header = _list(b"hdrl", _chunk(b"avih", avih)
                 + _list(b"strl", _chunk(b"strh", strh) + _chunk(b"strf", strf)))
  movi, index, offset = b"", b"", 4
  for jpeg in jpegs:
    chunk = _chunk(b"00dc", jpeg)
    index += struct.pack("<4sIII", b"00dc", 0x10, offset, len(jpeg))
    offset += len(chunk)
    movi += chunk
  body = b"AVI " + header + _list(b"movi", movi) + _chunk(b"idx1", index)
  with open(path, "wb") as f:
    f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def ramp_frames(n: int, h: int = 48, w: int = 64, start: int = 0) -> np.ndarray:
  """`n` flat grey frames whose level rises by 10 per frame from `start`."""
  levels = (start + 10 * np.arange(n)) % 250
  return np.broadcast_to(levels[:, None, None, None], (n, h, w, 3)).astype(np.uint8).copy()
