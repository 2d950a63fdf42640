"""The method's ablation in miniature (docs/design.md §10, COMPASS area 6): on the synthetic world,
cold-start SFT once (and the VP-Selector), then three RL variants from that same start, on the
same data order, for several seeds each:

  gspo   GSPO with the grounding rewards only, no coaching (`rl.method = "gspo"`).
  coach  + visual-prompt coaching without self-distillation. With alpha = 0 the prompted
         rollouts would change nothing (only raw rollouts enter GSPO, §8.3), so this variant is
         defined as: the prompted rollouts of hard prompts also enter the GSPO loss as their own
         groups (advantages normalised within each prompted group, log-probs under the prompted
         input), no NLL (`rl.method = "coach"`). Not the reference method.
  full   + self-distillation: the method (GSPO on raw rollouts + alpha * NLL on positives).

Each run is evaluated on the held-out synthetic split two ways: the probe (`rl.probe`: G
sampled rollouts per prompt, the seven rewards' means, the fraction of hard prompts) and the
V-STAR-style metrics of `vcoach_jax.evaluation` (greedy, raw video, through the sampler with the
trained policy). Writes ablation.md / ablation.json (mean ± std over seeds) and
reward_total.png (the raw rollouts' rewards per step: a panel per reward, each variant's mean
over seeds with its 95% interval).

  result = run(ablate_config(), "vcoach_ablate", seeds=3)
  print(result.markdown)

A rerun with the same work folder reuses the SFT start and every finished run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from vcoach_jax import config as config_lib
from vcoach_jax import demo
from vcoach_jax import storage
from vcoach_jax.rl import methods


@dataclasses.dataclass(frozen=True)
class Variant:
  method: str  # config.rl.method of the variant's runs (vcoach_jax/rl/methods.py)
  description: str


VARIANTS: dict[str, Variant] = {name: Variant(name, methods.get(name).description)
                                for name in methods.NAMES}  # gspo, coach, full

# The ablation's settings are data: configs/demo.py:variant=ablate (on top of the demo's).
PROBE_BATCHES = 4  # eval batches of the probe per run (fast: 1)

PROBE_COLUMNS = ("format", "ans_acc", "ans_tiou", "thk_temporal_point", "thk_temporal_segment",
                 "thk_spatial", "total", "frac_hard")
EVAL_COLUMNS = ("acc", "tIoU", "R1@0.5", "mIoU", "mAP@0.5", "AM", "LGM")
COLUMNS = tuple(f"probe/{c}" for c in PROBE_COLUMNS) + tuple(f"eval/{c}" for c in EVAL_COLUMNS)
HEADERS = {"probe/format": "format", "probe/ans_acc": "accuracy", "probe/ans_tiou": "answer tIoU",
           "probe/thk_temporal_point": "when (pt)", "probe/thk_temporal_segment": "when (seg)",
           "probe/thk_spatial": "where", "probe/total": "total R", "probe/frac_hard": "frac hard",
           "eval/acc": "V* acc", "eval/tIoU": "V* tIoU", "eval/R1@0.5": "V* R1@0.5",
           "eval/mIoU": "V* mIoU", "eval/mAP@0.5": "V* mAP@0.5", "eval/AM": "V* AM",
           "eval/LGM": "V* LGM"}
START = "sft (start)"  # the row of the shared SFT start


@dataclasses.dataclass
class AblationResult:
  markdown: str  # the table with the variants' definitions (ablation.md)
  summary: dict  # ablation.json: per variant, per metric: mean, std, values
  plot: str  # reward_total.png
  seconds: dict  # wall time per phase


def ablate_config(fast: bool = False, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """configs/demo.py:variant=ablate (and `fast`: a ~2 minute smoke version) with overrides."""
  return demo.demo_config(fast=fast, overrides=overrides, variant="ablate")


# --------------------------------------------------------------------------------------------
# Evaluation of one policy.

def evaluate_policy(rl, config: ml_collections.ConfigDict, tok, workdir: storage.Path, *,
                    probe_batches: int, progress: bool = False) -> dict[str, float]:
  """Flat metrics of trainer `rl`'s current policy: `probe/<reward>` (sampled, G per prompt)
  and `eval/<metric>` (greedy, V-STAR-style, over the whole held-out split)."""
  from vcoach_jax import evaluation  # pylint: disable=g-import-not-at-top
  out = {f"probe/{k}": v for k, v in
         demo.probe_policy(rl, config, tok, workdir, probe_batches).items()}
  from vcoach_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import video  # pylint: disable=g-import-not-at-top
  from vcoach_jax.evaluation import generation, prompting  # pylint: disable=g-import-not-at-top
  from vcoach_jax.sampling import SamplingConfig  # pylint: disable=g-import-not-at-top
  world = synthetic.SyntheticWorld(synthetic.WorldSpec.from_config(config.synthetic))
  generate = generation.SamplerGenerate(
      rl.sampler, SamplingConfig(greedy=True, max_new_tokens=config.sampling.max_new_tokens),
      rl.pipe.shapes, prompting.PromptBuilder(rl.parts.texts,
                                              video.VideoSpec.from_config(config.video), world),
      batch_size=config.eval.batch_size, state=rl.policy_state())
  workdir.mkdir(parents=True, exist_ok=True)
  jsonl = workdir / "synthetic.jsonl"
  jsonl.unlink(missing_ok=True)  # a fresh policy: never resume another one's completions
  summary = evaluation.evaluate(
      evaluation.loaders.synthetic_items(config, "eval"), generate, "synthetic",
      out_jsonl=str(jsonl), batch_size=config.eval.batch_size,
      options=evaluation.EvalOptions.from_config(config.eval),
      reward_options=config_lib.reward_options(config), progress=progress)
  storage.write_text(workdir / "summary.json", json.dumps(summary, indent=1) + "\n")
  block = summary["vstar"]["overall"]
  chain = block["chain1"]
  figures = {"acc": block["acc"], "tIoU": chain["mean_tiou"], "R1@0.5": chain.get("R1@0.5"),
             "mIoU": chain["mean_miou"], "mAP@0.5": chain.get("mAP@0.5"), "AM": chain["AM"],
             "LGM": chain["LGM"]}
  out.update({f"eval/{k}": math.nan if v is None else float(v) for k, v in figures.items()})
  return out


# --------------------------------------------------------------------------------------------
# Aggregation and outputs.

def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
  """{variant: {metric: {mean, std (over seeds, ddof 0), values}}} of the finished runs."""
  out: dict[str, dict[str, dict[str, Any]]] = {}
  for run_ in runs:
    per = out.setdefault(run_["variant"], {})
    for key in COLUMNS:
      per.setdefault(key, {"values": []})["values"].append(float(run_["metrics"][key]))
  for per in out.values():
    for stats in per.values():
      v = np.asarray(stats["values"], np.float64)
      stats["mean"], stats["std"] = float(np.mean(v)), float(np.std(v))
  return out


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
  """(mean, low, high): Student-t interval of the mean over seeds (the mean alone for one)."""
  from scipy import stats as st  # pylint: disable=g-import-not-at-top
  v = np.asarray(values, np.float64)
  m = float(v.mean())
  if v.size < 2:
    return m, m, m
  half = float(st.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
  return m, m - half, m + half


CURVE_KEYS = ("reward_total", "reward_thk_spatial", "reward_thk_temporal_point",
              "reward_ans_acc", "frac_hard")


def curve_plot(run_dirs: Mapping[str, Sequence[storage.Path]], path: storage.Path,
               keys: Sequence[str] = CURVE_KEYS) -> storage.Path:
  """A panel per metric of the raw rollouts (metrics/metrics.jsonl of each run): each variant's
  mean over seeds per step with its 95% interval."""
  from vcoach_jax import metrics_writer  # pylint: disable=g-import-not-at-top
  from vcoach_jax import plots  # pylint: disable=g-import-not-at-top
  variants = {}
  for name, dirs in run_dirs.items():
    by_key: dict[str, dict[int, list[float]]] = {k: {} for k in keys}
    for d in dirs:
      for row in metrics_writer.read_jsonl(d / "metrics" / "metrics.jsonl"):
        for k in keys:
          if isinstance(row.get(k), (int, float)):
            by_key[k].setdefault(int(row["step"]) + 1, []).append(float(row[k]))
    variants[name] = {}
    for k, by_step in by_key.items():
      if by_step:
        steps = sorted(by_step)
        variants[name][k] = (steps, *zip(*(mean_ci(by_step[s]) for s in steps)))
  n = max((len(d) for d in run_dirs.values()), default=0)
  plots.bands(variants, path, title=f"raw rollouts per RL step: mean over {n} seed(s), 95% CI")
  return path


PAIRS = (("full", "gspo"), ("coach", "gspo"), ("full", "coach"))  # (variant, baseline)


def paired_differences(runs: Sequence[Mapping[str, Any]], pairs=PAIRS,
                       columns: Sequence[str] = COLUMNS) -> dict[str, dict[str, dict[str, Any]]]:
  """{"a - b": {metric: {mean, low, high (95% t interval), values}}} over the seeds both
  variants ran: run a of seed s minus run b of seed s (same SFT start, data order and seed)."""
  by = {(r["variant"], r["seed"]): r["metrics"] for r in runs}
  out: dict[str, dict[str, dict[str, Any]]] = {}
  for a, b in pairs:
    seeds = sorted(s for (v, s) in by if v == a and (b, s) in by)
    if not seeds:
      continue
    per = out.setdefault(f"{a} - {b}", {})
    for key in columns:
      d = [float(by[(a, s)][key]) - float(by[(b, s)][key]) for s in seeds]
      m, lo, hi = mean_ci(d)
      per[key] = {"mean": m, "low": lo, "high": hi, "values": d}
  return out


def mean_std(x: Mapping[str, Any]) -> str:
  """A table cell: `mean ± std` (over seeds)."""
  return f"{x['mean']:.3f} ± {x['std']:.3f}"


def mean_interval(x: Mapping[str, Any]) -> str:
  """A table cell: `mean [low, high]`, its 95% t interval (computed from `values` if absent)."""
  lo, hi = (x["low"], x["high"]) if "low" in x else mean_ci(x["values"])[1:]
  return f"{x['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def table(stats: Mapping[str, Mapping[str, Mapping[str, Any]]],
          columns: Sequence[str] = COLUMNS, *, cell: Callable[[Mapping[str, Any]], str] = mean_std,
          first: str = "variant") -> str:
  """A markdown table: one row per variant (or pair) of `stats`, its name under `first`, its
  number of seeds, then `cell` of each metric of `columns`."""
  head = f"| {first} | seeds | " + " | ".join(HEADERS.get(c, c) for c in columns) + " |"
  lines = [head, "|" + "---|" * (len(columns) + 2)]
  for name, per in stats.items():
    n = len(next(iter(per.values()))["values"])
    lines.append(f"| {name} | {n} | " + " | ".join(cell(per[c]) for c in columns) + " |")
  return "\n".join(lines)


def _report(stats, config, seeds: int, steps: int, command: str, probe_prompts: int,
            diffs=None) -> str:
  lines = [f"# Ablation in miniature ({seeds} seed(s), {steps} RL steps per run)", ""]
  if command:
    lines += ["```", command, "```", ""]
  probe_cols = [c for c in COLUMNS if c.startswith("probe/")]
  eval_cols = [c for c in COLUMNS if c.startswith("eval/")]
  key_cols = ["probe/total", "probe/thk_spatial", "probe/thk_temporal_point", "probe/ans_acc",
              "eval/mIoU", "eval/AM", "eval/LGM"]
  if diffs:
    lines += ["Paired differences (same seed, same SFT start and data order), mean over seeds "
              "with the 95% t interval: a difference is resolved when its interval excludes 0.",
              "", table(diffs, key_cols, cell=mean_interval, first=""), "",
              "Per variant, mean over seeds with the 95% t interval:", "",
              table({k: v for k, v in stats.items() if k != START}, key_cols, cell=mean_interval,
                    first=""), ""]
  lines += ["Per-reward means on held-out prompts (probe, sampled):", "",
            table(stats, probe_cols), "",
            "V-STAR-style metrics on the held-out split (greedy):", "",
            table(stats, eval_cols), "",
            "Variants (same SFT start and data order; the seed changes the RL sampling):", ""]
  lines += [f"- `{name}`: {v.description}" for name, v in VARIANTS.items()]
  lines += [f"- `{START}`: the shared cold-start SFT policy, before RL (one evaluation)", "",
            "`coach` is this project's definition, not the paper's: with alpha = 0 alone the "
            "prompted rollouts would not change training (only raw rollouts enter GSPO), so each "
            "hard prompt's prompted rollouts form their own GSPO group (advantages normalised "
            "within it, log-probs under the prompted input, no KL, no NLL).", "",
            f"Columns: `probe/*` = mean of the seven rewards over {config.sampling.num_samples} "
            f"sampled rollouts per prompt on {probe_prompts} held-out prompts, and the fraction "
            f"of those prompts with mean total < k1 = {config.rl.k1}; `V*` = V-STAR-style "
            "metrics (greedy, chain 1, judge rouge, correct = score >= 2) on the "
            f"{config.synthetic.num_eval} held-out synthetic items. World: "
            f"{config.synthetic.distractors} distractor(s), occlusion "
            f"{config.synthetic.occlusion}, {config.synthetic.min_objects}-"
            f"{config.synthetic.max_objects} objects, {config.synthetic.min_frames}-"
            f"{config.synthetic.max_frames} frames.", ""]
  return "\n".join(lines)


# --------------------------------------------------------------------------------------------

RL_ONLY = ("rl.", "sampling.", "eval.", "checkpoint.", "optim.total_steps", "optim.lr")


def fingerprint(config: ml_collections.ConfigDict, skip: Sequence[str] = ()) -> str:
  """A short hash of a config (minus keys starting with `skip`): finished work is reused only
  under the same one."""
  flat = {k: v for k, v in config_lib.flatten(config).items() if not k.startswith(tuple(skip))}
  text = json.dumps(flat, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _start(config, w: storage.Path, progress: bool, fast: bool, seconds: dict):
  """The shared SFT start and selector cache (reused when this work folder has them)."""
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  marker = w / "start.json"
  if marker.is_file():
    saved = json.loads(marker.read_text())
    if saved.get("fingerprint") != fingerprint(config, RL_ONLY):
      raise ValueError(f"{marker}: this work folder's SFT start (and synthetic data) was made "
                       "with another config; use a new --workdir (in the same one change only "
                       "--steps, --seeds and rl., sampling., eval., optim.lr settings)")
    print(f"== reusing the SFT start and selector cache of {w}")
    rl_config = config_lib.with_overrides(config, saved["overrides"])
    return rl_config, experiment.tokenizer(rl_config, w)
  # No selector when the trainer would not read its cache (hard prompts then get `raw`).
  select = config.rl.prompt_selector == "cache"
  rl_config, tok, _ = demo.cold_start(config, str(w), progress=progress, fast=fast,
                                      seconds=seconds, select=select)
  keys = ("data.tokenizer_dir", "data.tfds_dir", "model.checkpoint") + (
      ("selector.cache",) if select else ())
  flat = config_lib.flatten(rl_config)
  storage.write_text(marker, json.dumps({"overrides": [f"{k}={flat[k]}" for k in keys],
                                         "fingerprint": fingerprint(config, RL_ONLY)}) + "\n")
  return rl_config, tok


def run(config: ml_collections.ConfigDict, workdir: str, *, seeds: int = 3,
        steps: int | None = None, progress: bool = True, fast: bool = False,
        variants: Sequence[str] = tuple(VARIANTS), command: str = "") -> AblationResult:
  """SFT once, then every variant x seed; evaluates each and writes the table and the plot."""
  from vcoach_jax.rl import train as rl_train  # pylint: disable=g-import-not-at-top
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown or seeds < 1:
    raise ValueError(f"variants must be among {list(VARIANTS)} (got {unknown}) and seeds >= 1 "
                     f"(got {seeds})")
  w = storage.path(workdir)
  w.mkdir(parents=True, exist_ok=True)
  seconds: dict[str, float] = {}
  rl_config, tok = _start(config, w, progress, fast, seconds)
  steps = steps or rl_config.optim.total_steps
  rl_config = config_lib.with_overrides(rl_config, [f"optim.total_steps={steps}"])
  n_probe = 1 if fast else PROBE_BATCHES
  runs, run_dirs = [], {name: [] for name in variants}
  t0 = time.perf_counter()
  for seed in range(seeds):
    for name in variants:
      v = VARIANTS[name]
      d = w / "runs" / name / f"seed{seed}"
      run_dirs[name].append(d)
      done = d / "result.json"
      run_config = config_lib.with_overrides(rl_config, [f"rl.method={v.method}"])
      key = fingerprint(run_config)
      if done.is_file() and json.loads(done.read_text()).get("fingerprint") == key:
        runs.append(json.loads(done.read_text()))
        print(f"== {name} seed {seed}: done before, reused")
        continue
      if d.exists():
        d.rmtree()  # an interrupted run starts over
      print(f"== RL {name} seed {seed} ({steps} steps): {v.description}")
      rl = rl_train.setup(run_config, str(d), seed=seed, progress=progress)
      start_file, start_key = w / "runs" / "start.json", fingerprint(rl_config)
      if not (start_file.is_file()
              and json.loads(start_file.read_text()).get("fingerprint") == start_key):
        metrics = evaluate_policy(rl, rl_config, tok, w / "runs" / "start",
                                  probe_batches=n_probe)
        storage.write_text(start_file, json.dumps({"variant": START, "seed": 0,
                                                   "metrics": metrics, "fingerprint": start_key}))
      rl_train.fit(rl)
      rl.writer.close()
      metrics = evaluate_policy(rl, rl_config, tok, d / "eval", probe_batches=n_probe)
      result = {"variant": name, "seed": seed, "metrics": metrics, "fingerprint": key}
      storage.write_text(done, json.dumps(result, indent=1) + "\n")
      runs.append(result)
  seconds["rl+eval"] = time.perf_counter() - t0
  start_run = w / "runs" / "start.json"
  rows = ([json.loads(start_run.read_text())] if start_run.is_file() else []) + runs
  stats = aggregate(rows)
  diffs = paired_differences(runs)
  markdown = _report(stats, rl_config, seeds, steps, command,
                     n_probe * rl_config.data.batch_size, diffs)
  plot = curve_plot(run_dirs, w / "reward_total.png")
  summary = {"command": command, "seeds": seeds, "steps": steps,
             "variants": {k: dataclasses.asdict(v) for k, v in VARIANTS.items()},
             "metrics": stats, "paired_differences": diffs, "runs": rows, "seconds": seconds,
             "config": json.loads(rl_config.to_json_best_effort())}
  storage.write_text(w / "ablation.md", markdown)
  storage.write_text(w / "ablation.json", json.dumps(summary, indent=1) + "\n")
  return AblationResult(markdown, summary, str(plot), seconds)
