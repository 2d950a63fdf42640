"""Multi-host start-up: one JAX process per host, joined before any device is touched.

`launch/tpu_pod.sh` and `launch/multi_gpu.sh` pass `--distributed` (and on GPUs the coordinator
address, the process count and this process's id) to the training commands, which call
`initialize` first thing. On TPU pods JAX discovers all three by itself.
"""

from __future__ import annotations

import argparse


def add_flags(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("multi-host")
  group.add_argument("--distributed", action="store_true",
                     help="join a multi-host run (jax.distributed.initialize) before starting")
  group.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                     help="address of process 0 (GPU clusters; TPU pods find it themselves)")
  group.add_argument("--num-processes", type=int, default=None, metavar="N",
                     help="number of processes (hosts) in the run")
  group.add_argument("--process-id", type=int, default=None, metavar="I",
                     help="this process's index, 0..N-1")


def sync(name: str) -> None:
  """Waits until every process reaches the barrier `name` (a no-op in a single-process run):
  for host-side files one process writes and the others then read."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def initialize(args: argparse.Namespace) -> None:
  """Joins the run when `--distributed` is given; a no-op otherwise."""
  if not getattr(args, "distributed", False):
    if args.coordinator or args.num_processes or args.process_id is not None:
      raise ValueError("--coordinator/--num-processes/--process-id need --distributed")
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(coordinator_address=args.coordinator,
                             num_processes=args.num_processes, process_id=args.process_id)
