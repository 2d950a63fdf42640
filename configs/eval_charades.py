"""Charades-STA evaluation of a trained policy under the charades_reference protocol
(docs/evaluation.md): the V-STAR reference frames and decoding, one prompt asking for the start
and end in seconds, R@0.3/0.5/0.7 and mIoU over all items.

  vcoach eval --config configs/eval_charades.py --checkpoint runs/vc7b/policy \\
      --data /data/charades/charades_sta_test.txt --video-dir /data/charades/videos
"""

from vcoach_jax.configs import visioncoach_7b


def get_config(arg=None):
  config = visioncoach_7b.get_config(arg)
  config.eval.benchmark = "charades"
  config.eval.protocol = "charades_reference"
  # Each prompt carries 16 near-native frames (~19k patches at 640x360) and the vision tower's
  # memory grows with rows x patches (a V-STAR item's five prompts each encode the clip), so
  # one prompt per sampler call; raise it where accelerator memory allows.
  config.eval.batch_size = 1
  config.sampling.greedy = True
  return config
