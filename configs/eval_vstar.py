"""V-STAR evaluation of a trained policy: raw video, no prompt, greedy (DESIGN.md §9).

  vcoach eval --config configs/eval_vstar.py --checkpoint runs/vc7b/policy \\
      --benchmark vstar --data /data/vstar/V_STaR_test.json
"""

from vcoach_jax.configs import visioncoach_7b


def get_config(arg=None):
  config = visioncoach_7b.get_config(arg)
  config.eval.benchmark = "vstar"
  config.eval.batch_size = 8
  config.sampling.greedy = True
  return config
