"""Items/s of `vcoach eval` on the synthetic benchmark with the tiny model: batched through the
sampler (eval.batch_size 8) vs the baseline, one item at a time through the same sampler.

  PYTHONPATH=. USE_TF=0 python benchmarks/eval_bench.py [--items 64] [--new-tokens 64]
      [--batch-size 8] [--repeats 3]

A random tiny checkpoint matched to the tiny tokenizer is saved with `save_hf` and loaded as
`vcoach eval --checkpoint` loads it (`eval.generation.SamplerGenerate.from_config`). Both modes
run the whole eval loop (`eval.evaluate`: prompts, processor, collate, sampler, parsing, scoring,
the seven rewards) on the same held-out items with the same sampler object, after one untimed
pass of each that compiles its programs; the figure is the median of `--repeats` timed passes.
The time spent inside `Sampler.generate` is printed beside it (the rest is host work).
Greedy decoding of a random model rarely stops early, so rows run to `--new-tokens`. The cold
`vcoach eval` command (load + compile + run) is timed once too, for scale.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("USE_TF", "0")

from vcoach_jax import cli  # noqa: E402
from vcoach_jax import config as config_lib  # noqa: E402
from vcoach_jax import experiment  # noqa: E402
from vcoach_jax.evaluation import EvalOptions, evaluate, generation, loaders, runner  # noqa: E402
from vcoach_jax.model import save_hf  # noqa: E402


def timed_pass(items, gen, batch_size: int, reward_options) -> tuple[float, dict]:
  """Seconds of one eval pass at `batch_size` requests per generate call, and its summary."""
  gen.batch_size = batch_size
  gen.sampler_seconds = 0.0
  t0 = time.perf_counter()
  out = evaluate(items, gen, "synthetic", batch_size=batch_size, options=EvalOptions(),
                 reward_options=reward_options, progress=False)
  seconds = time.perf_counter() - t0
  assert out["n"] == len(items)
  out["sampler_seconds"] = gen.sampler_seconds
  return seconds, out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--items", type=int, default=64, help="held-out synthetic items")
  parser.add_argument("--new-tokens", type=int, default=64, help="sampling.max_new_tokens")
  parser.add_argument("--batch-size", type=int, default=8, help="eval.batch_size when batched")
  parser.add_argument("--repeats", type=int, default=3, help="timed passes per mode (median)")
  args = parser.parse_args()

  overrides = [f"synthetic.num_eval={args.items}", f"sampling.max_new_tokens={args.new_tokens}",
               f"eval.batch_size={args.batch_size}"]
  root = pathlib.Path(tempfile.mkdtemp(prefix="eval_bench_"))
  parts = experiment.build(config_lib.load(None, overrides), root / "init")
  save_hf(parts.model, root / "ckpt", tokenizer=parts.tokenizer)
  config = config_lib.load(None, overrides + [f"model.checkpoint={root / 'ckpt'}"])
  items = loaders.synthetic_items(config)
  reward_options = config_lib.reward_options(config)

  # The cold command, once: load the checkpoint, compile, evaluate, write JSONL + summary.
  argv = ["eval", "--checkpoint", str(root / "ckpt"), "--benchmark", "synthetic", "--out",
          str(root / "cli"), "--no-progress"] + [a for o in overrides for a in ("--set", o)]
  t0 = time.perf_counter()
  assert cli.main(argv) == 0
  cold = time.perf_counter() - t0

  gen = generation.SamplerGenerate.from_config(config, str(root / "work"),
                                               world=runner.synthetic_world(config))
  modes = {"batched": args.batch_size, "one at a time": 1}
  for size in modes.values():  # untimed: compiles every (rows, prompt-length) bucket used
    timed_pass(items, gen, size, reward_options)
  results = {}
  for name, size in modes.items():
    runs = sorted((timed_pass(items, gen, size, reward_options) for _ in range(args.repeats)),
                  key=lambda run: run[0])
    results[name] = runs[len(runs) // 2]  # the median pass (the upper one of an even count)
  same = results["batched"][1]["vstar"] == results["one at a time"][1]["vstar"]

  print(f"\nvcoach eval, synthetic benchmark, tiny model (random weights), {len(items)} items, "
        f"greedy, up to {args.new_tokens} new tokens; {os.cpu_count()} CPU(s), "
        f"{sys.platform}")
  print(f"cold `vcoach eval` (load + compile + run, batch {args.batch_size}): {cold:.1f} s")
  for name, (seconds, out) in results.items():
    print(f"  {name:14s} (eval.batch_size {modes[name]}): {seconds:6.2f} s  "
          f"{len(items) / seconds:7.2f} items/s  (in Sampler.generate: "
          f"{out['sampler_seconds']:.2f} s)")
  ratio = results["one at a time"][0] / results["batched"][0]
  print(f"batched / one at a time: {ratio:.2f}x items/s  (same metrics: {same})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
