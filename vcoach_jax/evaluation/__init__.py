"""Evaluation: benchmark loaders, answer judges, metrics, protocols (docs/evaluation.md) and the
eval loop.

  from vcoach_jax import evaluation
  items = evaluation.loaders.load("vstar", "V_STaR_test.json", video_dir="videos/")
  summary = evaluation.evaluate(items, generate_fn, "vstar", out_jsonl="vstar.jsonl")
  print(evaluation.summary_table(summary))

`generate_fn(requests) -> texts` links it to a model; `runner.run(config, out_dir)` wires the
sampler, the judge and the protocol of a config (what `vcoach eval` runs).
"""

from vcoach_jax.evaluation import judge
from vcoach_jax.evaluation import loaders
from vcoach_jax.evaluation import metrics
from vcoach_jax.evaluation import protocols
from vcoach_jax.evaluation import reference
from vcoach_jax.evaluation import scoring
from vcoach_jax.evaluation.evaluate import EvalOptions, evaluate, read_results, summarize, summary_table
from vcoach_jax.evaluation.items import BENCHMARKS, EvalItem, Request

__all__ = ["BENCHMARKS", "EvalItem", "EvalOptions", "Request", "evaluate", "judge", "loaders",
           "metrics", "protocols", "read_results", "reference", "scoring", "summarize",
           "summary_table"]
