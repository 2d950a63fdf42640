"""`vcoach plan`: the ahead-of-time memory plan of the train step (docs/design.md §11)."""

from __future__ import annotations

import argparse
import math

from vcoach_jax import config as config_lib

HELP = "compile the train step ahead of time on fake devices and print per-device memory"
DESCRIPTION = """\
Will a run fit? Compiles the VisionCoach train step (GSPO on the raw rollouts + KL to the
reference + the prompted NLL branch, AdamW, fp32 master weights) ahead of time for a mesh of
fake CPU devices, without ever allocating the weights: the model, the train state and the
batches are shapes only. Prints the per-device bytes XLA's memory analysis reports (arguments:
train state + reference + batch; temporaries: activations, gradients, optimizer update;
outputs; the aliased part of the outputs reuses the donated train state), their peak estimate
(arguments + temporaries + outputs - aliased) and a verdict for 95 GiB (TPU v5p HBM per chip)
and 80 GiB (H100) per device.

The batch is a full one of the config: data.batch_size prompts of --prompt-length tokens
(images filling data.max_patches, the rest text), sampling.num_samples completions of
sampling.max_new_tokens tokens each, split in optim.grad_accum micro-batches. On CPU
dot_product_attention materialises every score matrix; model.attention_impl=chunked bounds
them to one block of queries, and model.scan_layers makes remat bound the activations (in
unrolled code XLA keeps them alive). configs/visioncoach_7b.py (both on, grad_accum 4) at
fsdp=8: 77 GiB per device, compiled in about 20 s on a 2-core machine; the same step unrolled
with full score matrices reported 3,369 GiB of temporaries and took 10 minutes to compile.

examples:
  vcoach plan --config configs/visioncoach_7b.py --mesh fsdp=8
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
  parser.add_argument("--mesh", default="fsdp=8", metavar="AXIS=N[,AXIS=N]",
                      help="mesh of fake devices, axes data/fsdp/tensor (default: fsdp=8)")
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
  shape = parse_mesh(args.mesh)
  n = math.prod(shape.values())
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
    raise ValueError(f"--mesh {args.mesh} needs {n} devices but JAX started with "
                     f"{len(devices)} (run `vcoach plan` in a fresh process)")
  mesh = mesh_lib.make_mesh(shape, devices)
  cfg = plan.model_config(config)
  length = args.prompt_length or plan.default_prompt_length(config, cfg)
  if length < 1:
    raise ValueError(f"--prompt-length must be >= 1, got {length}")
  print(f"model             {config.model.checkpoint or config.model.preset} "
        f"({config.model.dtype}, remat {config.model.remat_policy}, "
        f"attention {config.model.attention_impl})")
  print(f"batch             {config.data.batch_size} prompts x {length} tokens "
        f"(max_patches {config.data.max_patches}), G={config.sampling.num_samples} x "
        f"{config.sampling.max_new_tokens} new tokens, grad_accum {config.optim.grad_accum}, "
        f"prompted branch {'on' if args.prompted else 'off'}", flush=True)
  step, state, ref = plan.abstract_setup(config, mesh)
  raw, prompted = plan.abstract_batches(config, cfg, length, prompted=args.prompted)
  print("compiling the step ahead of time ...", flush=True)
  print(plan.format_plan(plan.memory_plan(step, state, ref, raw, prompted), shape))
  return 0
