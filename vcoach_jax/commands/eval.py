"""`vcoach eval`: evaluate a checkpoint on a benchmark (docs/evaluation.md)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable

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

GenerateFn = Callable[[list], list]


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


def load_items(config) -> list:
  """The items of `config.eval.benchmark`."""
  from vcoach_jax.evaluation import loaders  # pylint: disable=g-import-not-at-top
  ev = config.eval
  if ev.benchmark == "synthetic":
    return loaders.synthetic_items(config, ev.split)
  if not ev.data:
    raise ValueError(f"benchmark {ev.benchmark!r} needs --data (its annotation file)")
  return loaders.load(ev.benchmark, ev.data, ev.video_dir or None)


def pred_size_fn(config) -> Callable:
  """item -> (W, H) of the frames the model sees for it (the input pipeline's resize)."""
  from vcoach_jax.data import video  # pylint: disable=g-import-not-at-top
  spec = video.VideoSpec.from_config(config.video)

  def size(item):
    if item.box_size is None or item.record is not None:
      return None  # synthetic clips are rendered at the model's size
    w, h = item.box_size
    ms = max(int(round(item.duration * 1000)), spec.max_frames)
    n = video.num_frames(ms, 1000.0, spec) if item.duration > 0 else spec.min_frames
    fh, fw = video.frame_size(h, w, n, spec)
    return fw, fh
  return size


def sampler_generate_fn(config, workdir: str, world=None, protocol=None):
  """The policy's greedy generate function over eval requests (`eval.generation`): the
  checkpoint of `model.checkpoint` (or the embedded default's model, built in `workdir`)."""
  from vcoach_jax.evaluation import generation  # pylint: disable=g-import-not-at-top
  return generation.SamplerGenerate.from_config(config, workdir, world=world, protocol=protocol)


def judge_generate_fn(config, checkpoint: str, workdir: str) -> GenerateFn:
  """A local judge model's greedy generate function over chat texts (a few tokens each, no
  repetition penalty, as the released judge)."""
  from vcoach_jax.evaluation import generation  # pylint: disable=g-import-not-at-top
  if not storage.path(checkpoint).is_dir():
    raise FileNotFoundError(f"judge checkpoint folder {checkpoint!r} does not exist")
  local = config_lib.with_overrides(config, [f"model.checkpoint={checkpoint}",
                                             "model.lora_rank=0", "data.tokenizer_dir=",
                                             "sampling.repetition_penalty=1.0"])
  gen = generation.SamplerGenerate.from_config(
      local, workdir, max_new_tokens=generation.JUDGE_MAX_NEW_TOKENS)
  return gen.generate_texts


def synthetic_world(config):
  """The synthetic world of `config.synthetic` (the pixels of synthetic items)."""
  from vcoach_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.SyntheticWorld(synthetic.WorldSpec.from_config(config.synthetic))


def main(args: argparse.Namespace, generate_fn: GenerateFn | None = None,
         judge_generate: GenerateFn | None = None) -> int:
  """`run` with injectable generate functions (the policy's, and the judge model's)."""
  from vcoach_jax import evaluation  # pylint: disable=g-import-not-at-top
  config = _apply_flags(args)
  ev = config.eval
  protocol = evaluation.protocols.get(ev.protocol, ev.benchmark)
  items = load_items(config)
  out_dir = storage.path(args.out or os.path.join("eval_out", ev.benchmark))
  out_dir.mkdir(parents=True, exist_ok=True)
  if ev.judge.startswith("model:") and judge_generate is None:
    judge_generate = judge_generate_fn(config, ev.judge[len("model:"):],
                                       str(out_dir / "judge_work"))
  if generate_fn is None:
    world = synthetic_world(config) if ev.benchmark == "synthetic" else None
    generate_fn = sampler_generate_fn(config, str(out_dir / "work"), world, protocol)
  judge = evaluation.judge.make_judge(
      ev.judge, ev.rouge_thresholds, judge_generate,
      parse=evaluation.reference.parse_grade if protocol.parser == "reference" else None,
      prompt_file=ev.judge_prompt or None)
  summary = evaluation.evaluate(
      items, generate_fn, ev.benchmark, judge=judge,
      out_jsonl=str(out_dir / f"{ev.benchmark}.jsonl"), batch_size=ev.batch_size,
      limit=ev.limit or None, options=evaluation.EvalOptions.from_config(ev),
      pred_size=pred_size_fn(config) if protocol.parser == "training" else None,
      reward_options=config_lib.reward_options(config) if ev.benchmark == "synthetic" else None,
      progress=not args.no_progress, protocol=protocol)
  summary["judge"] = ev.judge
  storage.write_text(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
  print(evaluation.summary_table(summary))
  print(f"\n{summary['new']} new, {summary['resumed']} resumed item(s) -> {out_dir}")
  return 0


def run(args: argparse.Namespace) -> int:
  return main(args)
