"""VisionCoach RL of Qwen2.5-VL-7B on STGR (the paper's run), for a TPU pod slice or 8 GPUs.

  vcoach prepare --json stgr_rl.json --media-root /data/videos --out /data/stgr_tfds
  vcoach train --config configs/visioncoach_7b.py --workdir gs://BUCKET/vc7b \\
      --set model.checkpoint=/ckpt/qwen2_5_vl_7b_sft --set selector.cache=/data/vp_cache.json
  launch/tpu_pod.sh train NAME ZONE configs/visioncoach_7b.py gs://BUCKET/vc7b  # on a pod
  vcoach train --config configs/visioncoach_7b.py:runlocal --steps 2 --workdir /tmp/vc7b_local

`:runlocal` runs this recipe on a CPU: the tiny model and the synthetic world, every other
setting kept (vcoach_jax/recipes.py).

Every value not set here is the embedded default's (configs/default.py), which carries the
reference constants: G = 4, temperature 1.0 / top-p 0.95 / top-k 50, k1 = 2.21, alpha 0.1,
beta 0.04, eps 0.2, top-2 positives by answer accuracy.
"""

from vcoach_jax import recipes
from vcoach_jax.configs import default


def get_config(arg=None):
  arg = recipes.arguments(arg)
  config = default.get_config()
  config.model.checkpoint = ""  # set to the cold-start SFT checkpoint (HF layout)
  config.model.preset = "qwen2_5_vl_7b"
  config.model.dtype = "bfloat16"  # bf16 compute; fp32 master weights and optimizer state
  # chunked: XLA attention in query blocks, memory-safe on TPU and GPU alike (on GPUs, `cudnn`
  # is the faster fused kernel). `vcoach plan` with this config at fsdp=8 (8 chips: v5p-16 or
  # 8x H100): 114 GiB per device, over both (README: the settings tried).
  config.model.attention_impl = "chunked"
  config.model.remat_policy = "full"
  config.model.scan_layers = True  # 28 decoder layers, one compiled body
  config.parallel.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))  # FSDP over all chips

  config.video.timestamps = "reference"  # the released trainers' frame labels (docs/prompts.md)
  config.data.source = "tfds"
  config.data.tfds_dir = ""  # `vcoach prepare --out`
  config.data.tokenizer_dir = ""  # "" = the checkpoint's tokenizer
  config.data.batch_size = 8  # prompts per optimizer step (the reference: one per GPU x 8)
  config.data.max_patches = 16384
  config.data.max_images = 20
  config.data.max_target_length = 1024
  config.sampling.max_new_tokens = 768

  config.optim.lr = 1e-6
  config.optim.epochs = 1.0  # one epoch over data.split (the reference's run); sets total_steps
  config.optim.grad_accum = 4  # 4 micro-batches (`vcoach plan`: 114 GiB per device at fsdp=8)
  # Each micro-batch runs its own prompts: 114 GiB per device at fsdp=8 against 133 GiB with the
  # prompts of all micro-batches in one forward (rl/prompt_once.py holds all their states).
  config.optim.prompt_once = False
  config.checkpoint.every_steps = 50
  config.selector.cache = ""  # `vcoach select predict` output; "" = raw prompts for hard samples
  return recipes.finish(config, arg)
