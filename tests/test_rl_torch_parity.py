"""The VisionCoach loss and its gradients equal a straightforward torch implementation of the same
formulas (tests/torch_rl_reference.py, docs/design.md §8.3-8.4) on the same tiny transformers
Qwen2.5-VL, loaded into JAX with `load_hf` (fp32, loss and every parameter gradient <= 1e-4).

Raw batch: 2 left-padded video prompts x G = 3 rollouts, masks that end early on some rows,
KL to a reference with perturbed weights; prompted batch: 1 image prompt x 3 rollouts with
positive weights 1/2 on two rows. mu = 1 (old = detach(new)) and mu = 2 (stored old log-probs
shifted per row so that two rows are clipped and one hits the log-ratio clamp).
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

import qwen_testutil as qt  # noqa: E402
import torch_rl_reference as tr  # noqa: E402
from vcoach_jax import model as vm  # noqa: E402
from vcoach_jax.model.hf_checkpoint import path_to_hf  # noqa: E402
from vcoach_jax.rl import train_step as ts  # noqa: E402

G, N = 3, 7
TOL = 1e-4
LOSS = ts.LossConfig(group_size=G, eps_low=0.2, eps_high=0.2, beta=0.04, alpha=0.1)
ADV = np.asarray([1.0, -0.7, -0.3, -0.02, 0.6, -1.2], np.float32)
# mu = 2: per-row mean log-ratio vs the stored old log-probs. Row 0 (A > 0, r = 1.65) and row 1
# (A < 0, r = 0.61) are clipped; row 3 (12) is clamped to 10 before exp; rows 2, 4, 5 are not.
SHIFT = np.asarray([0.5, -0.5, 0.05, 12.0, -0.3, 0.1], np.float32)


def _video_prompts():
  rng = np.random.default_rng(11)
  grid = (2, 4, 4)
  rows = [qt.text_row(rng, 3) + qt.vision_run(qt.VIDEO, grid) + qt.text_row(rng, 4),
          qt.text_row(rng, 2) + qt.vision_run(qt.VIDEO, grid) + qt.text_row(rng, 2)]
  return qt.make_inputs(rows, videos=[grid, grid], seconds=[1.0, 0.5], seed=1)


def _image_prompt():
  rng = np.random.default_rng(12)
  grid = (1, 4, 4)
  row = qt.text_row(rng, 2) + qt.vision_run(qt.IMAGE, grid) + qt.text_row(rng, 5)
  return qt.make_inputs([row], images=[grid], seed=2)


def _completions(rows: int, lengths, seed: int):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 400, size=(rows, N)).astype(np.int32)
  mask = (np.arange(N)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
  return tokens, mask


def _old_logprobs(hf, d):
  """mu = 2: the stored old log-probs, shifted per row by SHIFT."""
  with torch.no_grad():
    lp = tr.completion_logprobs(hf, d["raw_prompt"], d["tokens"], d["mask"], G).numpy()
  return (lp - SHIFT[:, None]).astype(np.float32)


def _torch_side(hf, hf_ref, d, old):
  hf.zero_grad()
  lp = tr.completion_logprobs(hf, d["raw_prompt"], d["tokens"], d["mask"], G)
  with torch.no_grad():
    ref_lp = tr.completion_logprobs(hf_ref, d["raw_prompt"], d["tokens"], d["mask"], G)
  plp = tr.completion_logprobs(hf, d["prompted_prompt"], d["ptokens"], d["pmask"], G)
  loss, parts = tr.visioncoach_loss(
      lp, old, ref_lp, d["mask"], ADV, eps_low=LOSS.eps_low, eps_high=LOSS.eps_high,
      beta=LOSS.beta, nll=(plp, d["pmask"], d["weights"]), alpha=LOSS.alpha, num_prompts=2)
  loss.backward()
  grads = {name: p.grad.numpy().copy() for name, p in hf.named_parameters() if p.grad is not None}
  return float(loss.detach()), {k: float(v.detach()) for k, v in parts.items()}, grads


def _jax_side(jm, jref, d, old):
  """{mu: (loss, metrics, grads)} for mu = 1 and 2, from one jitted program (one compile)."""
  raw = ts.RolloutBatch(vm.prepare_inputs(jm.config, d["raw_prompt"]), d["tokens"], d["mask"],
                        old, ADV, None)
  prompted = ts.RolloutBatch(vm.prepare_inputs(jm.config, d["prompted_prompt"]), d["ptokens"],
                             d["pmask"], None, None, d["weights"])
  graphdef, params, rest = nnx.split(jm, nnx.Param, ...)
  configs = {mu: dataclasses.replace(LOSS, use_old_logprobs=mu > 1) for mu in (1, 2)}

  @jax.jit
  def both(params, ref_params, raw, prompted):
    ref_lp = ts.reference_logprobs(nnx.merge(graphdef, ref_params, rest), raw, LOSS)
    out = {}
    for mu, cfg in configs.items():
      def loss_fn(p, cfg=cfg):
        return ts.visioncoach_loss(nnx.merge(graphdef, p, rest), ref_lp, raw, prompted, cfg)
      out[mu] = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return out
  out = both(params, nnx.state(jref, nnx.Param), raw, prompted)
  return {mu: (float(loss), jax.tree.map(float, metrics), grads)
          for mu, ((loss, metrics), grads) in out.items()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  """{mu: (torch (loss, parts, grads), JAX (loss, metrics, grads))}."""
  hf = qt.hf_model(seed=0)
  hf_ref = qt.hf_model(seed=0)
  torch.manual_seed(1)
  with torch.no_grad():
    for p in hf_ref.parameters():
      p.add_(0.05 * torch.randn_like(p))
  path = tmp_path_factory.mktemp("parity")
  hf.save_pretrained(path / "policy")
  hf_ref.save_pretrained(path / "ref")
  jm, jref = vm.load_hf(path / "policy"), vm.load_hf(path / "ref")
  tokens, mask = _completions(2 * G, [N, 3, N, 5, 2, N], seed=3)
  ptokens, pmask = _completions(G, [4, N, 6], seed=4)
  d = dict(raw_prompt=_video_prompts(), tokens=tokens, mask=mask,
           prompted_prompt=_image_prompt(), ptokens=ptokens, pmask=pmask,
           weights=np.asarray([0.5, 0.0, 0.5], np.float32))
  old = _old_logprobs(hf, d)
  jax_out = _jax_side(jm, jref, d, old)
  return {mu: (_torch_side(hf, hf_ref, d, old if mu > 1 else None), jax_out[mu])
          for mu in (1, 2)}


def _hf_layout(grad: np.ndarray, transform: str | None, shape) -> np.ndarray:
  if transform == "T":
    return grad.T
  if transform == "patch":
    return grad.T.reshape(shape)
  return grad


def _compare_grads(jax_grads, torch_grads):
  compared, biggest = 0, 0.0
  for path, var in nnx.to_flat_state(jax_grads):
    name, transform = path_to_hf(tuple(path))
    want = torch_grads[name]
    got = _hf_layout(np.asarray(var.get_value()), transform, want.shape)
    assert got.shape == want.shape, name
    diff = np.abs(got - want).max()
    scale = float(np.abs(want).max())
    assert diff <= TOL and diff <= 1e-3 * scale + 1e-8, (name, diff, scale)
    compared += 1
    biggest = max(biggest, scale)
  assert compared == len(torch_grads), (compared, len(torch_grads))
  assert biggest > 0.05  # the gradients compared are not all near zero


@pytest.mark.parametrize("mu", [1, 2])
def test_loss_and_gradients_match_torch(results, mu):
  (t_loss, t_parts, t_grads), (j_loss, j_metrics, j_grads) = results[mu]
  assert abs(j_loss - t_loss) <= TOL * max(1.0, abs(t_loss)), (j_loss, t_loss)
  for key in ("gspo", "kl", "nll"):
    assert abs(j_metrics[key] - t_parts[key]) <= TOL, (key, j_metrics[key], t_parts[key])
  assert t_parts["kl"] > 1e-3 and t_parts["nll"] > 1.0  # both terms really contribute
  if mu > 1:
    assert j_metrics["clip_frac"] == pytest.approx(2 / 6)
    assert t_loss > 10.0  # the clamped row (-e^10 * A / 6) dominates, and stays finite
  else:
    assert j_metrics["ratio_mean"] == pytest.approx(1.0)
  _compare_grads(j_grads, t_grads)
