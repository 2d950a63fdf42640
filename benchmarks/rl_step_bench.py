"""Steady-state time of the demo's RL step on CPU, and the programs a run compiles, for this
checkout and (optionally) another one in the same session, so a before/after ratio is measured
under the same machine load.

  PYTHONPATH=. python benchmarks/rl_step_bench.py --sft vcoach_demo [--steps 6]
      [--before /path/to/other/checkout] [--rounds 1]

`--sft` is a `vcoach demo` work folder (its data/, tokenizer/, sft/policy and selector cache):
the RL steps start from that SFT policy with configs/demo.py's settings, as the demo's RL phase
does. Each measurement is a fresh process (`--child`) that builds the run, takes `--steps`
steps and reports per step: wall seconds of the data, sampling, rewards and update phases, the
CPU seconds of the whole step (all threads: what the step costs when the cores are shared), and
the XLA programs compiled (JAX's backend-compile event, which also counts loads from a
persistent cache). Steady state = the median over the steps after the first two. With
`--before`, processes of the two checkouts alternate `--rounds` times.

Measured 2026-11-29 on the shared 2-core machine (load 11-17 from other jobs, so wall times
are ~2.7x the CPU times and noisy), `--steps 6 --rounds 1`, the demo's SFT policy (no prompt
was hard: no prompted branch), before = the sampler re-padding each batch to a power-of-two
prompt length (320 -> 512 tokens), after = it keeps the pipeline's bucket; the same rewards
step for step:
                wall   cpu  sampling  train  data  rewards  1st step  programs  compile s
  before        4.86  1.80      2.79   1.92  0.12     0.05      63.6        54       53.1
  after         3.65  1.34      1.65   1.74  0.13     0.03      75.0        54       63.9
  before / after: cpu 1.34x, wall 1.33x (compile seconds differ by the load only)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, os, sys, time
os.environ.setdefault("USE_TF", "0")
from jax import monitoring
from vcoach_jax.demo import demo_config
from vcoach_jax.rl import train as rl_train
sft, workdir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
events = []
def listen(event, secs, **kw):
  if event == "/jax/core/compile/backend_compile_duration":
    events.append((str(kw.get("fun_name")), secs))
monitoring.register_event_duration_secs_listener(listen)
ov = [f"data.tokenizer_dir={sft}/tokenizer", f"data.tfds_dir={sft}/data",
      f"model.checkpoint={sft}/sft/policy", f"optim.total_steps={steps}"]
if os.path.exists(f"{sft}/selector/cache.json"):
  ov.append(f"selector.cache={sft}/selector/cache.json")
t0, c0 = time.perf_counter(), time.process_time()
run = rl_train.setup(demo_config(False, ov), workdir, progress=False)
out = {"setup_s": time.perf_counter() - t0, "setup_cpu_s": time.process_time() - c0, "steps": []}
for i in range(steps):
  mark = len(events)
  t0, c0 = time.perf_counter(), time.process_time()
  m = rl_train.step(run, i)
  new = events[mark:]
  out["steps"].append(dict(
      wall=time.perf_counter() - t0, cpu=time.process_time() - c0, data=m["seconds_data"],
      sampling=m["seconds_sampling"], rewards=m["seconds_rewards"], train=m["seconds_train"],
      frac_hard=m["frac_hard"], reward_total=m["reward_total"], compiles=len(new),
      compile_s=sum(s for _, s in new)))
out["programs"] = len(events)
out["compile_s"] = sum(s for _, s in events)
out["big_programs"] = sorted({n for n, s in events if s > 1.0})
print("RESULT " + json.dumps(out))
"""

PHASES = ("wall", "cpu", "sampling", "train", "data", "rewards")


def measure(code_dir: str, sft: str, steps: int) -> dict:
  workdir = tempfile.mkdtemp(prefix="rl_step_bench_")
  env = dict(os.environ, PYTHONPATH=code_dir, USE_TF="0", TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # every process compiles: compile time is measured
  try:
    proc = subprocess.run([sys.executable, "-c", CHILD, sft, workdir, str(steps)], env=env,
                          cwd=code_dir, capture_output=True, text=True, check=False)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"{code_dir}: the RL steps failed:\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def steady(result: dict) -> dict:
  rest = result["steps"][2:] or result["steps"][-1:]
  return {k: statistics.median(s[k] for s in rest) for k in PHASES}


def row(name: str, results: list[dict]) -> str:
  st = [steady(r) for r in results]
  med = {k: statistics.median(s[k] for s in st) for k in PHASES}
  first = statistics.median(r["steps"][0]["wall"] for r in results)
  progs = statistics.median(r["programs"] for r in results)
  comp = statistics.median(r["compile_s"] for r in results)
  return (f"{name:8s} " + " ".join(f"{med[k]:8.2f}" for k in PHASES)
          + f" {first:10.1f} {progs:8.0f} {comp:9.1f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sft", required=True, help="a `vcoach demo` work folder")
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--before", default=None, help="another checkout to compare with")
  parser.add_argument("--rounds", type=int, default=1)
  args = parser.parse_args()
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  codes = ([("before", os.path.abspath(args.before))] if args.before else []) + [("after", here)]
  results = {name: [] for name, _ in codes}
  for _ in range(args.rounds):
    for name, code in codes:
      t0 = time.perf_counter()
      results[name].append(measure(code, os.path.abspath(args.sft), args.steps))
      print(f"{name}: {time.perf_counter() - t0:.0f}s; per step: "
            + json.dumps([{k: round(v, 2) if isinstance(v, float) else v for k, v in s.items()}
                          for s in results[name][-1]["steps"]]), flush=True)
  print("\nsteady-state seconds per RL step (median of the steps after the first two), first "
        "step's wall seconds, programs compiled per run, compile seconds")
  print(f"{'':8s} " + " ".join(f"{k:>8s}" for k in PHASES)
        + f" {'1st step':>10s} {'programs':>8s} {'compile':>9s}")
  for name, _ in codes:
    print(row(name, results[name]))
  if args.before:
    b, a = (statistics.median(steady(r)["cpu"] for r in results[n]) for n in ("before", "after"))
    w = [statistics.median(steady(r)["wall"] for r in results[n]) for n in ("before", "after")]
    print(f"\nbefore / after: cpu {b / a:.2f}x, wall {w[0] / w[1]:.2f}x")


if __name__ == "__main__":
  main()
