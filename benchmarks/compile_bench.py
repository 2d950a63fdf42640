"""Compile time of the Qwen2.5-VL forward and of its gradient, decoder layers unrolled vs
`scan_layers=True` (one `lax.scan` over stacked weights), and the forward's run time both ways.

  PYTHONPATH=. USE_TF=0 python benchmarks/compile_bench.py [--layers 24] [--repeats 3]

The model is the 0.5B-shaped one of `forward_bench.py` (random weights), input one 8-frame video
plus text. Compile times are wall seconds of `jit(...).lower(...).compile()` (XLA's CPU backend
here; the ratio is what carries over to TPU/GPU compiles, which grow with depth the same way).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import forward_bench as fb  # noqa: E402  (benchmarks/ is on the path when run as a script)
from vcoach_jax import model as vm  # noqa: E402
from vcoach_jax.model import qwen2_5_vl  # noqa: E402


def model_config(layers: int, scan: bool) -> vm.ModelConfig:
  text, vision, _ = fb.SIZES["0.5b"]
  text = dict(text, num_hidden_layers=layers, mrope_section=tuple(text["mrope_section"]))
  vision = dict(vision, fullatt_block_indexes=tuple(vision["fullatt_block_indexes"]),
                window_size=112)
  return vm.ModelConfig(**text, vision=vm.VisionConfig(**vision), rope_theta=1e6,
                        image_token_id=fb.IMAGE, video_token_id=fb.VIDEO,
                        vision_start_token_id=fb.VSTART, vision_end_token_id=fb.VEND,
                        scan_layers=scan)


def measure(layers: int, scan: bool, repeats: int) -> dict[str, float]:
  cfg = model_config(layers, scan)
  model = vm.Qwen2_5_VL(cfg, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  inputs = jax.device_put(qwen2_5_vl.prepare_inputs(cfg, fb.video_inputs("0.5b")))

  def forward(state, inputs):
    return nnx.merge(graphdef, state)(inputs)[0]

  def grad(state, inputs):
    return jax.grad(lambda s: jnp.mean(forward(s, inputs)))(state)
  out = {}
  for name, fn in (("forward", forward), ("grad", grad)):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(state, inputs).compile()
    out[f"compile {name}"] = time.perf_counter() - t0
    if name == "forward":
      compiled(state, inputs).block_until_ready()
      out["run forward"] = fb.median_time(
          lambda: compiled(state, inputs).block_until_ready(), repeats)  # noqa: B023
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--layers", type=int, default=24)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  unrolled = measure(args.layers, False, args.repeats)
  scanned = measure(args.layers, True, args.repeats)
  print(f"0.5B-shaped, {args.layers} decoder layers, {jax.default_backend()}:")
  for key in unrolled:
    print(f"  {key:16s} unrolled {unrolled[key]:7.2f} s   scan {scanned[key]:7.2f} s   "
          f"unrolled / scan {unrolled[key] / scanned[key]:.2f}x")


if __name__ == "__main__":
  main()
