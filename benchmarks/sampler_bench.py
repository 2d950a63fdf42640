"""Rollout throughput of vcoach_jax's sampler vs transformers `generate` on the same random weights
and the same prompts (each with an 8-frame video), sampling with the reference settings
(temperature 1, top-p 0.95, top-k 50) for exactly 128 new tokens per row.

  PYTHONPATH=. USE_TF=0 python benchmarks/sampler_bench.py [--sizes tiny,0.5b] [--batches 8,32]
      [--new-tokens 128] [--repeats 2] [--skip 0.5b:32]

Prints, per (size, batch), generated tokens/s of both, and the speed-up (target >= 3x on CPU).
The jax time is the median of `--repeats` calls after one compiling call; transformers runs once
after a 2-token warm-up (eager torch, fp32, KV cache, its own threads). Model sizes and prompts are forward_bench's.

Measured on a shared 2-core CPU under a load of ~4.5 (torch 2 threads; 0.5b:32 skipped):
  tiny b=8    transformers  25.1 tok/s   vcoach_jax 464.6 tok/s   18.5x
  tiny b=32   transformers  58.8 tok/s   vcoach_jax 594.3 tok/s   10.1x
  0.5b b=8    transformers   1.9 tok/s   vcoach_jax   6.0 tok/s    3.2x  (290-token prompts)
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("USE_TF", "0")
sys.path.insert(0, str(pathlib.Path(__file__).parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import forward_bench  # noqa: E402  (sizes, random HF models, video prompts)
from vcoach_jax import model as vm  # noqa: E402
from vcoach_jax.sampling import Sampler, SamplingConfig  # noqa: E402

PAD = 0


def batch_inputs(size: str, batch: int):
  """`batch` prompts, each forward_bench's video prompt with its own random text and pixels."""
  rows = []
  for i in range(batch):
    one = forward_bench.video_inputs(size)
    rng = np.random.default_rng(i + 1)
    ids = one["input_ids"].copy()
    text = ~np.isin(ids, [forward_bench.VIDEO, forward_bench.VSTART, forward_bench.VEND])
    ids[text] = rng.integers(0, 150000, int(text.sum()))
    one["input_ids"] = ids
    one["pixel_values_videos"] = rng.standard_normal(one["pixel_values_videos"].shape,
                                                     dtype=np.float32)
    rows.append(one)
  cat = lambda k: np.concatenate([r[k] for r in rows])  # noqa: E731
  return {k: cat(k) for k in rows[0]}


def bench(size: str, batch: int, new_tokens: int, repeats: int, hf=None, jm=None):
  inputs = batch_inputs(size, batch)
  never = hf.config.vocab_size  # an end id no row can produce: every row runs to the limit
  cfg = SamplingConfig(temperature=1.0, top_p=0.95, top_k=50, max_new_tokens=new_tokens)
  sampler = Sampler(jm, None, end_ids=[never], pad_id=PAD)
  prepared = vm.prepare_inputs(jm.config, inputs)
  t0 = time.perf_counter()
  out = sampler.generate(prepared, cfg, jax.random.key(0))
  t_compile = time.perf_counter() - t0
  assert out.mask.all() and sampler.last_num_steps == new_tokens
  keys = iter(range(1, repeats + 1))
  t_jax = forward_bench.median_time(
      lambda: sampler.generate(prepared, cfg, jax.random.key(next(keys))), repeats)

  kw = {k: torch.from_numpy(v) for k, v in inputs.items()}
  kw["second_per_grid_ts"] = kw["second_per_grid_ts"].tolist()
  torch.manual_seed(0)
  with torch.no_grad():  # warm-up (lazy initialisation), not timed
    hf.generate(**kw, do_sample=True, max_new_tokens=2, pad_token_id=PAD)
  t0 = time.perf_counter()
  with torch.no_grad():
    seqs = hf.generate(**kw, do_sample=True, temperature=1.0, top_p=0.95, top_k=50,
                       max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=PAD)
  t_torch = time.perf_counter() - t0
  assert seqs.shape[1] - inputs["input_ids"].shape[1] == new_tokens
  n = batch * new_tokens
  print(f"[{size} b={batch}] prompt {inputs['input_ids'].shape[1]} tokens, {new_tokens} new:  "
        f"transformers {n / t_torch:8.1f} tok/s ({t_torch:6.1f} s)   vcoach_jax "
        f"{n / t_jax:8.1f} tok/s ({t_jax:6.1f} s; first call {t_compile:.1f} s)   "
        f"speed-up {t_torch / t_jax:.2f}x", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="tiny,0.5b")
  parser.add_argument("--batches", default="8,32")
  parser.add_argument("--new-tokens", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--skip", default="0.5b:32",
                      help="size:batch pairs to leave out (comma-separated; '' runs all)")
  args = parser.parse_args()
  skip = {tuple(s.split(":")) for s in args.skip.split(",") if s}
  print(f"{jax.default_backend()}, torch threads {torch.get_num_threads()}", flush=True)
  for size in args.sizes.split(","):
    hf = forward_bench.hf_model(size)
    with tempfile.TemporaryDirectory() as d:
      hf.save_pretrained(d)
      jm = vm.load_hf(d)
    for batch in args.batches.split(","):
      if (size, batch) in skip:
        continue
      bench(size, int(batch), args.new_tokens, args.repeats, hf, jm)


if __name__ == "__main__":
  main()
