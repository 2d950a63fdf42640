"""Where a demo SFT policy loses the asked object's place: linear probes of the object's grid cell
(row, column), its colour, and object-cell vs another cell, read from the object's visual token
(the decoder's input) and from the decoder's last hidden state just before the first box number.
The table in docs/ablation.md ("Why the boxes stayed near chance") is this script's output.

  PYTHONPATH=. python benchmarks/grounding_probe.py --workdir vcoach_demo [--policy DIR]
      [--train-batches 24] [--eval-batches 8]

`--workdir` is a `vcoach demo` work folder (its data/, tokenizer/ and sft/policy; the world must
be on a grid, `synthetic.grid`, as configs/demo.py's is). Probes are ridge classifiers (one-hot
targets, standardised features, penalty 1) fitted on the train split's examples and scored on the
held-out split's; "majority" is the held-out share of the most common class (what a probe that
learned nothing scores).
"""

from __future__ import annotations

import argparse
import collections

import jax
import numpy as np

from vcoach_jax import demo, experiment
from vcoach_jax.data import pipeline as pipeline_lib
from vcoach_jax.data import synthetic
from vcoach_jax.rl.logprobs import completion_logprobs, sequence_inputs
from vcoach_jax.sft import step as sft_step


def features(config, tok, model, workdir: str, split: str, batches: int):
  """Per example: the asked object's visual token in the first key frame, the decoder's hidden
  state before the first box number, another cell's visual token, and (row, column, colour)."""
  cfg, grid = model.config, config.synthetic.grid
  colours = list(synthetic.COLOURS)
  box_open = tok.convert_tokens_to_ids("<box>")
  embed = jax.jit(lambda inputs: model.embed(inputs))
  hidden = jax.jit(lambda p, t, m: model.hidden_states(sequence_inputs(p, t, m, 1)))
  pipe = experiment.pipeline(config, tok, workdir, split=split, shuffle_buffer=1)
  pipe.texts = pipe.texts.for_sft()
  obj, before_box, other, labels = [], [], [], []
  for _ in range(batches):
    batch = pipe.next_host_batch()
    sb = sft_step.sft_batch(cfg, batch.arrays)
    x = np.asarray(embed(sb.prompt))
    h = np.asarray(hidden(sb.prompt, sb.target_ids, sb.target_mask))
    ids, width = np.asarray(sb.prompt.input_ids), sb.prompt.input_ids.shape[1]
    for r, example in enumerate(batch.examples):
      rec = pipeline_lib.record_of(example)
      key = rec["key_frames"][0]["idx"]
      w, hgt = rec["image_size"]
      name, boxes = next(iter(rec["key_items"][str(key)].items()))
      row, col = int(boxes[0][1] * hgt) // grid, int(boxes[0][0] * w) // grid
      cells = (hgt // grid) * (w // grid)
      visual = np.flatnonzero((ids[r] == cfg.video_token_id) | (ids[r] == cfg.image_token_id))
      cell = row * (w // grid) + col
      first_box = np.flatnonzero(np.asarray(sb.target_ids[r]) == box_open)[0]
      obj.append(x[r, visual[key * cells + cell]])
      other.append(x[r, visual[key * cells + (cell + 1 + r % (cells - 1)) % cells]])
      before_box.append(h[r, width - 1 + first_box + 1])  # predicts the token after "<box>["
      labels.append((row, col, colours.index(name.split()[0])))
  return np.array(obj), np.array(before_box), np.array(other), np.array(labels)


_FIELDS = {"<obj>": "name", "<t>": "time", "<box>": "box"}
_CLOSE = ("</obj>", "</t>", "</box>")
_NUMBERS = ("x1", "y1", "x2", "y2")


def field_kinds(tok, ids) -> list[str]:
  """Per target token, its field: `name` (the object's name), `time`, `x1`..`y2` (every token of
  that box number, however the tokenizer splits numbers: the commas count them) or `other`."""
  kinds, field, commas = [], None, 0
  for i in ids:
    piece = tok.decode([int(i)])
    if piece in _FIELDS or piece in _CLOSE:
      field, commas = _FIELDS.get(piece), 0
      kinds.append("other")
    elif field == "box":
      commas += piece.count(",")
      kinds.append(_NUMBERS[min(commas, 3)] if piece.strip("[], ") else "other")
    elif field in ("name", "time") and not piece.startswith("<"):
      kinds.append(field)
    else:
      kinds.append("other")
  return kinds


def token_losses(config, tok, model, workdir: str, split: str, batches: int) -> dict[str, float]:
  """Mean NLL of the SFT target's tokens by field (`field_kinds`)."""
  fn = jax.jit(lambda p, t, m: completion_logprobs(model, p, t, m, 1))
  pipe = experiment.pipeline(config, tok, workdir, split=split, shuffle_buffer=1)
  pipe.texts = pipe.texts.for_sft()
  nll = collections.defaultdict(list)
  for _ in range(batches):
    sb = sft_step.sft_batch(model.config, pipe.next_host_batch().arrays)
    lp = np.asarray(fn(sb.prompt, sb.target_ids, sb.target_mask))
    for r in range(lp.shape[0]):
      n = int(np.asarray(sb.target_mask[r]).sum())
      for j, kind in enumerate(field_kinds(tok, np.asarray(sb.target_ids[r])[:n])):
        nll[kind].append(-lp[r, j])
  return {k: float(np.mean(v)) for k, v in sorted(nll.items())}


def probe(x_train, y_train, x_test, y_test) -> tuple[float, float]:
  """Train and held-out accuracy of a ridge classifier."""
  k = int(max(y_train.max(), y_test.max())) + 1
  mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
  a = np.c_[(x_train - mu) / sd, np.ones(len(x_train))]
  b = np.c_[(x_test - mu) / sd, np.ones(len(x_test))]
  w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ np.eye(k)[y_train])
  return float(((a @ w).argmax(1) == y_train).mean()), float(((b @ w).argmax(1) == y_test).mean())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="vcoach_demo")
  parser.add_argument("--policy", default="", help="default: WORKDIR/sft/policy")
  parser.add_argument("--train-batches", type=int, default=24)
  parser.add_argument("--eval-batches", type=int, default=8)
  args = parser.parse_args()
  w = args.workdir
  config = demo.demo_config(False, [f"data.tokenizer_dir={w}/tokenizer", f"data.tfds_dir={w}/data",
                                    f"model.checkpoint={args.policy or w + '/sft/policy'}"])
  tok = experiment.tokenizer(config, w)
  model, _ = experiment.policy(config, tok, w)
  o_tr, h_tr, x_tr, y_tr = features(config, tok, model, w, "train", args.train_batches)
  o_te, h_te, x_te, y_te = features(config, tok, model, w, "eval", args.eval_batches)
  print(f"{len(y_tr)} train / {len(y_te)} held-out examples; accuracy train / held-out (majority)")
  for what, j in (("row", 0), ("column", 1), ("colour", 2)):
    for where, tr, te in (("object's visual token", o_tr, o_te),
                          ("decoder before the box", h_tr, h_te)):
      a, b = probe(tr, y_tr[:, j], te, y_te[:, j])
      majority = np.bincount(y_te[:, j]).max() / len(y_te)
      print(f"  {what:7s} from the {where:23s} {a:.2f} / {b:.2f} ({majority:.2f})")
  a, b = probe(np.r_[o_tr, x_tr], np.r_[np.ones(len(o_tr), int), np.zeros(len(x_tr), int)],
               np.r_[o_te, x_te], np.r_[np.ones(len(o_te), int), np.zeros(len(x_te), int)])
  print(f"  object cell vs another cell, visual token  {a:.2f} / {b:.2f} (0.50)")
  print("mean NLL of the SFT target's tokens by field")
  for split, n in (("train", args.eval_batches), ("eval", args.eval_batches)):
    losses = token_losses(config, tok, model, w, split, n)
    print(f"  {split:5s} " + "  ".join(f"{k} {v:.3f}" for k, v in losses.items()))


if __name__ == "__main__":
  main()
