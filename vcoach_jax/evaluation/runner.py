"""An evaluation run from a config: the benchmark's items, the policy's and the judge's generate
functions, the protocol, the loop and the files it writes (docs/evaluation.md).

  summary = runner.run(config, "eval_out/vstar")    # OUT/vstar.jsonl, OUT/summary.json

`vcoach eval` turns its flags into `eval.*` overrides and calls `run`; the loaders and generate
functions here serve tests and benchmarks too.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from vcoach_jax import config as config_lib
from vcoach_jax import storage

GenerateFn = Callable[[list], list]


def load_items(config) -> list:
  """The items of `config.eval.benchmark` (`eval.data`, `eval.video_dir`; the synthetic world's
  `eval.split`)."""
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


def run(config, out_dir, *, generate_fn: GenerateFn | None = None,
        judge_generate: GenerateFn | None = None, progress: bool = True) -> dict[str, Any]:
  """Evaluates `config.eval.benchmark` under `eval.protocol` and `eval.judge`, resuming
  OUT/<benchmark>.jsonl; writes OUT/summary.json and returns the summary. `generate_fn` and
  `judge_generate` replace the sampler of `model.*` and the judge model of `model:DIR` (tests
  inject them); the models otherwise built work in OUT/work and OUT/judge_work."""
  from vcoach_jax import evaluation  # pylint: disable=g-import-not-at-top
  ev = config.eval
  protocol = evaluation.protocols.get(ev.protocol, ev.benchmark)
  items = load_items(config)
  out_dir = storage.path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  kind, judge_dir = evaluation.judge.parse_spec(ev.judge)
  if kind == "model" and judge_generate is None:
    judge_generate = judge_generate_fn(config, judge_dir, str(out_dir / "judge_work"))
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
      progress=progress, protocol=protocol)
  summary["judge"] = ev.judge
  storage.write_text(out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
  return summary
