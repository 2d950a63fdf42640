"""Qwen2.5-VL in Flax NNX: model, HF checkpoints in and out, LoRA.

Public contract (docs/design.md §4): `load_hf(path, dtype=..., mesh=...)`, `save_hf(model, path)`,
`logits(model, inputs)`.
"""

from vcoach_jax.model.config import ModelConfig, VisionConfig
from vcoach_jax.model.hf_checkpoint import CheckpointError, load_hf, save_hf
from vcoach_jax.model.qwen2_5_vl import (KVCache, ModelInputs, Qwen2_5_VL, decode_step,
                                         init_cache, logits, prefill, prepare_inputs)

__all__ = [
    "CheckpointError", "KVCache", "ModelConfig", "ModelInputs", "Qwen2_5_VL", "VisionConfig",
    "decode_step", "init_cache", "load_hf", "logits", "prefill", "prepare_inputs", "save_hf",
]
