"""Frame sampling, smart resize and decoding against the values of docs/design.md §6."""

import os

os.environ.setdefault("USE_TF", "0")

import pathlib

import numpy as np
import pytest

from vcoach_jax.data import video

DATA = pathlib.Path(__file__).parent / "data"
CLIP_22S = str(DATA / "example_22s_640x360.mp4")
CLIP_VSTAR = str(DATA / "vstar_5587257558.mp4")


@pytest.mark.parametrize("seconds, native_fps, frames, fps", [
    (60, 30, 16, 16 / 1800 * 30),  # 0.2667 fps
    (5, 30, 10, 2.0),
    (1, 30, 4, 4.0),
    (7.5, 2, 14, 14 / 15 * 2),  # 15 frames: 15 wanted, upper bound floor_even(15) = 14
    (3, 1, 2, 2 / 3),  # a 3-frame video: the clamp to total frames wins, then even
])
def test_frame_count_and_fps(seconds, native_fps, frames, fps):
  total = int(round(seconds * native_fps))
  n = video.num_frames(total, native_fps)
  assert n == frames
  assert video.sample_fps(n, total, native_fps) == pytest.approx(fps, abs=1e-4)


def test_sixty_second_video_is_0_2667_fps():
  assert round(video.sample_fps(video.num_frames(1800, 30), 1800, 30), 4) == 0.2667


def test_frame_indices_round_half_to_even():
  np.testing.assert_array_equal(video.frame_indices(10, 4), [0, 3, 6, 9])
  # linspace(0, 4, 4) = 0, 1.333, 2.667, 4 -> 0, 1, 3, 4; linspace(0, 5, 3) has 2.5 -> 2.
  np.testing.assert_array_equal(video.frame_indices(5, 4), [0, 1, 3, 4])
  np.testing.assert_array_equal(video.frame_indices(6, 3), [0, 2, 5])


def test_pixel_bounds():
  assert video.frame_pixel_bounds(16) == (100352, 105369)
  assert video.frame_pixel_bounds(4) == (100352, 105369)


@pytest.mark.parametrize("hw, expected", [
    ((360, 640), (224, 420)),
    ((480, 640), (280, 364)),
    ((1080, 1920), (224, 420)),
])
def test_frame_size(hw, expected):
  assert video.frame_size(*hw, n=16) == expected


def test_smart_resize_branches():
  # Too small: scaled up with ceil.
  assert video.smart_resize(56, 56, 28, 100352, 105369) == (336, 336)
  # Rounded area over max, scaled down with floor, lands below min: branches checked once.
  h, w = video.smart_resize(100, 1000, 28, 100352, 105369)
  assert (h, w) == (84, 1008) and h * w < 100352
  # Images (visual QA): min 4*28*28, max 256*28*28.
  assert video.smart_resize(336, 596, 28, 4 * 784, 256 * 784) == (336, 588)
  with pytest.raises(ValueError, match="smaller than 28"):
    video.smart_resize(20, 100)


def test_resize_matches_torch_antialiased_bicubic():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(0)
  for (h0, w0), (h1, w1) in [((90, 160), (56, 112)), ((30, 40), (56, 84))]:
    x = rng.integers(0, 256, (2, h0, w0, 3), dtype=np.uint8)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
    ref = torch.nn.functional.interpolate(
        t, size=(h1, w1), mode="bicubic", antialias=True, align_corners=False)
    ref = ref.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = video.resize_frames(x, h1, w1)
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.005


@pytest.mark.parametrize("path, total, native_fps, size", [
    (CLIP_22S, 491, 22.29, (420, 224)),
    (CLIP_VSTAR, 540, 29.97, (420, 224)),
])
def test_decode_real_clip(path, total, native_fps, size):
  decord = pytest.importorskip("decord")
  v = video.decode_video(path)
  assert v.total_frames == total
  assert v.native_fps == pytest.approx(native_fps, abs=0.01)
  assert v.frames.shape == (16, size[1], size[0], 3) and v.frames.dtype == np.uint8
  assert v.size == size and v.original_size == (640, 360)
  np.testing.assert_array_equal(v.indices, np.round(np.linspace(0, total - 1, 16)))
  assert v.sample_fps == pytest.approx(16 / total * native_fps, rel=1e-3)
  assert v.duration == pytest.approx(total / v.native_fps)
  np.testing.assert_allclose(v.timestamps, v.indices / v.native_fps)
  # Timestamps agree with the container's presentation times within one frame.
  reader = decord.VideoReader(path)
  pts = np.array([reader.get_frame_timestamp(int(i))[0] for i in v.indices])
  np.testing.assert_allclose(v.timestamps, pts, atol=1.0 / native_fps + 1e-3)
  assert v.timestamps[0] == 0 and v.timestamps[-1] == pytest.approx((total - 1) / v.native_fps)
  # Frames are real pictures, not padding.
  assert v.frames.std() > 10


def test_decode_errors_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.mp4"):
    video.decode_video(str(tmp_path / "missing.mp4"))
  bad = tmp_path / "corrupt.mp4"
  bad.write_bytes(b"\x00\x01not a video" * 100)
  with pytest.raises(ValueError, match="corrupt.mp4"):
    video.decode_video(str(bad))


def test_load_image(tmp_path):
  from PIL import Image
  Image.fromarray(np.full((596, 336, 3), 7, np.uint8)).save(tmp_path / "im.png")
  image, original = video.load_image(str(tmp_path / "im.png"))
  assert original == (336, 596) and image.shape == (588, 336, 3)


def test_config_video_section_is_the_reference_spec():
  from vcoach_jax import config as config_lib
  cfg = config_lib.load(None, ["video.pixels_factor=4"])
  assert video.VideoSpec.from_config(config_lib.default_config().video) == video.VideoSpec()
  spec = video.VideoSpec.from_config(cfg.video)
  assert video.frame_pixel_bounds(16, spec) == (3136, 3292)


def test_smart_resize_equals_transformers():
  hypothesis = pytest.importorskip("hypothesis")
  st = hypothesis.strategies
  from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_resize

  @hypothesis.settings(max_examples=300, deadline=None)
  @hypothesis.given(st.integers(28, 4000), st.integers(28, 4000),
                    st.sampled_from([(100352, 105369), (3136, 200704), (3136, 1003520)]))
  def check(h, w, bounds):
    hypothesis.assume(max(h, w) / min(h, w) <= 200)
    ours = video.smart_resize(h, w, 28, *bounds)
    theirs = hf_resize(h, w, 28, *bounds)
    # Where transformers' version floors a side to 0 (extreme aspect ratios), the reference
    # (qwen-vl-utils) keeps at least one 28-pixel patch, as ours does.
    assert ours == tuple(max(28, v) for v in theirs)
    assert ours[0] % 28 == 0 and ours[1] % 28 == 0 and min(ours) >= 28

  check()
