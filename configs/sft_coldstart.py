"""Cold-start SFT of Qwen2.5-VL-7B on the grounded STGR traces (docs/design.md §8.8).

  vcoach sft --config configs/sft_coldstart.py --workdir gs://BUCKET/sft7b \\
      --set model.checkpoint=/ckpt/Qwen2.5-VL-7B-Instruct --set data.tfds_dir=/data/stgr_sft
  vcoach sft --config configs/sft_coldstart.py:runlocal --steps 2 --workdir /tmp/sft_local
"""

from vcoach_jax import recipes
from vcoach_jax.configs import visioncoach_7b


def get_config(arg=None):
  arg = recipes.arguments(arg)
  config = visioncoach_7b.get_config()
  config.sft.steps = 2000
  config.sft.lr = 1e-6
  config.checkpoint.every_steps = 200
  return recipes.finish(config, arg)
