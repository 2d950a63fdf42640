"""The scaling report: how a program compiled for N devices divides the work of the same program
on one device.

For each program (the train step; the sampler's prefill and one decode step) it compares, from
the optimized HLO (`hlo_stats`, loop bodies counted by their trip counts):

  dot FLOPs per device       against the 1-device program's / N ("of ideal" = that / actual,
                             1.00 when the work divides evenly, below 1 when devices repeat work);
  collective bytes per device by kind, and their sum as a multiple of the fp32 parameter bytes,
                             at the data's width (bf16 collectives, which XLA's CPU backend
                             runs in f32, count 2 bytes an element; `hlo_stats`), with the
                             as-compiled-for-CPU total beside;
  peak memory per device     (arguments + temporaries + outputs - aliased, XLA's memory analysis).

The decode loop of the sampler exits early, so its trip count is a bound; the report gives one
step of it (the bytes gathered per decode step should be ~0: weights placed once per call).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from vcoach_jax.parallel import hlo_stats

SCOPES = ("vision_tower",)  # named scopes whose FLOPs the report also gives apart
_SHORT = {"all-gather": "all-gather", "reduce-scatter": "reduce-scat", "all-reduce": "all-reduce",
          "all-to-all": "all-to-all", "collective-permute": "coll-perm"}


@dataclasses.dataclass(frozen=True)
class Measured:
  """One program on one mesh: per-device work, collectives and peak bytes."""
  stats: hlo_stats.Stats
  peak: int


def train_step(hlo: str, peak: int) -> dict[str, Measured]:
  return {"train step": Measured(hlo_stats.Program(hlo, SCOPES).stats, peak)}


def sampler(hlo: str, peak: int) -> dict[str, Measured]:
  """{"prefill": everything but the decode loop, "decode step": one iteration of it}; both carry
  the whole program's peak."""
  program = hlo_stats.Program(hlo, SCOPES)
  decode = [l for l in program.loops if l.body in
            {b for b, _, exact in hlo_stats.entry_loops(hlo) if not exact}]
  if len(decode) != 1:
    raise ValueError(f"expected one decode loop (a while loop of unknown trip count) in the "
                     f"sampler's program, found {len(decode)}")
  return {"prefill": Measured(program.without_loop(decode[0].body), peak),
          "decode step": Measured(decode[0].stats, peak)}


def _num(x: float) -> str:
  for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(x) >= size:
      return f"{x / size:.2f} {unit}"
  return f"{x:.0f} "


def format_report(many: Mapping[str, Measured], one: Mapping[str, Measured], devices: int,
                  mesh_shape: Mapping[str, int], num_params: int, slices: str = "") -> str:
  """The printed table comparing `many` (N devices) with `one` (the same programs, 1 device)."""
  mesh = ",".join(f"{k}={v}" for k, v in mesh_shape.items())
  fp32, bf16 = 4 * num_params, 2 * num_params
  lines = [f"scaling report: {devices} devices (mesh {mesh}) against the same programs on 1 device"
           + (f"; {devices} devices = {slices}" if slices else ""),
           f"parameters {num_params:,}: fp32 {_num(fp32)}B, bf16 {_num(bf16)}B",
           "", f"{'dot FLOPs per device':<28}{'N devices':>14}{'1 device / N':>14}{'of ideal':>10}"]
  for name, m in many.items():
    rows = [(name, m.stats.flops, one[name].stats.flops)]
    rows += [(f"  {s}", m.stats.scoped.get(s, 0), one[name].stats.scoped.get(s, 0))
             for s in SCOPES if one[name].stats.scoped.get(s, 0)]
    for label, got, base in rows:
      ideal = base / devices
      ratio = f"{ideal / got:10.2f}" if got else f"{'-':>10}"
      lines.append(f"  {label:<26}{_num(got) + 'F':>14}{_num(ideal) + 'F':>14}{ratio}")
  head = "".join(f"{_SHORT[k]:>12}" for k in hlo_stats.COLLECTIVES)
  lines += ["", f"{'collective bytes per device':<28}{head}{'total':>12}{'x fp32 params':>14}"
            f"{'CPU: x fp32':>13}"]
  for name, m in many.items():
    c = m.stats.collectives
    cells = "".join(f"{_num(c[k]) + 'B':>12}" for k in hlo_stats.COLLECTIVES)
    total = m.stats.collective_total
    cpu = (total + m.stats.widened) / fp32
    lines.append(f"  {name:<26}{cells}{_num(total) + 'B':>12}{total / fp32:14.2f}{cpu:13.2f}")
  lines.append("  (bf16 collectives at 2 bytes an element; `CPU`: as compiled for XLA's CPU "
               "backend, which runs them in f32)")
  if "decode step" in many:
    gathered = many["decode step"].stats.collectives["all-gather"]
    lines.append(f"  bytes all-gathered per decode step: {_num(gathered)}B = "
                 f"{100 * gathered / bf16:.2f}% of the bf16 weight bytes")
  lines += ["", f"{'peak memory per device':<28}{'N devices':>14}{'1 device':>14}"]
  seen = set()
  for name, m in many.items():
    if (m.peak, one[name].peak) in seen:  # the sampler's two rows share one program
      continue
    seen.add((m.peak, one[name].peak))
    label = "sampler (prefill + decode)" if name in ("prefill", "decode step") else name
    lines.append(f"  {label:<26}{_num(m.peak) + 'B':>14}{_num(one[name].peak) + 'B':>14}")
  return "\n".join(lines)
