"""`vcoach render`: PNGs of every prompt type per key frame, a contact sheet, clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import DATA_DIR
from vcoach_jax import cli
from vcoach_jax.prompting import visual_prompts as vp

RECORD = {
    "id": "vstar/demo", "task": "temporal-spatial free-form QA", "video_path": "x.mp4",
    "question": "What is the woman in the white coat standing near?", "answer": "a blue booth",
    "key_frames": [{"idx": 60, "time": 2.0, "path": ""}, {"idx": 300, "time": 10.0,
                                                          "path": "kf.jpg"}],
    "key_items": {"60": {"woman": [[0.53, 0.32, 0.66, 0.70]], "booth": [[0.03, 0.25, 0.36, 0.61]]},
                  "300": {"woman": [[0.57, 0.32, 0.66, 0.92]]}},
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
  root = tmp_path_factory.mktemp("render")
  os.symlink(DATA_DIR / "vstar_5587257558.mp4", root / "clip.mp4")
  jpeg = np.zeros((360, 640, 3), np.uint8)
  jpeg[:, 320:] = 230
  Image.fromarray(jpeg).save(root / "kf.jpg", quality=95)
  (root / "rec.json").write_text(json.dumps(RECORD))
  out = root / "out"
  rc = cli.main(["render", "--video", str(root / "clip.mp4"), "--record", str(root / "rec.json"),
                 "--out", str(out)])
  return root, out, rc


def _png(path):
  return np.asarray(Image.open(path).convert("RGB"))


def test_writes_every_type_and_a_sheet(rendered):
  _, out, rc = rendered
  assert rc == 0
  names = sorted(os.listdir(out))
  assert len(names) == 2 * len(vp.PROMPT_TYPES) + 1 and "vstar_demo_sheet.png" in names
  raw = np.stack([_png(out / f"vstar_demo_kf{k}_raw.png") for k in range(2)])
  h, w = raw.shape[1:3]
  assert h % 28 == 0 and w % 28 == 0
  # The drawings are the renderers' on the decoded key frames, with each frame's own boxes.
  boxes = vp.key_frame_boxes(RECORD)
  np.testing.assert_array_equal(
      np.stack([_png(out / f"vstar_demo_kf{k}_darken.png") for k in range(2)]),
      vp.darken(raw, boxes))
  np.testing.assert_array_equal(
      np.stack([_png(out / f"vstar_demo_kf{k}_circle.png") for k in range(2)]),
      vp.circle(raw, boxes))
  # The second key frame is the JPEG, resized to the frame size.
  assert raw[1, :, :w // 2 - 2].max() < 10 and raw[1, :, w // 2 + 2:].min() > 220
  sheet = _png(out / "vstar_demo_sheet.png")
  assert sheet.shape == (2 * h + 4, 5 * w + 16, 3)
  np.testing.assert_array_equal(sheet[:h, w + 4:2 * w + 4], _png(out / "vstar_demo_kf0_darken.png"))


def test_selected_types_and_all_boxes(rendered, tmp_path):
  root, out, _ = rendered
  rc = cli.main(["render", "--video", str(root / "clip.mp4"), "--record", str(root / "rec.json"),
                 "--type", "darken", "--all-boxes", "--out", str(tmp_path)])
  assert rc == 0 and len(os.listdir(tmp_path)) == 3
  kf1 = _png(tmp_path / "vstar_demo_kf1_darken.png")
  h, w = kf1.shape[:2]
  own = _png(out / "vstar_demo_kf1_darken.png")
  # Inside key frame 0's box of the woman but outside key frame 1's: bright only with all boxes.
  y, x = int(0.5 * h), int(0.535 * w)
  assert kf1[y, x].min() > 200 and own[y, x].max() < 80


def test_errors_name_the_problem(rendered, tmp_path, capsys):
  root, _, _ = rendered
  args = ["render", "--record", str(root / "rec.json"), "--out", str(tmp_path)]
  assert cli.main(args + ["--video", str(tmp_path / "missing.mp4")]) == 2
  assert "missing.mp4" in capsys.readouterr().err
  assert cli.main(args + ["--video", str(root / "clip.mp4"), "--type", "blur"]) == 2
  assert "--type 'blur'" in capsys.readouterr().err
  bad = dict(RECORD, key_items={"60": {"woman": [[0.5, 0.3, 1.7, 0.7]]}, "300": {}})
  (tmp_path / "bad.json").write_text(json.dumps(bad))
  assert cli.main(["render", "--record", str(tmp_path / "bad.json"), "--out", str(tmp_path),
                   "--video", str(root / "clip.mp4")]) == 2
  err = capsys.readouterr().err
  assert "vstar/demo" in err and "key_items['60']['woman'][0]" in err
