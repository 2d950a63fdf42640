"""The evaluation loop: items -> batched generation -> per-item JSONL -> summary.

  summary = evaluate(items, generate_fn, "vstar", judge=RougeJudge(), out_jsonl="vstar.jsonl")
  print(summary_table(summary))

`generate_fn(requests: list[Request]) -> list[str]` is the only link to a model (the CLI wires
the sampler: greedy, raw video, no visual prompt), so tests and other models plug in here.
Results are appended to `out_jsonl` one line per item and flushed after every batch; a rerun
skips the ids already there (a line cut short by a crash is dropped), so an interrupted run
resumes where it stopped and the summary always covers every item of the run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from vcoach_jax import storage
from vcoach_jax.evaluation import judge as judge_lib
from vcoach_jax.evaluation import metrics
from vcoach_jax.evaluation import protocols as protocols_lib
from vcoach_jax.evaluation import reference
from vcoach_jax.evaluation import scoring
from vcoach_jax.evaluation.items import MCQ_BENCHMARKS, EvalItem, Request

GenerateFn = Callable[[list[Request]], list[str]]


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """Thresholds of the metrics (`config.eval`)."""
  correct_score: int = metrics.CORRECT_SCORE
  recall_thresholds: tuple[float, ...] = metrics.RECALL_THRESHOLDS
  map_thresholds: tuple[float, ...] = metrics.MAP_THRESHOLDS
  joint_tiou: float = metrics.JOINT_TIOU
  joint_miou: float = metrics.JOINT_MIOU
  lgm_eps: float = metrics.LGM_EPS
  length_bounds: tuple[float, ...] = (60.0, 180.0)  # seconds: short < 60 <= medium < 180 <= long

  @classmethod
  def from_config(cls, ev: Mapping[str, Any]) -> "EvalOptions":
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: ev[k] for k in ev.keys() if k in names}
    return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()})

  def buckets(self) -> tuple[tuple[float, str], ...]:
    bounds = tuple(float(b) for b in self.length_bounds)
    if len(bounds) == 2:
      names = ("short", "medium", "long")
    else:
      names = tuple(f"<{b:g}s" if i == 0 else f"{bounds[i - 1]:g}-{b:g}s"
                    for i, b in enumerate(bounds)) + (f">={bounds[-1]:g}s",)
    return tuple(zip(bounds + (math.inf,), names))

  def chain_kwargs(self) -> dict[str, Any]:
    return dict(recall_thresholds=self.recall_thresholds, map_thresholds=self.map_thresholds,
                joint_tiou=self.joint_tiou, joint_miou=self.joint_miou, eps=self.lgm_eps,
                correct_score=self.correct_score)


def read_results(path) -> dict[str, dict[str, Any]]:
  """Results already in a JSONL file, by id; a last line cut short is removed from the file."""
  if not path or not storage.path(path).exists():
    return {}
  data = storage.path(path).read_bytes()
  done, good_end = {}, 0
  for line in data.split(b"\n"):
    end = good_end + len(line) + 1
    if line.strip():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        break  # an interrupted write: drop it and everything after
      done[str(record["id"])] = record
    good_end = end
  good_end = min(good_end, len(data))
  if good_end < len(data):
    storage.write_bytes(path, data[:good_end])
  return done


def requests_for(item: EvalItem, protocol: protocols_lib.Protocol) -> list[Request]:
  """The prompts asked about one item under `protocol`."""
  if protocol.parser == "reference":
    return reference.requests_for(item)
  return scoring.requests_for(item)


def _batches(items: Sequence[EvalItem], batch_size: int, protocol: protocols_lib.Protocol
             ) -> Iterable[list[tuple[EvalItem, list[Request]]]]:
  """Groups of whole items whose requests number at most `batch_size` (at least one item)."""
  group, size = [], 0
  for item in items:
    reqs = requests_for(item, protocol)
    if group and size + len(reqs) > batch_size:
      yield group
      group, size = [], 0
    group.append((item, reqs))
    size += len(reqs)
  if group:
    yield group


def _rewards(results: list[dict[str, Any]], items: Sequence[EvalItem],
             reward_options: Mapping[str, Any]) -> None:
  """Adds the seven training rewards of each synthetic item's completion."""
  from vcoach_jax import rewards  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import records as records_lib  # pylint: disable=g-import-not-at-top
  rows = [(r, it) for r, it in zip(results, items) if it.record is not None]
  if not rows:
    return
  samples = [records_lib.reward_sample(it.record, tuple(it.box_size)) for _, it in rows]
  scores = rewards.compute([r["outputs"]["answer"] for r, _ in rows], samples, reward_options)
  for i, (r, _) in enumerate(rows):
    r["rewards"] = {name: float(scores[name][i]) for name in rewards.REWARD_NAMES}


def evaluate(items: Iterable[EvalItem], generate_fn: GenerateFn, benchmark: str,
             judge: judge_lib.Judge | None = None, out_jsonl: str | None = None,
             batch_size: int = 8, limit: int | None = None, *,
             options: EvalOptions = EvalOptions(), pred_size: scoring.PredSize | None = None,
             reward_options: Mapping[str, Any] | None = None, progress: bool = True,
             protocol: protocols_lib.Protocol = protocols_lib.REGISTRY["training"]
             ) -> dict[str, Any]:
  """Evaluates `items` with `generate_fn`; returns the summary (see `summarize`).

  Args:
    items: the benchmark's items (ids unique).
    generate_fn: requests -> completion texts, same order and length.
    benchmark: the benchmark name (decides the summary).
    judge: free-form answer judge (default: `RougeJudge()`).
    out_jsonl: per-item results are appended here; ids already in it are skipped (they must
      have been written under the same protocol).
    batch_size: requests per `generate_fn` call (an item's requests are never split).
    limit: evaluate only the first `limit` items (None or 0: all).
    options: metric thresholds.
    pred_size: item -> (W, H) of the frames the model saw, to scale predicted boxes.
    reward_options: if given, synthetic items also get the seven rewards of their completion.
    progress: show a progress bar.
    protocol: how items are asked and scored (`protocols`); the prompts themselves are
      `generate_fn`'s business.
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  judge = judge or judge_lib.RougeJudge()
  items = list(items)[:limit or None]
  done = read_results(out_jsonl)
  for rid, record in done.items():
    if record.get("protocol", "training") != protocol.name:
      raise ValueError(f"{out_jsonl}: item {rid!r} was evaluated under protocol "
                       f"{record.get('protocol', 'training')!r}, not {protocol.name!r}; write this "
                       "run to another output folder")
  pending = [it for it in items if it.id not in done]
  results = {k: v for k, v in done.items()}
  out = storage.Appender(out_jsonl) if out_jsonl else None
  bar = tqdm.tqdm(total=len(items), initial=len(items) - len(pending), unit="item",
                  desc=f"eval {benchmark}", file=sys.stderr, disable=not progress)
  try:
    for group in _batches(pending, max(1, batch_size), protocol):
      requests = [r for _, reqs in group for r in reqs]
      texts = generate_fn(requests)
      if len(texts) != len(requests):
        raise ValueError(f"generate_fn returned {len(texts)} texts for {len(requests)} requests")
      outputs = [{} for _ in group]
      index = {id(it): i for i, (it, _) in enumerate(group)}
      for req, text in zip(requests, texts):
        outputs[index[id(req.item)]][req.step] = text
      group_items = [it for it, _ in group]
      if protocol.parser == "reference":
        scored = reference.score_items(group_items, outputs, judge, options.map_thresholds,
                                       options.correct_score)
      else:
        scored = scoring.score_items(group_items, outputs, judge, pred_size,
                                     options.correct_score)
      if reward_options is not None:
        _rewards(scored, group_items, reward_options)
      for result in scored:
        result["protocol"] = protocol.name
        results[result["id"]] = result
      if out:
        out.write("".join(json.dumps(result) + "\n" for result in scored))
      bar.update(len(group))
  finally:
    bar.close()
    if out:
      out.close()
  ordered = [results[it.id] for it in items if it.id in results]
  summary = summarize(benchmark, ordered, options, protocol)
  summary.update(new=len(pending), resumed=len(items) - len(pending))
  return summary


def _vstar_summary(results, options: EvalOptions) -> dict[str, Any]:
  return {"vstar": metrics.vstar_summary(results, ("chain1", "chain2"), buckets=options.buckets(),
                                         **options.chain_kwargs())}


def _synthetic_summary(results, options: EvalOptions) -> dict[str, Any]:
  kw = options.chain_kwargs()
  out: dict[str, Any] = {
      "vstar": metrics.vstar_summary(results, ("chain1",), buckets=options.buckets(), **kw)}
  by_task: dict[str, list] = {}
  for r in results:
    by_task.setdefault(r["task"], []).append(r)
  out["by_task"] = {t: metrics.vstar_block(v, ("chain1",), **kw) for t, v in sorted(by_task.items())}
  scored = [r["rewards"] for r in results if "rewards" in r]
  if scored:
    out["rewards"] = {k: float(np.mean([s[k] for s in scored])) for k in scored[0]}
  return out


def _charades_summary(results, options: EvalOptions) -> dict[str, Any]:
  return {"charades": metrics.temporal_summary(
      [r["chains"]["chain1"]["tiou"] for r in results], options.recall_thresholds)}


def _mcq_summary(results, options: EvalOptions) -> dict[str, Any]:
  del options
  return {"mcq": metrics.mcq_summary(
      [{**r, "correct": bool(r["correct"])} for r in results], ("category", "domain", "length"))}


# A benchmark's figures (every name of items.BENCHMARKS): name -> fn(results, options) ->
# {section: figures}; under a protocol with the reference parsers, REFERENCE_SUMMARIES first.
SUMMARIES = {"vstar": _vstar_summary, "charades": _charades_summary,
             "synthetic": _synthetic_summary, **dict.fromkeys(MCQ_BENCHMARKS, _mcq_summary)}
REFERENCE_SUMMARIES = {
    "vstar": lambda results, options: {
        "vstar": reference.vstar_summary(results, **options.chain_kwargs())},
    "charades": lambda results, options: {
        "charades": reference.charades_summary(results, options.recall_thresholds)},
}


def summarize(benchmark: str, results: Sequence[Mapping[str, Any]],
              options: EvalOptions = EvalOptions(),
              protocol: protocols_lib.Protocol = protocols_lib.REGISTRY["training"]
              ) -> dict[str, Any]:
  """The benchmark's figures over per-item results, as `protocol` counts them."""
  out: dict[str, Any] = {"benchmark": benchmark, "n": len(results),
                         "protocol": protocol.describe()}
  table = (REFERENCE_SUMMARIES if protocol.parser == "reference"
           and benchmark in REFERENCE_SUMMARIES else SUMMARIES)
  if benchmark not in table:
    raise ValueError(f"no summary for benchmark {benchmark!r}; expected one of {tuple(table)}")
  out.update(table[benchmark](results, options))
  return out


def _fmt(v: Any) -> str:
  return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  cells = [list(header)] + [[_fmt(v) for v in row] for row in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
           for r in cells]
  return "\n".join([lines[0], "-" * len(lines[0])] + lines[1:])


def summary_table(summary: Mapping[str, Any]) -> str:
  """The summary as a plain-text table (one row per group)."""
  title = f"{summary['benchmark']}: {summary['n']} item(s)"
  for key in ("protocol", "judge"):
    if summary.get(key):
      title += f"\n{key}: {summary[key]}"
  if "vstar" in summary:
    vs = summary["vstar"]
    chains = [k for k in vs["overall"] if k.startswith("chain")]
    header = ["group", "n", "acc"]
    for c in chains:
      header += [f"{c}:tIoU", f"{c}:R1@0.5", f"{c}:mIoU", f"{c}:mAP@0.5", f"{c}:AM", f"{c}:LGM",
                 f"{c}:all3"]
    header += ["mAM", "mLGM"]
    groups = [("overall", vs["overall"])]
    groups += [(f"domain={k}", b) for k, b in vs["by_domain"].items()]
    groups += [(f"length={k}", b) for k, b in vs["by_length"].items()]
    groups += [(f"task={k}", b) for k, b in summary.get("by_task", {}).items()]
    rows = []
    for name, b in groups:
      row = [name, b["n"], b["acc"]]
      for c in chains:
        m = b[c] or {}  # None: a group without judged items (reference protocols)
        row += [m.get(k) for k in ("mean_tiou", "R1@0.5", "mean_miou", "mAP@0.5", "AM", "LGM",
                                   "answer&tiou&miou")]
      rows.append(row + [b["mAM"], b["mLGM"]])
    text = _table(header, rows)
    if "rewards" in summary:
      text += "\nmean rewards: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["rewards"].items())
    return f"{title}\n{text}"
  if "charades" in summary:
    ch = summary["charades"]
    keys = [k for k in ch if k != "n"]
    return f"{title}\n" + _table(["group", "n"] + keys, [["overall", ch["n"]] + [ch[k] for k in keys]])
  mcq = summary["mcq"]
  rows = [["overall", mcq["n"], mcq["acc"]]]
  for field in ("category", "domain", "length"):
    for k, b in mcq.get(f"by_{field}", {}).items():
      rows.append([f"{field}={k}", b["n"], b["acc"]])
  return f"{title}\n" + _table(["group", "n", "acc"], rows)
