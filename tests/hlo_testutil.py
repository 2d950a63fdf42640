"""Reading optimized HLO text: bytes moved by a collective per iteration of a while loop.

XLA's cost analysis counts a loop body once; these helpers walk the computations a loop body
calls (fusions, nested loops multiplied by their known trip counts) and sum the result bytes
of one collective kind.
"""

from __future__ import annotations

import re

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8}
_CALLS = re.compile(r"(?:calls|body|condition|to_apply|branch_computations)=\{?([^}\s,]+(?:,\s*"
                    r"[^}\s,]+)*)\}?")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def computations(hlo: str) -> tuple[dict[str, list[str]], str]:
  """{computation name: instruction lines}, and the entry computation's name."""
  comps, entry, name = {}, None, None
  for line in hlo.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{"):
      head = line.split()
      is_entry = head[0] == "ENTRY"
      name = (head[1] if is_entry else head[0]).lstrip("%")
      comps[name] = []
      entry = name if is_entry else entry
    elif name is not None and line.strip() == "}":
      name = None
    elif name is not None:
      comps[name].append(line)
  return comps, entry


def shape_bytes(text: str) -> int:
  """Bytes of the array shapes (e.g. `f32[8,64]{1,0}` or a tuple of them) in `text`."""
  total = 0
  for dtype, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", text):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _DTYPE_BYTES.get(dtype, 0)
  return total


def collective_bytes(comps: dict[str, list[str]], name: str, op: str) -> int:
  """Result bytes of every `op` (e.g. `all-gather`) run by one execution of computation
  `name`, nested loops counted by their known trip counts."""
  total = 0
  for line in comps.get(name, []):
    m = re.search(r"=\s*(.*?)\s" + re.escape(op) + r"(?:-start)?\(", line)
    if m:
      total += shape_bytes(m.group(1))
    trips = _TRIP.search(line)
    times = int(trips.group(1)) if trips and " while(" in line else 1
    for group in _CALLS.findall(line):
      for callee in group.split(","):
        callee = callee.strip().lstrip("%")
        if callee != name:
          total += times * collective_bytes(comps, callee, op)
  return total


def loops(hlo: str) -> list[tuple[str, int | None]]:
  """(body name, known trip count or None) of each while loop of the entry computation."""
  comps, entry = computations(hlo)
  out = []
  for line in comps[entry]:
    if " while(" in line:
      body = re.search(r"body=%?([\w.\-]+)", line).group(1)
      trips = _TRIP.search(line)
      out.append((body, int(trips.group(1)) if trips else None))
  return out


def collective_shapes(comps: dict[str, list[str]], name: str, op: str) -> list[str]:
  """Dims (e.g. "16,512") of the results of every `op` in computation `name` and the
  computations it calls (each listed once per call site, not per trip)."""
  out = []
  for line in comps.get(name, []):
    m = re.search(r"=\s*(.*?)\s" + re.escape(op) + r"(?:-start)?\(", line)
    if m:
      out += re.findall(r"\[([\d,]*)\]", m.group(1))
    for group in _CALLS.findall(line):
      for callee in group.split(","):
        callee = callee.strip().lstrip("%")
        if callee != name:
          out += collective_shapes(comps, callee, op)
  return out
