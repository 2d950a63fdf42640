"""V-STAR evaluation of a trained policy: raw video, no prompt, greedy (DESIGN.md §9).

  vcoach eval --config configs/eval_vstar.py --checkpoint runs/vc7b/policy \\
      --benchmark vstar --data /data/vstar/V_STaR_test.json
  vcoach eval --config configs/eval_vstar.py:runlocal --checkpoint DIR --limit 2
"""

from vcoach_jax import recipes
from vcoach_jax.configs import visioncoach_7b


def get_config(arg=None):
  arg = recipes.parse_arg(arg, runlocal=False)
  config = visioncoach_7b.get_config()
  config.eval.benchmark = "vstar"
  config.eval.batch_size = 8
  config.sampling.greedy = True
  return recipes.runlocal(config) if arg.runlocal else config
