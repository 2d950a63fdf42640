"""V-STAR evaluation of a trained policy as the published numbers were measured (the
vstar_reference protocol, docs/evaluation.md): 1 fps / 16 frames near native size, the
reference prompt set, greedy with repetition penalty 1.05 and 2,048 new tokens.

  vcoach eval --config configs/eval_vstar.py --checkpoint runs/vc7b/policy \\
      --data /data/vstar/V_STaR_test.json --video-dir /data/vstar/videos \\
      --judge model:/models/Qwen2.5-72B-Instruct
  vcoach eval --config configs/eval_vstar.py:runlocal --checkpoint DIR --limit 2
"""

from vcoach_jax import recipes
from vcoach_jax.configs import visioncoach_7b


def get_config(arg=None):
  arg = recipes.arguments(arg)
  config = visioncoach_7b.get_config()
  config.eval.benchmark = "vstar"
  config.eval.protocol = "vstar_reference"
  # Each prompt carries 16 near-native frames (~19k patches at 640x360) and the vision tower's
  # memory grows with rows x patches (a V-STAR item's five prompts each encode the clip), so
  # one prompt per sampler call; raise it where accelerator memory allows.
  config.eval.batch_size = 1
  config.sampling.greedy = True
  return recipes.finish(config, arg)
