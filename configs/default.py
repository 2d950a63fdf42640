"""The embedded default: tiny model, synthetic grounded-video data, CPU.

Every hyper-parameter of the project lives here, each on its own line; other configs start from
this one and change a few fields. It is also the schema: a config or a `--set` override naming a
key that is not here, or giving a value of another type, is refused at start.

  vcoach rewards vcoach_jax/assets/example_completions.jsonl
  vcoach rewards IN.jsonl --config configs/default.py --set rewards.spatial_iou_mode=max
"""

import ml_collections


def get_config(arg=None):
  """Returns the default config. `arg` is unused (kept for the `file.py:arg` convention)."""
  del arg
  config = ml_collections.ConfigDict()

  # --- Rewards (REWARDS.md). Values of the paper's run; the released code's CLI defaults are
  # max / none / all / True.
  config.rewards = ml_collections.ConfigDict()
  config.rewards.spatial_iou_mode = "avg"  # max | avg: how a claim scores several GT objects.
  config.rewards.identity_match_mode = "soft"  # none | soft | strict: claim name vs GT object.
  config.rewards.spatial_norm_mode = "matched"  # all | matched: thk_spatial denominator.
  config.rewards.correct_tempgate = True  # |g - t| <= 1 s (True) or the one-sided g - t < 1 s.
  # Fixed shapes of the reward kernels. A batch that needs more grows to the next power of two
  # (a new compilation, counted); a result never changes because of these.
  config.rewards.max_times = 16  # time tags per think block
  config.rewards.max_claims = 8  # <obj>..<box>..at<t>..s claims per think block
  config.rewards.max_boxes = 8  # boxes per claim, and predicted boxes in a VQA think block
  config.rewards.max_key_frames = 8  # key frames per sample
  config.rewards.max_objects = 4  # GT objects per key frame
  config.rewards.max_gt_boxes = 2  # GT boxes per object

  # --- Model (Qwen2.5-VL, vcoach_jax/model). With no checkpoint a random model of `preset` is
  # built (the embedded default is `tiny`); with one, sizes come from its config.json.
  config.model = ml_collections.ConfigDict()
  config.model.checkpoint = ""  # HF Qwen2.5-VL folder (config.json + safetensors); "" = random
  config.model.preset = "tiny"  # tiny | qwen2_5_vl_3b | qwen2_5_vl_7b (ModelConfig presets)
  config.model.dtype = "float32"  # float32 | bfloat16: params and compute (softmax/norms fp32)
  config.model.attention_impl = "xla"  # xla (CPU, tests) | dot_product_attention | cudnn
  config.model.remat_policy = "none"  # none | full | dots | dots_no_batch (layers.remat_policy)
  config.model.lora_rank = 0  # 0 = no LoRA; otherwise adapters on lora_targets
  config.model.lora_alpha = 16.0  # LoRA scale = alpha / rank
  config.model.lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                               "down_proj")  # regexes matched at the end of a linear's path

  # --- Parallel (vcoach_jax/parallel/mesh.py). One size per mesh axis; -1 = remaining devices.
  config.parallel = ml_collections.ConfigDict()
  config.parallel.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
  # Logical axis -> mesh axes. Weights: FSDP over the width, tensor parallel over heads/mlp/vocab.
  config.parallel.rules = (
      ("embed", ("fsdp",)),
      ("vocab", ("tensor",)),
      ("heads", ("tensor",)),
      ("kv_heads", ("tensor",)),
      ("mlp", ("tensor",)),
      ("vit_embed", ("fsdp",)),
      ("vit_heads", ("tensor",)),
      ("vit_mlp", ("tensor",)),
      ("patch", ()),
      ("norm", ()),
      ("lora_rank", ()),
      ("batch", ("data", "fsdp")),  # activations
  )

  return config
