"""Qwen2.5-VL architecture config: the Hugging Face `config.json` as a frozen dataclass.

`ModelConfig.from_hf(dict)` reads the fields of a transformers `Qwen2_5_VLConfig` json;
`to_hf()` writes back a dict that transformers 4.51 loads. Runtime choices that are not part of
the checkpoint (compute dtype, attention implementation, remat policy) live in the same dataclass
and are never written to `config.json`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

# Fields set by the run config, not by config.json.
RUNTIME_FIELDS = ("attention_impl", "attention_chunk", "remat_policy", "scan_layers")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  """The vision tower (ViT with window attention and a 2x2 patch merger)."""
  depth: int = 32
  hidden_size: int = 1280
  intermediate_size: int = 3420
  num_heads: int = 16
  in_channels: int = 3
  patch_size: int = 14
  temporal_patch_size: int = 2
  spatial_merge_size: int = 2
  window_size: int = 112
  out_hidden_size: int = 3584
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  tokens_per_second: float = 2
  hidden_act: str = "silu"

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Length of one flattened patch as the HF processor delivers it (C * Tp * P * P)."""
    return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

  @property
  def merge_unit(self) -> int:
    return self.spatial_merge_size ** 2


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Text decoder fields (flat, as in the HF json), the vision config and runtime options."""
  vocab_size: int = 152064
  hidden_size: int = 3584
  intermediate_size: int = 18944
  num_hidden_layers: int = 28
  num_attention_heads: int = 28
  num_key_value_heads: int = 4
  rms_norm_eps: float = 1e-6
  rope_theta: float = 1e6
  mrope_section: tuple[int, ...] = (16, 24, 24)
  max_position_embeddings: int = 128000
  tie_word_embeddings: bool = False
  hidden_act: str = "silu"
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  bos_token_id: int = 151643
  eos_token_id: int = 151645
  vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
  # Runtime options (not part of config.json).
  attention_impl: str = "xla"  # a name of layers.ATTENTION
  attention_chunk: int = 512  # query block of the "chunked" implementation
  remat_policy: str = "none"  # a name of layers.REMAT_POLICIES
  scan_layers: bool = False  # decoder layers and vision blocks stacked, each run by one lax.scan

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                       f"num_attention_heads {self.num_attention_heads}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
    if 2 * sum(self.mrope_section) != self.head_dim:
      raise ValueError(f"mrope_section {self.mrope_section} must sum to head_dim/2 = "
                       f"{self.head_dim // 2}")
    from vcoach_jax.model import layers  # pylint: disable=g-import-not-at-top
    if self.attention_impl not in layers.ATTENTION:
      raise ValueError(f"attention_impl must be one of {tuple(layers.ATTENTION)}, got "
                       f"{self.attention_impl!r}")
    if self.attention_chunk < 1:
      raise ValueError(f"attention_chunk must be >= 1, got {self.attention_chunk}")
    if self.remat_policy not in layers.REMAT_POLICIES:
      raise ValueError(f"remat_policy must be one of {tuple(layers.REMAT_POLICIES)}, got "
                       f"{self.remat_policy!r}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @staticmethod
  def runtime_options(section) -> dict[str, Any]:
    """The runtime fields a run config's `model` section sets (missing ones keep defaults)."""
    return {name: section[name] for name in RUNTIME_FIELDS if name in section}

  def replace(self, **kw) -> ModelConfig:
    return dataclasses.replace(self, **kw)

  # --- Presets (public config.json values) ---------------------------------------------------
  @classmethod
  def qwen2_5_vl_7b(cls) -> ModelConfig:
    return cls()

  @classmethod
  def qwen2_5_vl_3b(cls) -> ModelConfig:
    return cls(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
               num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True,
               vision=VisionConfig(out_hidden_size=2048))

  @classmethod
  def tiny(cls, **kw) -> ModelConfig:
    """A few-layer model for tests and the CPU demo (same code path as 7B)."""
    vision = VisionConfig(depth=2, hidden_size=32, intermediate_size=48, num_heads=2,
                          window_size=56, out_hidden_size=64, fullatt_block_indexes=(1,))
    base = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, mrope_section=(2, 3, 3),
                image_token_id=500, video_token_id=501, vision_start_token_id=502,
                vision_end_token_id=503, bos_token_id=504, eos_token_id=505, vision=vision)
    base.update(kw)
    return cls(**base)

  @classmethod
  def tiny_deep(cls, **kw) -> ModelConfig:
    """`tiny` with 4 decoder layers: the CPU demo's model. Depth, not width, is what lets the
    tiny decoder learn where the asked object is within a few thousand SFT examples
    (docs/ablation.md, "Why the boxes stayed near chance")."""
    return cls.tiny(**{"num_hidden_layers": 4, **kw})

  @classmethod
  def tiny_wide(cls, **kw) -> ModelConfig:
    """`tiny` twice as wide (vision tower too) with a third decoder layer."""
    vision = VisionConfig(depth=2, hidden_size=64, intermediate_size=128, num_heads=2,
                          window_size=56, out_hidden_size=128, fullatt_block_indexes=(1,))
    base = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, mrope_section=(4, 6, 6),
                vision=vision)
    base.update(kw)
    return cls.tiny(**base)

  # --- HF json --------------------------------------------------------------------------------
  @classmethod
  def from_hf(cls, d: dict[str, Any], **runtime) -> ModelConfig:
    """Builds the config from a parsed HF `config.json` dict (text fields may be flat or under
    `text_config`)."""
    text = dict(d.get("text_config") or {})
    text.update({k: v for k, v in d.items() if k not in ("text_config", "vision_config")})
    v = d.get("vision_config") or {}
    vdef = VisionConfig()
    vision = VisionConfig(
        depth=v.get("depth", vdef.depth),
        hidden_size=v.get("hidden_size", vdef.hidden_size),
        intermediate_size=v.get("intermediate_size", vdef.intermediate_size),
        num_heads=v.get("num_heads", vdef.num_heads),
        in_channels=v.get("in_channels", v.get("in_chans", vdef.in_channels)),
        patch_size=v.get("patch_size", v.get("spatial_patch_size", vdef.patch_size)),
        temporal_patch_size=v.get("temporal_patch_size", vdef.temporal_patch_size),
        spatial_merge_size=v.get("spatial_merge_size", vdef.spatial_merge_size),
        window_size=v.get("window_size", vdef.window_size),
        out_hidden_size=v.get("out_hidden_size", vdef.out_hidden_size),
        fullatt_block_indexes=tuple(v.get("fullatt_block_indexes", vdef.fullatt_block_indexes)),
        tokens_per_second=v.get("tokens_per_second", vdef.tokens_per_second),
        hidden_act=v.get("hidden_act", vdef.hidden_act),
    )
    # transformers < 5 writes `rope_scaling` (and `rope_theta` beside it); transformers 5 writes
    # `rope_parameters`, with `rope_theta` inside.
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "mrope"):
      raise ValueError(f"rope_scaling type {rope_type!r} is not supported (only default/mrope)")
    if text.get("hidden_act", "silu") != "silu" or vision.hidden_act != "silu":
      raise ValueError("only hidden_act='silu' is supported")
    dflt = cls()
    fields = {}
    for f in dataclasses.fields(cls):
      if f.name in ("vision", "mrope_section") + RUNTIME_FIELDS:
        continue
      if f.name in text and text[f.name] is not None:
        fields[f.name] = text[f.name]
    if "rope_theta" not in fields and rope.get("rope_theta") is not None:
      fields["rope_theta"] = rope["rope_theta"]
    if isinstance(fields.get("eos_token_id"), list):
      fields["eos_token_id"] = fields["eos_token_id"][0]
    section = tuple(rope.get("mrope_section", dflt.mrope_section))
    return cls(**fields, mrope_section=section, vision=vision, **runtime)

  @classmethod
  def from_file(cls, path: str | pathlib.Path, **runtime) -> ModelConfig:
    from vcoach_jax import storage  # pylint: disable=g-import-not-at-top
    try:
      return cls.from_hf(json.loads(storage.read_text(path)), **runtime)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      raise ValueError(f"{path}: not a Qwen2.5-VL config.json ({type(e).__name__}: {e})") from None

  def to_hf(self) -> dict[str, Any]:
    """The `config.json` dict transformers' `Qwen2_5_VLConfig` reads."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
           if f.name not in ("vision", "mrope_section") + RUNTIME_FIELDS}
    v = self.vision
    out.update(
        architectures=["Qwen2_5_VLForConditionalGeneration"],
        model_type="qwen2_5_vl",
        attention_dropout=0.0,
        use_sliding_window=False,
        sliding_window=self.max_position_embeddings,
        max_window_layers=self.num_hidden_layers,
        rope_scaling={"type": "mrope", "mrope_section": list(self.mrope_section)},
        torch_dtype="float32",
        vision_config=dict(
            depth=v.depth, hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
            num_heads=v.num_heads, in_channels=v.in_channels, in_chans=v.in_channels,
            patch_size=v.patch_size, temporal_patch_size=v.temporal_patch_size,
            spatial_merge_size=v.spatial_merge_size, window_size=v.window_size,
            out_hidden_size=v.out_hidden_size, fullatt_block_indexes=list(v.fullatt_block_indexes),
            tokens_per_second=v.tokens_per_second, hidden_act=v.hidden_act,
            model_type="qwen2_5_vl"),
    )
    return out


# The model presets (`config.model.preset`): name -> its ModelConfig.
PRESETS = {
    "tiny": ModelConfig.tiny,
    "tiny_deep": ModelConfig.tiny_deep,
    "tiny_wide": ModelConfig.tiny_wide,
    "qwen2_5_vl_3b": ModelConfig.qwen2_5_vl_3b,
    "qwen2_5_vl_7b": ModelConfig.qwen2_5_vl_7b,
}
