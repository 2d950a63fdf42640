"""What a compiled program does per device, read from its optimized HLO text.

`compiled.cost_analysis()` counts the body of a while loop once, however many times it runs, and
says nothing about collectives. These helpers parse `compiled.as_text()` into computations and
walk them from the entry: a fusion or call counts once per call site, a while body (and its
condition) times the loop's trip count (`known_trip_count` in the backend config, else the bound
of the `induction variable < constant` compare in its condition), the branches of a conditional
by the most expensive one (one runs). Nested loops multiply.

Counted per instruction:
  dot FLOPs      2 x (result elements) x (product of the lhs contracting dimensions);
  collectives    bytes of the whole array each collective works on: an all-gather's result,
                 a reduce-scatter's operand, the size of an all-reduce / all-to-all /
                 collective-permute (the bytes a device sends over the ring are about that
                 times (n - 1) / n, twice for an all-reduce), at the width of the data: the CPU
                 backend has no bf16 collectives: its all-reduce promotion runs a bf16
                 all-reduce in f32 (its reduction renamed `*_promoted`) and its float
                 normalization does the same to the others (convert up, collective, convert
                 down). Such an f32 operand (of a promoted all-reduce; of another collective,
                 an f32 array converted from bf16) counts 2 bytes per element, what the
                 partitioned program moves on a backend with bf16 collectives (TPU, GPU).
                 `Stats.widened` keeps the f32 bytes left out that way.

  stats = program_stats(compiled.as_text())
  stats.flops, stats.collectives["all-gather"], stats.loops  # whole program, loops multiplied
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Callable, NamedTuple

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")

DTYPE_BYTES = {"pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
               "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8,
               "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][\w\-]*)\(")
_CALLEES = re.compile(
    r"\b(calls|body|condition|branch_computations|to_apply)=(\{[^}]*\}|%?[\w.\-]+)")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_INIT = re.compile(r'"known_init_step":\{"init":"(-?\d+)","step":"(-?\d+)"\}')


class Instruction(NamedTuple):
  name: str
  shape: str  # result type text, e.g. `f32[8,64]{1,0}` or a tuple of them
  op: str  # e.g. `dot`, `all-gather-start`, `while`
  operands: tuple[str, ...]  # operand instruction names
  line: str


def dims(shape: str) -> list[tuple[str, tuple[int, ...]]]:
  """(dtype, dims) of every array in a type text (`f32[8,64]{1,0}` or a tuple)."""
  return [(t, tuple(int(d) for d in filter(None, ds.split(","))))
          for t, ds in _ARRAY.findall(shape)]


def shape_bytes(shape: str) -> int:
  """Bytes of the arrays of a type text (a tuple: their sum)."""
  return sum(math.prod(d) * DTYPE_BYTES.get(t, 0) for t, d in dims(shape))


def _operands(line: str, start: int) -> tuple[str, ...]:
  """Operand names of the call `op(...)` whose `(` is at `start` (balanced to its `)`)."""
  depth, end = 0, start
  for end in range(start, len(line)):
    depth += {"(": 1, ")": -1}.get(line[end], 0)
    if depth == 0:
      break
  return tuple(m.lstrip("%") for m in re.findall(r"%[\w.\-]+", line[start:end]))


def parse(hlo: str) -> tuple[dict[str, list[Instruction]], str]:
  """{computation name: its instructions} and the entry computation's name."""
  comps: dict[str, list[Instruction]] = {}
  entry, name = None, None
  for line in hlo.splitlines():
    if line and not line[0].isspace() and line.rstrip().endswith("{") and "(" in line:
      head = line.split()
      is_entry = head[0] == "ENTRY"
      name = (head[1] if is_entry else head[0]).lstrip("%")
      comps[name] = []
      entry = name if is_entry else entry
    elif name is not None and line.strip() == "}":
      name = None
    elif name is not None:
      m = _INSTR.match(line)
      if m:
        comps[name].append(Instruction(m[1], m[2], m[3], _operands(line, m.end() - 1), line))
  if entry is None:
    raise ValueError("no ENTRY computation in this HLO text")
  return comps, entry


def callees(ins: Instruction) -> dict[str, list[str]]:
  """{attribute (calls, body, condition, branch_computations, to_apply): computation names}."""
  out: dict[str, list[str]] = {}
  for attr, value in _CALLEES.findall(ins.line):
    out.setdefault(attr, []).extend(
        v.strip().lstrip("%") for v in value.strip("{}").split(",") if v.strip())
  return out


def dot_flops(ins: Instruction, shapes: dict[str, str]) -> int:
  """2 x result elements x contracted size of a `dot` (0 for other instructions)."""
  if ins.op != "dot":
    return 0
  (_, out), = dims(ins.shape)
  (_, lhs), = dims(shapes[ins.operands[0]])
  m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", ins.line)
  contracted = math.prod(lhs[int(i)] for i in filter(None, m[1].split(","))) if m else 1
  return 2 * math.prod(out) * contracted


def collective_bytes(ins: Instruction, shapes: dict[str, str],
                     widened: Callable[[str], bool] = lambda name: False
                     ) -> tuple[str, int] | None:
  """(kind, bytes of the whole array) of a collective instruction, else None; operands for which
  `widened(name)` holds (f32 arrays holding bf16 values) count at half their bytes."""
  start = ins.op.endswith("-start")
  op = ins.op[:-len("-start")] if start else ins.op
  if op not in COLLECTIVES:
    return None
  operand = sum(shape_bytes(shapes.get(o, "")) for o in ins.operands)
  narrow = sum(shape_bytes(shapes.get(o, "")) // (2 if widened(o) else 1) for o in ins.operands)
  scale = narrow / operand if operand else 1.0
  if op == "all-gather":  # an async start's result is the tuple (operands, results)
    return op, round(scale * (shape_bytes(ins.shape) - (operand if start else 0)))
  if op == "reduce-scatter" or start:
    return op, narrow
  return op, round(scale * shape_bytes(ins.shape))


_PASS_THROUGH = ("bitcast", "copy", "reshape", "transpose", "get-tuple-element")


def _root(instructions: list[Instruction]) -> Instruction | None:
  return next((i for i in instructions if i.line.lstrip().startswith("ROOT")), None)


def holds_bf16(name: str, comp: str, comps: dict[str, list[Instruction]],
               shapes: dict[str, dict[str, str]], depth: int = 6) -> bool:
  """Whether f32 array `name` of computation `comp` is a bf16 value widened by a convert (what
  the CPU backend's float normalization puts before a collective it cannot run in bf16): its
  producer, through layout ops and into a fusion's root, is a convert from bf16."""
  by_name = {i.name: i for i in comps.get(comp, [])}
  ins = by_name.get(name)
  if ins is None or not dims(ins.shape) or dims(ins.shape)[0][0] != "f32":
    return False
  for _ in range(depth):
    if ins is None:
      return False
    if ins.op == "convert":
      src = shapes[comp].get(ins.operands[0], "")
      return bool(dims(src)) and dims(src)[0][0] == "bf16"
    if ins.op in _PASS_THROUGH and ins.op != "get-tuple-element" and ins.operands:
      ins = by_name.get(ins.operands[0])
    elif ins.op == "fusion" and callees(ins).get("calls"):
      comp = callees(ins)["calls"][0]
      by_name = {i.name: i for i in comps.get(comp, [])}
      ins = _root(comps.get(comp, []))
    else:
      return False
  return False


def trip_count(ins: Instruction, comps: dict[str, list[Instruction]]
               ) -> tuple[int | None, bool]:
  """(trip count, exact) of a while loop: XLA's `known_trip_count` (exact), else `bound - init`
  of an `induction variable < constant` compare in its condition (an upper bound when the
  condition also exits early, as a decode loop's does), else (None, False)."""
  m = _TRIP.search(ins.line)
  if m:
    return int(m[1]), True
  init = _INIT.search(ins.line)
  start, step = (int(init[1]), int(init[2])) if init else (0, 1)
  cond = callees(ins).get("condition", [None])[0]
  bounds = []
  for name in reachable(comps, cond):
    consts = {i.name: i for i in comps[name] if i.op == "constant"}
    for i in comps[name]:
      if i.op == "compare" and re.search(r"direction=L[TE]", i.line) and len(i.operands) == 2:
        c = consts.get(i.operands[1])
        v = re.search(r"constant\((-?\d+)\)", c.line) if c else None
        if v:
          bounds.append(int(v[1]) + ("direction=LE" in i.line))
  if not bounds or step <= 0:
    return None, False
  return max(0, -(-(min(bounds) - start) // step)), False


def reachable(comps: dict[str, list[Instruction]], name: str) -> list[str]:
  """Names of `name` and every computation it calls, directly or not."""
  seen, todo = [], [name]
  while todo:
    n = todo.pop()
    if n in comps and n not in seen:
      seen.append(n)
      todo += [c for i in comps[n] for cs in callees(i).values() for c in cs]
  return seen


@dataclasses.dataclass
class Stats:
  """Per-device work of one run of a computation (loops multiplied by their trip counts)."""
  flops: int = 0
  collectives: dict[str, int] = dataclasses.field(
      default_factory=lambda: {k: 0 for k in COLLECTIVES})
  scoped: dict[str, int] = dataclasses.field(default_factory=dict)  # dot FLOPs per scope name
  unnamed: int = 0  # dot FLOPs without op_name metadata (named by their call site, if any)
  widened: int = 0  # collective bytes of bf16 data the backend moved in f32, not counted

  @property
  def collective_total(self) -> int:
    return sum(self.collectives.values())

  def add(self, other: Stats, times: int = 1) -> None:
    self.flops += times * other.flops
    self.unnamed += times * other.unnamed
    self.widened += times * other.widened
    for k, v in other.collectives.items():
      self.collectives[k] += times * v
    for k, v in other.scoped.items():
      self.scoped[k] = self.scoped.get(k, 0) + times * v



class Loop(NamedTuple):
  body: str
  trips: int | None  # None: unknown (counted once)
  exact: bool  # XLA knows the trip count (a scan); False: a bound (or unknown)
  stats: Stats  # one iteration of the body


class Program:
  """The parsed HLO of one compiled program.

  Args:
    hlo: `compiled.as_text()`.
    scopes: names (e.g. a `jax.named_scope`, "vision_tower") whose dots' FLOPs are also summed
      apart, in `Stats.scoped`, by the op_name metadata XLA keeps on each instruction (a dot
      inside a fusion that lost its metadata takes the fusion's).
  """

  def __init__(self, hlo: str, scopes: tuple[str, ...] = ()):
    self.comps, self.entry = parse(hlo)
    self.scopes = tuple(scopes)
    self._shapes = {c: {i.name: i.shape for i in ins} for c, ins in self.comps.items()}
    self.loops: list[Loop] = []  # every while loop met in the walk, outermost first
    self.stats = self.computation(self.entry)

  def without_loop(self, body: str) -> Stats:
    """Stats of the entry computation leaving out its while loop of body `body` (e.g. a
    sampler's program without its decode loop: the prefill)."""
    return self.computation(self.entry, skip=body)

  def _widened_test(self, ins: Instruction, comp: str) -> Callable[[str], bool]:
    """Which operands of collective `ins` are bf16 data the CPU backend widened to f32."""
    if ins.op.startswith("all-reduce"):
      if "_promoted" not in ins.line:
        return lambda o: False
      return lambda o: [t for t, _ in dims(self._shapes[comp].get(o, ""))] == ["f32"]
    return lambda o: holds_bf16(o, comp, self.comps, self._shapes)

  @functools.lru_cache(maxsize=None)  # pylint: disable=method-cache-max-size-none
  def computation(self, name: str, skip: str | None = None) -> Stats:
    """Stats of one execution of computation `name` (leaving out a while loop of body `skip`)."""
    stats = Stats(scoped={k: 0 for k in self.scopes})
    shapes = self._shapes.get(name, {})
    by_name = {i.name: i for i in self.comps.get(name, [])}
    for ins in self.comps.get(name, []):
      flops = dot_flops(ins, shapes)
      stats.flops += flops
      op_name = _op_name(ins.line)
      stats.unnamed += flops if not op_name else 0
      for scope in self.scopes:
        if flops and scope in op_name:
          stats.scoped[scope] += flops
      coll = collective_bytes(ins, shapes, self._widened_test(ins, name))
      if coll:
        stats.collectives[coll[0]] += coll[1]
        stats.widened += collective_bytes(ins, shapes)[1] - coll[1]
      called = callees(ins)
      if ins.op == "while" and called["body"][0] == skip:
        continue
      if ins.op == "while":
        trips, exact = trip_count(ins, self.comps)
        body = self.computation(called["body"][0])
        cond = self.computation(called["condition"][0])
        stats.add(body, trips if trips is not None else 1)
        stats.add(cond, (trips if trips is not None else 1) + 1)
        self.loops.append(Loop(called["body"][0], trips, exact, body))
      elif "branch_computations" in called:
        branches = [self.computation(b) for b in called["branch_computations"]]
        stats.add(max(branches, key=lambda s: (s.flops, s.collective_total)))
      else:
        for c in called.get("calls", []):
          if c == name:
            continue
          sub = self.computation(c)
          stats.add(sub)
          caller = op_name or _producer_name(ins, by_name) if sub.unnamed else ""
          if caller:  # a fusion's dots without metadata: named by the fusion (or its inputs)
            stats.unnamed -= sub.unnamed
            for scope in self.scopes:
              if scope in caller:
                stats.scoped[scope] += sub.unnamed
    return stats


def _producer_name(ins: Instruction, by_name: dict[str, Instruction], depth: int = 8) -> str:
  """The op_name of the nearest instruction feeding `ins` (breadth first over its operands,
  at most `depth` steps back) that has one; "" if none (e.g. a library fusion of the CPU
  backend keeps no metadata, nor do the copies around it)."""
  todo, seen = list(ins.operands), set()
  for _ in range(depth):
    nxt = []
    for o in todo:
      if o in seen or o not in by_name:
        continue
      seen.add(o)
      op_name = _op_name(by_name[o].line)
      if op_name:
        return op_name
      nxt += by_name[o].operands
    todo = nxt
  return ""


def _op_name(line: str) -> str:
  m = re.search(r'op_name="([^"]*)"', line)
  return m[1] if m else ""


def program_stats(hlo: str) -> Stats:
  """Per-device dot FLOPs and collective bytes of a whole compiled program."""
  return Program(hlo).stats


def entry_loops(hlo: str) -> list[tuple[str, int | None, bool]]:
  """(body name, trip count or None, exact) of each while loop of the entry computation."""
  comps, entry = parse(hlo)
  return [(callees(i)["body"][0], *trip_count(i, comps)) for i in comps[entry] if i.op == "while"]

