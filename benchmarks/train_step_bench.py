"""GSPO train-step time of vcoach_jax on CPU: the batched jitted step vs a per-prompt loop of
jitted gradients (named baseline: the reference's one-prompt-per-device granularity on one
device), vs the same loss in torch (tests/torch_rl_reference.py: transformers Qwen2.5-VL with the
same weights, sdpa attention, reference forward + GSPO/KL loss + backward + clip + AdamW, fp32),
and remat `full` vs `none`; plus a model-FLOPs-utilisation estimate.

  PYTHONPATH=. python benchmarks/train_step_bench.py [--sizes tiny,0.5b] [--layers 4]
      [--prompts 2] [--group 4] [--prompt_len 32] [--completion_len 32] [--peak_tflops 0.147]

Batch: B text prompts x G completions (the whole raw batch of one step), KL to a frozen
reference (beta 0.04), no prompted branch. MFU = 6 * N * tokens / step time / peak, with
tokens = B*G*(prompt + completion), N all text params (the tied 136M-entry embedding of the
0.5b shape included, so the estimate is generous) and `--peak_tflops` the device's peak
(default: 2 vCPUs x 2.3 GHz x 32 fp32 FLOP/cycle of one AVX-512 FMA unit = 0.147 TFLOP/s).
`0.5b` is the Qwen2.5-0.5B text backbone (hidden 896, 14 heads, vocab 151936) cut to
`--layers` decoder layers to keep a CPU run short.

Measured 2026-11-24 on a shared 2-vCPU Xeon (AVX-512, load ~4 from other jobs, so +-20%),
B=2, G=4, 32+32 tokens, median of 3:
  tiny (0.1M text params):        step 26.5 ms, per-prompt loop 32.9 ms (1.24x), remat 0.92x
  0.5b, 4 layers (195.8M params): step 9.48 s,  per-prompt loop 13.21 s (1.39x), remat 0.85x,
                                  54 tokens/s, MFU (6NT) 43% of 0.147 TFLOP/s
Torch baseline, same run, same weights (tiny: mean log-prob at step 0 equal to 6 digits):
  tiny, --torch_threads 1, median of 10: jax step 17.5 ms, torch 15.3 ms (torch / jax 0.88x)
  0.5b, 4 layers, torch's 2 threads:      jax step 8.44 s, torch 13.67 s (torch / jax 1.62x)
On this loaded machine torch's default 2 OpenMP threads make tiny ops erratic (tiny: 0.08-1 s
per step); use --torch_threads 1 for the tiny shape.
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vcoach_jax import config as config_lib
from vcoach_jax.model import ModelConfig, Qwen2_5_VL, prepare_inputs
from vcoach_jax.model.hf_checkpoint import hf_tensors
from vcoach_jax.rl import optim, train_step as ts

TESTS = pathlib.Path(__file__).resolve().parents[1] / "tests"

SIZES = {
    "tiny": dict(),
    "0.5b": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                 num_attention_heads=14, num_key_value_heads=2, mrope_section=(8, 12, 12),
                 tie_word_embeddings=True),
}


def make_batch(cfg: ModelConfig, b: int, g: int, p: int, n: int, seed: int = 0):
  """(RolloutBatch, the prompts as a processor-like dict for the torch baseline)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, min(cfg.vocab_size, 400), size=(b, p)).astype(np.int32)
  prompt = prepare_inputs(cfg, {"input_ids": ids})
  tokens = rng.integers(1, min(cfg.vocab_size, 400), size=(b * g, n)).astype(np.int32)
  mask = np.ones((b * g, n), np.int32)
  adv = rng.standard_normal(b * g).astype(np.float32)
  return ts.RolloutBatch(prompt, tokens, mask, None, adv, None), {"input_ids": ids}


def time_fn(fn, repeats: int) -> float:
  fn()  # compile / warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def torch_step_time(cfg: ModelConfig, weights: dict, config, raw: ts.RolloutBatch,
                    hf_prompt: dict, args) -> tuple[float, float]:
  """(median seconds, mean completion log-prob before the first step) of the torch step on a
  transformers model of `cfg` holding `weights` (HF names: `hf_tensors` of the JAX model before
  its first step)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, str(TESTS))
  import torch_rl_reference as tr  # pylint: disable=g-import-not-at-top
  hf_cfg = transformers.Qwen2_5_VLConfig(**cfg.to_hf())
  hf_cfg._attn_implementation = "sdpa"  # pylint: disable=protected-access
  hf_cfg.vision_config._attn_implementation = "sdpa"  # pylint: disable=protected-access
  policy = transformers.Qwen2_5_VLForConditionalGeneration(hf_cfg).eval()
  missing, unexpected = policy.load_state_dict(
      {k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
  assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
  reference = copy.deepcopy(policy).requires_grad_(False)
  o, r = config.optim, config.rl
  opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=o.lr,
                          betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
  g = args.group
  with torch.no_grad():
    lp0 = float(tr.completion_logprobs(policy, hf_prompt, raw.tokens, raw.mask, g).mean())

  def run_step():
    opt.zero_grad(set_to_none=True)
    lp = tr.completion_logprobs(policy, hf_prompt, raw.tokens, raw.mask, g)
    with torch.no_grad():
      ref_lp = tr.completion_logprobs(reference, hf_prompt, raw.tokens, raw.mask, g)
    loss, _ = tr.visioncoach_loss(lp, None, ref_lp, raw.mask, raw.advantages, eps_low=r.eps_low,
                                  eps_high=r.eps_high, beta=r.beta)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), float(o.clip_norm))
    opt.step()
  return time_fn(run_step, args.repeats), lp0


def bench(size: str, args) -> dict:
  kw = dict(SIZES[size])
  if size != "tiny":
    kw["num_hidden_layers"] = args.layers
  config = config_lib.default_config()
  out = {}
  for remat in ("none", "full"):
    cfg = ModelConfig.tiny(**kw, remat_policy=remat)
    model = Qwen2_5_VL(cfg, rngs=nnx.Rngs(0))
    # The step donates the model's buffers: copy the weights for the torch baseline first.
    weights = {k: np.array(v) for k, v in hf_tensors(model)} if remat == "none" else None
    step, state, ref = ts.setup(config, model, group_size=args.group)
    raw, hf_prompt = make_batch(cfg, args.prompts, args.group, args.prompt_len,
                                args.completion_len)
    rng = jax.random.key(0)
    holder = {"state": state}
    if remat == "none":  # the same model as the torch baseline's: the same log-probs
      out["jax_lp0"] = float(jnp.mean(ts.rollout_logprobs(step, state, raw)))

    def run_step():
      holder["state"], m = step(holder["state"], ref, raw, None, rng)
      jax.block_until_ready(m["loss"])
    out[f"step_{remat}"] = time_fn(run_step, args.repeats)
    if remat == "none":
      out["params"] = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))
                          ) - sum(x.size for x in jax.tree.leaves(nnx.state(model.visual)))
      # Baseline: one jitted gradient per prompt (G rows), summed on the host, then the update.
      per_prompt = [jax.tree.map(lambda x, i=i: x[i:i + 1] if x.ndim and x.shape[0] ==
                                 args.prompts else x, raw.prompt) for i in range(args.prompts)]
      g = args.group
      minis = [raw._replace(prompt=pp, tokens=raw.tokens[i * g:(i + 1) * g],
                            mask=raw.mask[i * g:(i + 1) * g],
                            advantages=raw.advantages[i * g:(i + 1) * g])
               for i, pp in enumerate(per_prompt)]
      minis = [m._replace(prompt=m.prompt._replace(positions=raw.prompt.positions[:, i:i + 1]))
               for i, m in enumerate(minis)]
      lc, gd = step.loss_config, step.graphdef

      def grads(s, r, b):
        ref_lp = ts.reference_logprobs(nnx.merge(gd, r), b, lc)
        return jax.grad(lambda p: ts.visioncoach_loss(nnx.merge(gd, p, s.frozen), ref_lp, b,
                                                      None, lc)[0])(s.params)
      grads_fn = jax.jit(grads)
      tx = optim.make_optimizer(config.optim)
      apply_fn = jax.jit(lambda s, gr: tx.update(gr, s.opt_state, s.params))

      def run_loop():
        s = holder["state"]
        total = None
        for mb in minis:
          gr = grads_fn(s, ref, mb)
          total = gr if total is None else jax.tree.map(jnp.add, total, gr)
        updates, _ = apply_fn(s, jax.tree.map(lambda x: x / len(minis), total))
        jax.block_until_ready(updates)
      out["per_prompt_loop"] = time_fn(run_loop, args.repeats)
      out["torch"], out["torch_lp0"] = torch_step_time(cfg, weights, config, raw, hf_prompt,
                                                         args)
      del weights
  tokens = args.prompts * args.group * (args.prompt_len + args.completion_len)
  out["tokens"] = tokens
  out["mfu"] = 6 * out["params"] * tokens / out["step_none"] / (args.peak_tflops * 1e12)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="tiny,0.5b")
  parser.add_argument("--layers", type=int, default=4, help="decoder layers of the 0.5b shape")
  parser.add_argument("--prompts", type=int, default=2)
  parser.add_argument("--group", type=int, default=4)
  parser.add_argument("--prompt_len", type=int, default=32)
  parser.add_argument("--completion_len", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--torch_threads", type=int, default=0,
                      help="torch intra-op threads; 0 = torch's default (one per core)")
  parser.add_argument("--peak_tflops", type=float, default=0.147,
                      help="device peak for the MFU estimate (2 vCPU AVX-512 fp32: 0.147)")
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  print(f"backend {jax.default_backend()}, devices {jax.device_count()}, torch threads "
        f"{torch.get_num_threads()}, B={args.prompts} "
        f"G={args.group} tokens/row={args.prompt_len}+{args.completion_len}")
  for size in args.sizes.split(","):
    r = bench(size, args)
    print(f"{size:5s} ({r['params'] / 1e6:.1f}M text params, {r['tokens']} tokens): "
          f"step {r['step_none'] * 1e3:.1f} ms | per-prompt loop {r['per_prompt_loop'] * 1e3:.1f}"
          f" ms (loop / step {r['per_prompt_loop'] / r['step_none']:.2f}x) | torch "
          f"{r['torch'] * 1e3:.1f} ms (torch / step {r['torch'] / r['step_none']:.2f}x) | "
          f"remat full {r['step_full'] * 1e3:.1f} ms "
          f"({r['step_full'] / r['step_none']:.2f}x of none) | "
          f"{r['tokens'] / r['step_none']:.0f} tok/s | MFU {100 * r['mfu']:.1f}% of "
          f"{args.peak_tflops} TFLOP/s | mean log-prob at step 0: jax {r['jax_lp0']:.6f} torch "
          f"{r['torch_lp0']:.6f}")


if __name__ == "__main__":
  main()
