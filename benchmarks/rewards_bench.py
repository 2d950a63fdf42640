"""Reward throughput: `rewards.compute` on 4096 mixed completions, batch 1 vs batch 4096.

Baseline (named, measured in the same run): the same 4096 completions scored one per call
(batch 1), which is what the reference's per-prompt scoring amounts to per completion. The
ratio is batch-4096 throughput / batch-1 throughput. Both are timed after a warm-up pass that
compiles every shape bucket, so the figures are steady-state.

  python benchmarks/rewards_bench.py [--n 4096] [--vectors tests/data/rewards_public.jsonl]
"""

import argparse
import json
import pathlib
import time

from vcoach_jax import rewards
from vcoach_jax.rewards import kernels

PAPER = {"spatial_iou_mode": "avg", "identity_match_mode": "soft",
         "spatial_norm_mode": "matched", "correct_tempgate": True}
_DEFAULT_VECTORS = pathlib.Path(__file__).parents[1] / "tests" / "data" / "rewards_public.jsonl"


def _timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n", type=int, default=4096)
  parser.add_argument("--vectors", default=str(_DEFAULT_VECTORS))
  args = parser.parse_args()

  cases = [json.loads(l) for l in pathlib.Path(args.vectors).read_text().splitlines() if l]
  cases = [cases[i % len(cases)] for i in range(args.n)]  # all six tasks, mixed
  texts = [c["completion"] for c in cases]

  def batch_one():
    for text, case in zip(texts, cases):
      rewards.compute([text], [case], PAPER)

  def batch_all():
    rewards.compute(texts, cases, PAPER)

  batch_one()  # warm-up: compiles every shape bucket met at batch 1
  batch_all()
  programs = kernels.compiled_programs()
  t_one = _timed(batch_one)
  t_all = min(_timed(batch_all) for _ in range(3))
  assert kernels.compiled_programs() == programs, "timed runs must not compile"
  rate_one, rate_all = args.n / t_one, args.n / t_all
  print(f"completions: {args.n} (mixed tasks), options: paper run (avg/soft/matched/True)")
  print(f"baseline  batch 1    : {rate_one:10.0f} completions/s  ({t_one:.2f} s)")
  print(f"vcoach    batch {args.n:<5}: {rate_all:10.0f} completions/s  ({t_all:.3f} s)")
  print(f"ratio (batch {args.n} / batch 1): {rate_all / rate_one:.1f}x")
  print(f"compiled reward programs: {programs}")


if __name__ == "__main__":
  main()
