"""VP-Selector in the paper's form: Qwen2.5-VL-3B with LoRA over video + question, choosing
among all prompt types; labels from proxy reasoners (docs/design.md §8.6).

  vcoach select build-data --config configs/selector.py --workdir runs/sel \\
      --set 'selector.reasoners=("/ckpt/sft7b/policy",)'
  vcoach select train --config configs/selector.py --workdir runs/sel
  vcoach select predict --config configs/selector.py --workdir runs/sel --split train
  vcoach select build-data --config configs/selector.py:runlocal --workdir /tmp/sel --limit 2
"""

from vcoach_jax import recipes
from vcoach_jax.configs import visioncoach_7b


def get_config(arg=None):
  arg = recipes.arguments(arg)
  config = visioncoach_7b.get_config()
  config.model.preset = "qwen2_5_vl_3b"
  config.selector.mode = "vl"
  config.selector.types = ("raw", "darken", "circle", "numbers", "attention")
  config.selector.backbone = ""  # the 3B checkpoint folder (HF layout)
  config.selector.lora_rank = 16
  config.selector.lora_alpha = 32.0
  config.selector.steps = 2000
  config.selector.batch_size = 16
  return recipes.finish(config, arg)
