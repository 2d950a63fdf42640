"""A straightforward torch implementation of the VisionCoach loss (docs/design.md §8.3-8.4), written
from the formulas and importing nothing from vcoach_jax: the reference of
tests/test_rl_torch_parity.py and the torch baseline of benchmarks/train_step_bench.py.

  lp = completion_logprobs(hf_model, prompt, tokens, mask, G)     # [B*G, N], differentiable
  loss, parts = visioncoach_loss(lp, old, ref_lp, mask, adv, eps_low=.., eps_high=.., beta=..,
                                 nll=(prompted_lp, prompted_mask, weights), alpha=..)

`prompt` is a processor-like dict (numpy) of B left-padded prompts; every prompt row is repeated
G times, with its own images / videos, and the completion appended (the tail after a row's end
token is masked out of attention).
"""

from __future__ import annotations

import numpy as np
import torch

LOG_RATIO_MAX = 10.0
KL_LOG_CLAMP = 10.0


def _vision_items(ids: np.ndarray, grids: np.ndarray, token: int, merge: int) -> list[list[int]]:
  """Per prompt row, the indices of the images (or videos) its `token` runs belong to."""
  sizes = grids.prod(-1) // merge
  out, g = [], 0
  for row in ids:
    need, items = int((row == token).sum()), []
    while need > 0:
      items.append(g)
      need -= int(sizes[g])
      g += 1
    out.append(items)
  return out


def repeat_prompt(prompt: dict, group_size: int, merge: int, image_token: int,
                  video_token: int) -> dict:
  """[B] prompt dict -> [B*G] torch kwargs (rows b*G .. b*G+G-1 copy prompt b and its vision)."""
  ids = np.asarray(prompt["input_ids"])
  mask = np.asarray(prompt.get("attention_mask", np.ones_like(ids)))
  rows = np.repeat(np.arange(ids.shape[0]), group_size)
  out = {"input_ids": torch.from_numpy(ids[rows].astype(np.int64)),
         "attention_mask": torch.from_numpy(mask[rows].astype(np.int64))}
  for px_key, grid_key, token in (("pixel_values", "image_grid_thw", image_token),
                                  ("pixel_values_videos", "video_grid_thw", video_token)):
    if px_key not in prompt:
      continue
    grids, px = np.asarray(prompt[grid_key]), np.asarray(prompt[px_key])
    starts = np.concatenate([[0], np.cumsum(grids.prod(-1))])
    per_row = _vision_items(ids, grids, token, merge)
    order = [i for r in rows for i in per_row[r]]
    out[grid_key] = torch.from_numpy(grids[order].astype(np.int64))
    out[px_key] = torch.from_numpy(np.concatenate([px[starts[i]:starts[i + 1]] for i in order]))
    if token == video_token and "second_per_grid_ts" in prompt:
      out["second_per_grid_ts"] = [float(prompt["second_per_grid_ts"][i]) for i in order]
  return out


def completion_logprobs(model, prompt: dict, tokens, mask, group_size: int) -> torch.Tensor:
  """[B*G, N] fp32 log p(token_t | prompt, tokens_<t) under a transformers Qwen2.5-VL model;
  the LM head runs on the completion positions only."""
  cfg = model.config
  kw = repeat_prompt(prompt, group_size, cfg.vision_config.spatial_merge_size ** 2,
                     cfg.image_token_id, cfg.video_token_id)
  tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.int64)
  mask = torch.as_tensor(np.asarray(mask), dtype=torch.int64)
  t, n = kw["input_ids"].shape[1], tokens.shape[1]
  kw["input_ids"] = torch.cat([kw["input_ids"], tokens], 1)
  kw["attention_mask"] = torch.cat([kw["attention_mask"], mask], 1)
  head = model.lm_head
  model.lm_head = torch.nn.Identity()
  try:
    hidden = model(**kw, use_cache=False).logits  # the final-norm hidden states
  finally:
    model.lm_head = head
  logits = head(hidden[:, t - 1:t + n - 1]).float()
  return torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
  m = mask.float()
  return torch.where(m > 0, x, torch.zeros_like(x)).sum(-1) / m.sum(-1).clamp(min=1.0)


def gspo_kl_loss(lp, old, ref_lp, mask, adv, *, eps_low: float, eps_high: float, beta: float):
  """Per token: -min(r A, clip(r) A) + beta * k3 KL; token mean per row, mean over rows.

  r = exp(min(masked mean of lp - old, 10)); `old` None: detach(lp) (mu = 1)."""
  old = lp.detach() if old is None else torch.as_tensor(np.asarray(old), dtype=torch.float32)
  adv = torch.as_tensor(np.asarray(adv), dtype=torch.float32)
  ratio = torch.exp(torch.clamp(masked_mean(lp - old, mask), max=LOG_RATIO_MAX))
  objective = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
  per_token = -objective[:, None].expand_as(lp)
  kl = torch.zeros_like(lp)
  if ref_lp is not None and beta:
    x = torch.clamp(ref_lp - lp, -KL_LOG_CLAMP, KL_LOG_CLAMP)
    kl = torch.exp(x) - x - 1
    per_token = per_token + beta * kl
  parts = {"gspo": (-objective).mean(), "kl": masked_mean(kl, mask).mean()}
  return masked_mean(per_token, mask).mean(), parts


def nll_loss(lp, mask, weights, num_prompts: int) -> torch.Tensor:
  """sum over positive rows of weight * masked-mean NLL, over the number of raw prompts."""
  w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
  seq = -masked_mean(lp, mask)
  return torch.where(w > 0, w * seq, torch.zeros_like(seq)).sum() / num_prompts


def visioncoach_loss(lp, old, ref_lp, mask, adv, *, eps_low: float, eps_high: float,
                     beta: float, nll=None, alpha: float = 0.0, num_prompts: int = 1):
  """L = GSPO + beta KL (raw rollouts) + alpha * NLL(prompted positives); `nll` is
  (prompted lp, prompted mask, weights) or None."""
  mask = torch.as_tensor(np.asarray(mask))
  loss, parts = gspo_kl_loss(lp, old, ref_lp, mask, adv, eps_low=eps_low, eps_high=eps_high,
                             beta=beta)
  if nll is not None:
    plp, pmask, weights = nll
    parts["nll"] = nll_loss(plp, torch.as_tensor(np.asarray(pmask)), weights, num_prompts)
    loss = loss + alpha * parts["nll"]
  return loss, parts
