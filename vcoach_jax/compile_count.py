"""Counts the XLA programs a piece of code compiles (or loads from the persistent cache).

  with compile_count.Counter() as c:
    run_steps()
  c.count, c.seconds, c.names      # programs, wall seconds spent compiling, their jit names

Listens to JAX's backend-compile event (`jax.monitoring`), which fires once per program handed
to XLA, whatever jitted it: a run's RL steps, the sampler, and the small eager ops that compile
a program the first time they see a shape.
"""

from __future__ import annotations

import collections

from jax import monitoring

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class Counter:
  """A context manager recording every backend compilation while it is open."""

  def __init__(self):
    self.events: list[tuple[str, float]] = []  # (jit name, seconds) in order

  def _listen(self, event: str, seconds: float, **kwargs) -> None:
    if event == BACKEND_COMPILE_EVENT:
      self.events.append((str(kwargs.get("fun_name", "?")), float(seconds)))

  def __enter__(self) -> "Counter":
    monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc) -> None:
    monitoring.unregister_event_duration_listener(self._listen)

  @property
  def count(self) -> int:
    return len(self.events)

  @property
  def seconds(self) -> float:
    return sum(s for _, s in self.events)

  @property
  def names(self) -> collections.Counter:
    return collections.Counter(n for n, _ in self.events)

  def since(self, mark: int) -> list[tuple[str, float]]:
    """The compilations after the first `mark` ones (`mark = counter.count` taken earlier)."""
    return self.events[mark:]
