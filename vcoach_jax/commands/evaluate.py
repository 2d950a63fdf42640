"""`vcoach eval`: evaluate a checkpoint on a benchmark (docs/evaluation.md); the run itself is
`vcoach_jax.evaluation.runner`. (The module is not named `eval`, a builtin.)"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from vcoach_jax import config as config_lib
from vcoach_jax import storage

HELP = "evaluate a checkpoint on V-STAR, Charades-STA, an MCQ set or the synthetic world"
DESCRIPTION = """\
Evaluate a checkpoint on a benchmark: raw video, no visual prompt, greedy, batched through the
sampler, under a protocol (--protocol): `training` shows items as training does (the training
frames, resize and prompts); `vstar_reference` and `charades_reference` reproduce how the
published numbers were measured (1 fps / 16 frames near native size, a generic prompt set,
repetition penalty 1.05, 2,048 tokens, the released parsers and counts; docs/evaluation.md).
Writes one JSON line per item (OUT/<benchmark>.jsonl: completions, parsed predictions, scores),
OUT/summary.json and prints the summary table (its first lines name the protocol). Rerunning
with the same --out skips the items already written, so an interrupted run resumes.

Benchmarks and --data: vstar (V_STaR_test.json), charades (charades_sta_test.txt), videomme,
worldsense (worldsense_qa.json), videommmu, perceptiontest (annotation json/jsonl; parquet
needs pyarrow), synthetic (no --data: the config's held-out synthetic split). Videos are looked
up as <video-dir>/<id>.mp4 (default: the annotation file's folder).

Metrics: V-STAR's answer accuracy (judge score >= 2), R1@0.3/0.5/0.7 and mean tIoU, mAP@0.1:0.9
and mean mIoU, AM / LGM per chain, mAM / mLGM, joint rates, per domain and length; Charades
R@0.3/0.5/0.7 and mIoU; MCQ accuracy per category. Thresholds are the config's `eval.*`.

--judge: exact (normalised match), rouge (default; ROUGE thresholds `eval.rouge_thresholds`),
or model:DIR (a local Qwen checkpoint grades each answer 0-3 with the prompt of
`eval.judge_prompt`, default assets/judge_prompt.json; the published V-STAR numbers were graded
by Qwen2.5-72B-Instruct).

examples:
  vcoach eval --checkpoint runs/demo/final --benchmark synthetic --limit 32
  vcoach eval --checkpoint ckpt/ --benchmark vstar --data V_STaR_test.json --video-dir videos/
  vcoach eval --checkpoint ckpt/ --benchmark vstar --protocol vstar_reference \
      --data V_STaR_test.json --video-dir videos/ --judge model:Qwen2.5-72B-Instruct/
  vcoach eval --checkpoint ckpt/ --benchmark charades --data charades_sta_test.txt --out out/
"""

if TYPE_CHECKING:
  from vcoach_jax.evaluation.runner import GenerateFn


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", metavar="DIR", default=None,
                      help="HF-layout Qwen2.5-VL checkpoint (default: the config's model)")
  parser.add_argument("--benchmark", default=None, metavar="NAME",
                      help="vstar | charades | videomme | worldsense | videommmu | "
                           "perceptiontest | synthetic (default: eval.benchmark)")
  parser.add_argument("--data", default=None, metavar="PATH", help="the benchmark's annotations")
  parser.add_argument("--video-dir", default=None, metavar="DIR", help="folder of the videos")
  parser.add_argument("--limit", type=int, default=None, metavar="N",
                      help="evaluate only the first N items (default: eval.limit, 0 = all)")
  parser.add_argument("--out", default=None, metavar="DIR",
                      help="output folder (default: eval_out/<benchmark>)")
  parser.add_argument("--protocol", default=None, metavar="NAME",
                      help="training | vstar_reference | charades_reference: how items are "
                           "shown and scored (default: eval.protocol; docs/evaluation.md)")
  parser.add_argument("--judge", default=None, metavar="exact|rouge|model:DIR",
                      help="answer judge (default: eval.judge)")
  parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                      help="prompts per generate call (default: eval.batch_size)")
  parser.add_argument("--no-progress", action="store_true", help="no progress bar")
  config_lib.add_config_flags(parser)


def _apply_flags(args: argparse.Namespace) -> Any:
  """The config with the command-line flags applied as `eval.*` / `model.checkpoint` overrides."""
  overrides = list(args.overrides)
  flags = {"eval.benchmark": args.benchmark, "eval.data": args.data,
           "eval.video_dir": args.video_dir, "eval.limit": args.limit,
           "eval.judge": args.judge, "eval.batch_size": args.batch_size,
           "eval.protocol": args.protocol,
           "model.checkpoint": args.checkpoint}
  for key, value in flags.items():
    if value is not None:
      overrides.append(f"{key}={value}")
  return config_lib.load(args.config, overrides)


def main(args: argparse.Namespace, generate_fn: GenerateFn | None = None,
         judge_generate: GenerateFn | None = None) -> int:
  """`run` with injectable generate functions (the policy's, and the judge model's)."""
  from vcoach_jax import evaluation  # pylint: disable=g-import-not-at-top
  from vcoach_jax.evaluation import runner  # pylint: disable=g-import-not-at-top
  config = _apply_flags(args)
  out_dir = storage.path(args.out or os.path.join("eval_out", config.eval.benchmark))
  summary = runner.run(config, out_dir, generate_fn=generate_fn, judge_generate=judge_generate,
                       progress=not args.no_progress)
  print(evaluation.summary_table(summary))
  print(f"\n{summary['new']} new, {summary['resumed']} resumed item(s) -> {out_dir}")
  return 0


def run(args: argparse.Namespace) -> int:
  return main(args)
