"""`vcoach select build-data | train | predict`: the VP-Selector's data, training and cache."""

from __future__ import annotations

import argparse

from vcoach_jax import config as config_lib
from vcoach_jax import storage

HELP = "VP-Selector: build labelled data with proxy reasoners, train it, predict the cache"
DESCRIPTION = """\
The VP-Selector picks the visual prompt for a hard sample (docs/design.md §8.6).

  build-data  for each record of the dataset, draw every type of `selector.types` on its key
              frames (with its hint), answer each with the proxy reasoners (`selector.reasoners`,
              checkpoints in the HF Qwen2.5-VL layout; none = the policy of `model.*`), score
              answer accuracy + grounding with the rewards, label = the best type (ties: raw).
              Appends to a JSONL; an interrupted run resumes.
  train       LoRA + linear head on `selector.mode` = text (reference: instruction + question +
              key object names) or vl (paper: the video prompt); prints held-out accuracy and
              writes an orbax checkpoint of the trained params.
  predict     writes the cache {record_id: type} the RL trainer reads (`selector.cache`).

Files default to WORKDIR/selector/{labels.jsonl, checkpoint/, cache.json} unless
`selector.data`, `selector.checkpoint_dir`, `selector.cache` say otherwise. The dataset is the
config's (`data.source`, `data.tfds_dir`; the synthetic world is written to WORKDIR/data).

examples:
  vcoach select build-data --workdir runs/sel --limit 200
  vcoach select train --workdir runs/sel --set selector.steps=500
  vcoach select predict --workdir runs/sel --split train
  vcoach select build-data --workdir runs/sel --set 'selector.reasoners=("runs/sft/policy",)'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("action", choices=("build-data", "train", "predict"))
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="work folder (tokenizer, synthetic data, default file locations)")
  parser.add_argument("--split", default=None, help="dataset split (default: data.split)")
  parser.add_argument("--limit", type=int, default=None,
                      help="build-data: label at most N new records; predict: first N records")
  parser.add_argument("--records", default=None, metavar="FILE",
                      help="predict (text mode): STGR records (JSON array / JSONL) or a "
                      "labelled JSONL instead of the dataset")
  parser.add_argument("--held-out", type=float, default=0.1,
                      help="train: fraction of the labelled records kept for evaluation")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  config_lib.add_config_flags(parser)


def run(args: argparse.Namespace) -> int:
  from vcoach_jax.prompting import selector_run  # pylint: disable=g-import-not-at-top
  config = config_lib.load(args.config, args.overrides)
  storage.path(args.workdir).mkdir(parents=True, exist_ok=True)
  paths = selector_run.paths_for(config, args.workdir)
  tok = selector_run.tokenizer(config, args.workdir, backbone=args.action != "build-data")
  if args.action == "build-data":
    selector_run.build_data(config, args.workdir, tok, paths, split=args.split,
                            limit=args.limit, progress=not args.no_progress)
  elif args.action == "train":
    selector_run.train(config, args.workdir, tok, paths, split=args.split,
                       held_out=args.held_out)
  else:
    selector_run.predict(config, args.workdir, tok, paths, split=args.split,
                         records=args.records, limit=args.limit)
  return 0
