"""Charades-STA evaluation of a trained policy under the charades_reference protocol
(docs/evaluation.md): the V-STAR reference frames and decoding, one prompt asking for the start
and end in seconds, R@0.3/0.5/0.7 and mIoU over all items.

  vcoach eval --config configs/eval_charades.py --checkpoint runs/vc7b/policy \\
      --data /data/charades/charades_sta_test.txt --video-dir /data/charades/videos
"""

from vcoach_jax import recipes
from vcoach_jax.configs import eval_vstar


def get_config(arg=None):
  arg = recipes.arguments(arg)
  config = eval_vstar.get_config()  # the same frames, resolution, decoding and batch size
  config.eval.benchmark = "charades"
  config.eval.protocol = "charades_reference"
  return recipes.finish(config, arg)  # after the benchmark: `runlocal` evaluates the synthetic one
