"""`vcoach plan`: the ahead-of-time memory plan of the train step (docs/design.md §11)."""

from __future__ import annotations

import argparse
import math

from vcoach_jax import config as config_lib

HELP = ("compile the train step ahead of time on fake devices and print per-device memory; "
        "with --devices, the scaling report")
DESCRIPTION = """\
Will a run fit? Compiles the VisionCoach train step (GSPO on the raw rollouts + KL to the
reference + the prompted NLL branch, AdamW, fp32 master weights) ahead of time for a mesh of
fake CPU devices, without ever allocating the weights: the model, the train state and the
batches are shapes only. Prints the per-device bytes XLA's memory analysis reports (arguments:
train state + reference + batch; temporaries: activations, gradients, optimizer update;
outputs; the aliased part of the outputs reuses the donated train state), their peak estimate
(arguments + temporaries + outputs - aliased) and a verdict for 95 GiB (TPU v5p HBM per chip)
and 80 GiB (H100) per device, naming the slice the mesh is (one JAX device per chip: a TPU
v5p-8 slice has 4 chips, so a mesh of 8 devices is a v5p-16 or 8 H100s).

With --devices N, also the scaling report: the train step and the sampler's program (prefill of
data.batch_size prompts, then sampling.num_samples x sampling.max_new_tokens decode steps) are
compiled for the N-device mesh and for 1 device, and their optimized HLO is read: per-device
dot FLOPs against the 1-device program / N, collective bytes per device by kind (also as a
multiple of the fp32 parameter bytes), bytes all-gathered per decode step, peak memory per
device. Loop bodies (scanned layers, attention blocks, micro-batches) count by their trip
counts; XLA's own cost analysis counts a loop body once.

The batch is a full one of the config: data.batch_size prompts of --prompt-length tokens
(images filling data.max_patches, the rest text), sampling.num_samples completions of
sampling.max_new_tokens tokens each, split in optim.grad_accum micro-batches. On CPU
dot_product_attention materialises every score matrix; model.attention_impl=chunked bounds
them to one block of queries, and model.scan_layers makes remat bound the activations (in
unrolled code XLA keeps them alive). configs/visioncoach_7b.py (both on, grad_accum 4, each
micro-batch running its own prompts: optim.prompt_once False) at fsdp=8 (8 chips: v5p-16 or
8 H100s): 114 GiB per device (it does not fit 95 GiB; 133 GiB with optim.prompt_once, 296
GiB with grad_accum 8), compiled in a few minutes on a 2-core machine; the same step unrolled
with full score matrices reported 3,369 GiB of temporaries and took 10 minutes to compile.

examples:
  vcoach plan --config configs/visioncoach_7b.py --mesh fsdp=8
  vcoach plan --config configs/visioncoach_7b.py:runlocal --devices 8 --mesh fsdp=8 \
      --mesh data=2,fsdp=4
  vcoach plan --config configs/visioncoach_7b.py --mesh data=2,fsdp=4 --prompt-length 4096
  vcoach plan --set model.preset=qwen2_5_vl_3b --dtype bfloat16 --remat full --no-prompted
"""


def parse_mesh(text: str) -> dict[str, int]:
  """`fsdp=8` or `data=2,fsdp=4,tensor=2` -> {axis: size} (every size explicit)."""
  from vcoach_jax.parallel.rules import MESH_AXES  # pylint: disable=g-import-not-at-top
  out: dict[str, int] = {}
  for part in filter(None, (p.strip() for p in text.split(","))):
    name, sep, size = part.partition("=")
    if not sep or name not in MESH_AXES or not size.isdigit() or int(size) < 1:
      raise ValueError(f"--mesh {text!r}: expected AXIS=SIZE[,AXIS=SIZE...] with AXIS in "
                       f"{MESH_AXES} and SIZE >= 1, got {part!r}")
    out[name] = int(size)
  if not out:
    raise ValueError(f"--mesh {text!r}: name at least one axis, e.g. fsdp=8")
  return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--mesh", default=None, action="append", metavar="AXIS=N[,AXIS=N]",
                      help="mesh of fake devices, axes data/fsdp/tensor (default: fsdp=8, or "
                           "fsdp=N with --devices N); with --devices, repeatable (each mesh "
                           "of N devices, one report each, the 1-device programs compiled once)")
  parser.add_argument("--devices", type=int, default=None, metavar="N",
                      help="print the scaling report for N simulated devices against 1")
  parser.add_argument("--prompt-length", type=int, default=None, metavar="T",
                      help="prompt tokens per row (default: the smallest data.prompt_buckets "
                           "entry holding data.max_patches image tokens plus text)")
  parser.add_argument("--prompted", action=argparse.BooleanOptionalAction, default=True,
                      help="include the prompted (self-distillation NLL) branch (default: yes)")
  parser.add_argument("--remat", default=None, metavar="POLICY",
                      help="override model.remat_policy (its choices are checked with the config)")
  parser.add_argument("--dtype", default=None, metavar="DTYPE",
                      help="override model.dtype, float32 or bfloat16 (params and compute; "
                           "masters stay fp32)")
  config_lib.add_config_flags(parser)


def run(args: argparse.Namespace) -> int:
  if args.devices is not None and args.devices < 1:
    raise ValueError(f"--devices must be >= 1, got {args.devices}")
  texts = args.mesh or [f"fsdp={args.devices or 8}"]
  if len(texts) > 1 and args.devices is None:
    raise ValueError("several --mesh need --devices N (the scaling report of each)")
  shapes = [parse_mesh(t) for t in texts]
  n = math.prod(shapes[0].values())
  for text, shape in zip(texts, shapes):
    if math.prod(shape.values()) != (args.devices or n):
      raise ValueError(f"--mesh {text} has {math.prod(shape.values())} devices, --devices "
                       f"says {args.devices}")
  overrides = list(args.overrides)
  if args.remat:
    overrides.append(f"model.remat_policy={args.remat}")
  if args.dtype:
    overrides.append(f"model.dtype={args.dtype}")
  config = config_lib.load(args.config, overrides)
  # Fake devices: must be set before JAX starts a backend (this is the process entry point).
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", n)
  from vcoach_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.rl import plan  # pylint: disable=g-import-not-at-top
  devices = jax.devices("cpu")
  if len(devices) != n:
    raise ValueError(f"--mesh {texts[0]} needs {n} devices but JAX started with "
                     f"{len(devices)} (run `vcoach plan` in a fresh process)")
  cfg = plan.model_config(config)
  length = args.prompt_length or plan.default_prompt_length(config, cfg)
  if length < 1:
    raise ValueError(f"--prompt-length must be >= 1, got {length}")
  print(f"model             {config.model.checkpoint or config.model.preset} "
        f"({config.model.dtype}, remat {config.model.remat_policy}, "
        f"attention {config.model.attention_impl})")
  print(f"batch             {config.data.batch_size} prompts x {length} tokens "
        f"(max_patches {config.data.max_patches}), G={config.sampling.num_samples} x "
        f"{config.sampling.max_new_tokens} new tokens, grad_accum {config.optim.grad_accum}"
        + ("" if config.optim.grad_accum == 1 else
           " (prompts " + ("once per step" if config.optim.get("prompt_once", True)
                           else "per micro-batch") + ")")
        + f", prompted branch {'on' if args.prompted else 'off'}", flush=True)
  measure = lambda mesh, step=None: _measure(  # noqa: E731
      plan, config, mesh, cfg, length, args.prompted, step)
  reports = []
  for shape in shapes:
    print(f"compiling the step ahead of time ({_mesh_text(shape)}) ...", flush=True)
    mesh = mesh_lib.make_mesh(shape, devices)
    compiled, num_params = _compile_step(plan, config, mesh, cfg, length, args.prompted)
    print(plan.format_plan(plan.memory_plan_of(compiled, num_params), shape), flush=True)
    if args.devices is not None:
      reports.append((shape, measure(mesh, compiled)))
  if args.devices is None:
    return 0
  from vcoach_jax.parallel import scaling  # pylint: disable=g-import-not-at-top
  one = measure(mesh_lib.make_mesh({"fsdp": 1}, devices[:1]))
  for shape, many in reports:
    print()
    print(scaling.format_report(many, one, n, shape, num_params,
                                ", ".join(plan.slice_names(n).values())))
  return 0


def _mesh_text(shape) -> str:
  return ",".join(f"{k}={v}" for k, v in shape.items())


def _compile_step(plan, config, mesh, cfg, length: int, prompted: bool):
  """(the train step compiled for `mesh`, its parameter count)."""
  step, state, ref = plan.abstract_setup(config, mesh)
  raw, hard = plan.abstract_batches(config, cfg, length, prompted=prompted)
  return plan.compile_step(step, state, ref, raw, hard), plan.num_params(ref)


def _measure(plan, config, mesh, cfg, length: int, prompted: bool, compiled=None):
  """{program: scaling.Measured} of the train step (`compiled`, else compiled here) and the
  sampler compiled for `mesh`."""
  from vcoach_jax.parallel import scaling  # pylint: disable=g-import-not-at-top
  print(f"compiling the sampler{'' if compiled else ' and the step'} for {mesh.size} device(s) "
        f"({_mesh_text(dict(mesh.shape))}) ...", flush=True)
  if compiled is None:
    compiled, _ = _compile_step(plan, config, mesh, cfg, length, prompted)
  out = scaling.train_step(compiled.as_text(), plan.memory_analysis(compiled).peak)
  sampler = plan.compile_sampler(config, mesh, cfg, length)
  out.update(scaling.sampler(sampler.as_text(), plan.memory_analysis(sampler).peak))
  return out
