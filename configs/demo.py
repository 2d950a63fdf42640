"""The demo and the ablation in miniature on the embedded default (`vcoach demo`, `vcoach ablate`;
docs/design.md §10, docs/ablation.md): a tiny model that learns on a CPU in minutes.

  vcoach demo                  # this config;                 --fast: demo.py:fast
  vcoach ablate                # demo.py:variant=ablate;      --fast: demo.py:variant=ablate,fast
  vcoach train --config configs/demo.py:method=gspo --workdir /tmp/gspo   # one variant's RL

Arguments (comma-separated, vcoach_jax/recipes.py):
  variant=demo|ablate   the settings below (`VARIANTS`); ablate builds on demo's
  fast                  each variant's smoke-test sizes (a run of a minute or two)
  method=NAME           rl.method (gspo | coach | full: vcoach_jax/rl/methods.py)
  runlocal              as every shipped config (the demo is local already: it only shrinks the
                        world further)
"""

from vcoach_jax import recipes
from vcoach_jax.configs import default
from vcoach_jax.data.records import TASK_ST, TASKS


def _demo(config):
  """A learning rate a random tiny model can learn with, completions as long as the world's
  traces, short runs. The world is the grounded task only (spatio-temporal questions naming their
  object: every trace cites its boxes), each object centred in one 28-pixel cell (one merged
  patch: a box takes one value per cell) on a fixed backdrop whose colour varies with the
  position (the pixels tell where a token is), 4-frame clips (short prompts), objects named from
  4 colours and 2 shapes, and some look-alike distractors (same colour, another shape): what
  makes a prompt hard there is which object is meant, which a drawn prompt on the key frames
  shows. The model is `tiny_deep` (4 decoder layers): with 2 the decoder does not learn where the
  asked object is within the demo's time. SFT runs 2,000 steps at lr 0.003 after 30 warmup steps
  on 2,048 clips, with the box numbers' loss weighted 4 (`sft.box_weight`): the place is the last
  thing the decoder learns (docs/ablation.md, "Why the boxes stayed near chance"); at lr 0.01, or
  with all 8 colours and 4 shapes, the tiny model never learns to copy the asked object's name
  from the question. A quarter of the SFT examples carry a visual prompt and its hint
  (sft/prompted.py), so the SFT policy knows what one means. Prompted rows and sampler rows are
  padded to 4 or 8 (few compiled programs); a clip's 6 images (4 frames and 2 key frames) need
  144 patches, so rows hold 160."""
  config.model.preset = "tiny_deep"
  config.data.max_patches = 160
  config.sft.lr = 0.003
  config.sft.warmup_steps = 30
  config.sft.steps = 2000
  config.sft.box_weight = 4.0
  config.sft.prompted = 0.25
  config.optim.weight_decay = 0.0
  config.optim.lr = 0.0002
  config.optim.total_steps = 20
  config.sampling.max_new_tokens = 96
  config.checkpoint.every_steps = 200
  config.selector.steps = 40
  config.selector.batch_size = 8
  config.selector.max_new_tokens = 96
  config.data.prompt_buckets = (128, 256, 320, 384, 512, 1024, 2048, 4096, 8192, 16384)
  config.sampling.batch_buckets = (4, 8)
  config.synthetic.tasks = (TASK_ST,)
  config.synthetic.min_size = 20
  config.synthetic.max_size = 20
  config.synthetic.min_frames = 4
  config.synthetic.max_frames = 4
  config.synthetic.colours = 4
  config.synthetic.shapes = 2
  config.synthetic.max_speed = 4.0
  config.synthetic.lookalike = 0.25
  config.synthetic.num_train = 2048
  config.synthetic.grid = 28
  config.synthetic.background = "gradient"
  config.synthetic.named = True
  config.prompting.darken_pad = 4


def _demo_fast(config):
  """A 1-2 minute CPU version of the demo (tests, the quickstart colab), on the 2-layer `tiny`."""
  config.model.preset = "tiny"
  config.sft.steps = 40
  config.sft.warmup_steps = 4
  config.optim.total_steps = 2
  config.sampling.max_new_tokens = 32
  config.selector.steps = 4
  config.selector.max_new_tokens = 32
  config.synthetic.num_train = 64
  config.synthetic.num_eval = 16


def _ablate(config):
  """On top of the demo's: a harder world (every task, two distractors, occluding bars on a
  quarter of the frames) so the SFT policy finds most prompts hard, a larger held-out split, and
  short RL runs of 4 prompts x G = 4, sized for 9 of them on 2 CPU cores."""
  config.synthetic.tasks = TASKS  # every task (the demo keeps the grounded one): V* tIoU too
  config.synthetic.distractors = 2
  config.synthetic.occlusion = 0.25
  config.synthetic.num_eval = 24
  config.data.batch_size = 4
  config.optim.total_steps = 10
  config.optim.lr = 0.0003
  config.selector.steps = 20
  config.eval.batch_size = 8


def _ablate_fast(config):
  """A ~2 minute smoke version of the ablation (one seed)."""
  config.sft.steps = 30
  config.optim.total_steps = 2
  config.sampling.max_new_tokens = 24
  config.sampling.num_samples = 2
  config.synthetic.num_train = 24
  config.synthetic.num_eval = 6
  config.data.tiny_vocab_size = 500
  config.selector.steps = 2
  config.selector.max_new_tokens = 24


# name -> its layers of (settings, fast settings), applied in order.
VARIANTS = {
    "demo": ((_demo, _demo_fast),),
    "ablate": ((_demo, _demo_fast), (_ablate, _ablate_fast)),
}


def get_config(arg=None):
  arg = recipes.arguments(arg, variant="demo", fast=False)
  if arg.variant not in VARIANTS:
    raise ValueError(f"config argument variant={arg.variant!r}: expected one of "
                     f"{tuple(VARIANTS)}")
  config = default.get_config()
  for settings, fast in VARIANTS[arg.variant]:
    settings(config)
    if arg.fast:
      fast(config)
  return recipes.finish(config, arg)
