"""Evaluation: benchmark loaders, answer judges, metrics, protocols (docs/evaluation.md) and the
eval loop.

  from vcoach_jax import eval as vc_eval
  items = vc_eval.loaders.load("vstar", "V_STaR_test.json", video_dir="videos/")
  summary = vc_eval.evaluate(items, generate_fn, "vstar", out_jsonl="vstar.jsonl")
  print(vc_eval.summary_table(summary))

`generate_fn(requests) -> texts` links it to a model; `vcoach eval` wires the sampler.
"""

from vcoach_jax.eval import judge
from vcoach_jax.eval import loaders
from vcoach_jax.eval import metrics
from vcoach_jax.eval import protocols
from vcoach_jax.eval import reference
from vcoach_jax.eval import scoring
from vcoach_jax.eval.evaluate import EvalOptions, evaluate, read_results, summarize, summary_table
from vcoach_jax.eval.items import BENCHMARKS, EvalItem, Request

__all__ = ["BENCHMARKS", "EvalItem", "EvalOptions", "Request", "evaluate", "judge", "loaders",
           "metrics", "protocols", "read_results", "reference", "scoring", "summarize",
           "summary_table"]
