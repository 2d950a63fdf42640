"""Tiny random Qwen2.5-VL models built with transformers, and processor-like inputs, for tests."""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from vcoach_jax.model.config import VisionConfig  # noqa: E402

IMAGE, VIDEO, VSTART, VEND = 500, 501, 502, 503
PATCH_DIM = VisionConfig().patch_dim


def hf_config(**overrides) -> transformers.Qwen2_5_VLConfig:
  vision = dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64,
                window_size=56, fullatt_block_indexes=[0, 2], tokens_per_second=2, patch_size=14,
                temporal_patch_size=2, spatial_merge_size=2, in_channels=3)
  vision.update(overrides.pop("vision", {}))
  kw = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000.0,
            max_position_embeddings=4096, tie_word_embeddings=False,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, vision_config=vision,
            image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=VSTART,
            vision_end_token_id=VEND, bos_token_id=504, eos_token_id=505, pad_token_id=0,
            initializer_range=0.1)
  kw.update(overrides)
  return transformers.Qwen2_5_VLConfig(**kw)


def hf_model(seed: int = 0, **overrides) -> transformers.Qwen2_5_VLForConditionalGeneration:
  """A random fp32 model in eval mode; norm scales are randomised too so they matter."""
  torch.manual_seed(seed)
  cfg = hf_config(**overrides)
  cfg._attn_implementation = "eager"  # pylint: disable=protected-access
  cfg.vision_config._attn_implementation = "eager"  # pylint: disable=protected-access
  model = transformers.Qwen2_5_VLForConditionalGeneration(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight") or "norm1" in name or "norm2" in name or "ln_q" in name:
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn_like(p))
  return model


def vision_run(kind: int, grid: tuple[int, int, int]) -> list[int]:
  n = grid[0] * grid[1] * grid[2] // 4
  return [VSTART] + [kind] * n + [VEND]


def make_inputs(rows: list[list[int]], images=(), videos=(), seconds=None, seed: int = 0):
  """Left-pads `rows` into a processor-like dict of numpy arrays with random pixels."""
  rng = np.random.default_rng(seed)
  t = max(len(r) for r in rows)
  ids = np.zeros((len(rows), t), np.int64)
  mask = np.zeros((len(rows), t), np.int64)
  for i, r in enumerate(rows):
    ids[i, t - len(r):] = r
    mask[i, t - len(r):] = 1
  out = {"input_ids": ids, "attention_mask": mask}
  if images:
    grid = np.asarray(images, np.int64)
    out["image_grid_thw"] = grid
    out["pixel_values"] = rng.standard_normal((int(grid.prod(-1).sum()), PATCH_DIM)).astype(np.float32)
  if videos:
    grid = np.asarray(videos, np.int64)
    out["video_grid_thw"] = grid
    out["pixel_values_videos"] = rng.standard_normal(
        (int(grid.prod(-1).sum()), PATCH_DIM)).astype(np.float32)
    if seconds is not None:
      out["second_per_grid_ts"] = np.asarray(seconds, np.float32)
  return out


def torch_logits(model, inputs) -> np.ndarray:
  kw = {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}
  if "second_per_grid_ts" in kw:
    kw["second_per_grid_ts"] = kw["second_per_grid_ts"].tolist()
  with torch.no_grad():
    return model(**kw, use_cache=False).logits.float().numpy()


def text_row(rng: np.random.Generator, n: int) -> list[int]:
  return rng.integers(1, 400, size=n).tolist()
