"""How fast the demo's cold-start SFT learns where the asked object is: a learning curve of the
first box's x1 (the column) and y1 (the row) on the held-out clips, teacher-forced, with how much
the box tokens depend on the pixels. The SFT settings tried in docs/ablation.md ("Why the boxes
stayed near chance") are this script's output.

  PYTHONPATH=. python benchmarks/grounding_curve.py [--steps 2000] [--eval-every 250]
      [--set KEY=VALUE ...] [--config configs/demo.py]

It renders the world of `config.synthetic` in numpy (no TFDS writing, no checkpoints) and runs the
SFT step of vcoach_jax/sft/step.py on the train split in a seeded order, without the prompted
examples (`sft.prompted`: they are read through the TFDS pipeline). Every --eval-every steps it
scores the held-out split: per first box, the argmax accuracy and NLL of x1's and y1's first
token, and "pixels": the total-variation distance between those tokens' distributions with the
real pixels and with all pixels zeroed (0 = the box ignores the video). "majority" is the share
of the most common value; a policy that has not learned the place writes one value whatever the
clip shows (its accuracy is that value's share).
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grounding_probe import field_kinds  # benchmarks/ is the script's folder
from vcoach_jax import config as config_lib
from vcoach_jax import experiment
from vcoach_jax.data import chat, synthetic, tfds_stgr
from vcoach_jax.data import pipeline as pl
from vcoach_jax.model import build
from vcoach_jax.rl.logprobs import sequence_inputs
from vcoach_jax.sft import step as sft_step


def encoded(config, tok, split: str) -> list[dict]:
  """The split's examples, encoded as the SFT pipeline encodes them (SFT prompt texts)."""
  texts = chat.PromptTexts.from_config(config).for_sft()
  proc, shapes = chat.Processor(tok), pl.BatchShapes.from_config(config.data)
  spec = synthetic.WorldSpec.from_config(config.synthetic)
  world = synthetic.SyntheticWorld(spec)
  first, count = tfds_stgr.synthetic_splits(config.synthetic)[split]
  return [pl.encode_example(tfds_stgr.synthetic_example(world.sample(i), spec), proc, texts,
                            shapes) for i in range(first, first + count)]


def box_fields(tok, target_ids: np.ndarray) -> list[tuple[int, int] | None]:
  """Per row: target positions of the first box's x1 and y1 (their first tokens,
  `grounding_probe.field_kinds`); None without a box."""
  out = []
  for row in target_ids:
    kinds = field_kinds(tok, row)
    out.append((kinds.index("x1"), kinds.index("y1")) if "y1" in kinds else None)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/demo.py")
  parser.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE")
  parser.add_argument("--steps", type=int, default=None, help="default: sft.steps")
  parser.add_argument("--eval-every", type=int, default=250)
  parser.add_argument("--workdir", default="/tmp/grounding_curve", help="for the tokenizer")
  args = parser.parse_args()
  over = args.overrides + ([f"sft.steps={args.steps}"] if args.steps else [])
  config = config_lib.load(args.config, over)
  t0 = time.perf_counter()
  tok = experiment.tokenizer(config, args.workdir)
  train, held = encoded(config, tok, "train"), encoded(config, tok, "eval")
  model, _ = build.from_config(config, 0, tokenizer=tok)
  step, state = sft_step.setup(config, model)
  b, pad = config.data.batch_size, tok.pad_token_id or 0
  shapes = pl.BatchShapes.from_config(config.data)
  box_ids = sft_step.box_tag_ids(tok)

  def batch(items):
    arrays = pl.collate(items, shapes, pad).arrays
    return sft_step.sft_batch(model.config, arrays, config.sft.loss_on, box_ids,
                              config.sft.box_weight)

  @jax.jit
  def log_probs(state, prompt, tokens, mask):
    m = nnx.merge(step.graphdef, state.params, state.frozen)
    t, n = prompt.input_ids.shape[1], tokens.shape[1]
    h = m.hidden_states(sequence_inputs(prompt, tokens, mask, 1))
    return jax.nn.log_softmax(m.head(h[:, t - 1:t + n - 1]), -1)

  held_batches = [batch(held[i:i + b]) for i in range(0, len(held) - b + 1, b)]
  truth = collections.defaultdict(list)
  for sb in held_batches:
    for r, f in enumerate(box_fields(tok, np.asarray(sb.target_ids))):
      if f:
        for name, j in zip(("x1", "y1"), f):
          truth[name].append(int(sb.target_ids[r, j]))
  majority = {k: collections.Counter(v).most_common(1)[0][1] / len(v) for k, v in truth.items()}

  def evaluate(state) -> dict:
    out = collections.defaultdict(list)
    for sb in held_batches:
      lp = np.asarray(log_probs(state, sb.prompt, sb.target_ids, sb.target_mask))
      blind = sb.prompt._replace(pixels=jnp.zeros_like(sb.prompt.pixels))
      lpz = np.asarray(log_probs(state, blind, sb.target_ids, sb.target_mask))
      for r, f in enumerate(box_fields(tok, np.asarray(sb.target_ids))):
        for name, j in zip(("x1", "y1"), f or ()):
          want = int(sb.target_ids[r, j])
          out[f"{name} acc"].append(float(lp[r, j].argmax() == want))
          out[f"{name} nll"].append(-lp[r, j, want])
          out["pixels"].append(0.5 * np.abs(np.exp(lp[r, j]) - np.exp(lpz[r, j])).sum())
    return {k: round(float(np.mean(v)), 3) for k, v in out.items()}

  print(f"data + model: {time.perf_counter() - t0:.0f}s; held-out majority: "
        + ", ".join(f"{k} {v:.3f}" for k, v in majority.items()), flush=True)
  order, rng = np.random.default_rng(config.data.seed), jax.random.key(0)
  perm, pos, curve, t1, t_eval = order.permutation(len(train)), 0, [], time.perf_counter(), 0.0
  steps = config.sft.steps
  for s in range(1, steps + 1):
    if pos + b > len(perm):
      perm, pos = order.permutation(len(train)), 0
    state, _ = step(state, batch([train[k] for k in perm[pos:pos + b]]), jax.random.fold_in(rng, s))
    pos += b
    if s % args.eval_every == 0 or s == steps:
      t2 = time.perf_counter()
      row = {"step": s, "train_s": round(t2 - t1 - t_eval, 1), **evaluate(state)}
      t_eval += time.perf_counter() - t2
      curve.append(row)
      print(json.dumps(row), flush=True)
  print("RESULT " + json.dumps({"overrides": over, "majority": majority, "curve": curve}))


if __name__ == "__main__":
  main()
