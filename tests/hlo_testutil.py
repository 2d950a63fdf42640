"""HLO checks of the tests, on top of `vcoach_jax.parallel.hlo_stats` (which parses the text and
counts loop bodies by their trip counts)."""

from __future__ import annotations

import re

from vcoach_jax.parallel import hlo_stats


def decode_loop(hlo: str) -> str:
  """Body name of the one entry-level while loop whose trip count XLA does not know (a decode
  loop exits early, a scan never does)."""
  (body, _, _), = [l for l in hlo_stats.entry_loops(hlo) if not l[2]]
  return body


def collective_bytes(hlo: str, name: str, op: str) -> int:
  """Bytes of every `op` (e.g. `all-gather`) of one execution of computation `name`, nested
  loops counted by their trip counts."""
  return hlo_stats.Program(hlo).computation(name).collectives[op]


def collective_shapes(hlo: str, name: str, op: str) -> list[str]:
  """Dims (e.g. "16,512") of the results of every `op` in computation `name` and the
  computations it calls (each listed once per call site, not per trip)."""
  comps, _ = hlo_stats.parse(hlo)
  out = []
  for comp in hlo_stats.reachable(comps, name):
    for ins in comps[comp]:
      if ins.op in (op, op + "-start"):
        out += re.findall(r"\[([\d,]*)\]", ins.shape)
  return out
