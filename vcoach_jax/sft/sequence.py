"""Which tokens the SFT loss covers (`config.sft.loss_on`, docs/design.md §8.8).

  assistant  the target turn only (the assistant's text and its `<|im_end|>`): the default
  sequence   the released SFT: every token of prompt and target that is not padding and not an
             image placeholder (`<|image_pad|>`, `<|video_pad|>`). The vision start/end markers,
             the system text, the frame labels and the question all carry loss; the first token
             of a row has no prefix to be predicted from and carries none.

  prompt_mask, target_mask = loss_masks(arrays, model_config, loss_on)   # host, numpy
  lp = sequence_logprobs(model, prompt, target_ids, target_mask)        # [B, P-1+N] in the jit
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vcoach_jax.model.qwen2_5_vl import ModelInputs, Qwen2_5_VL
from vcoach_jax.rl.logprobs import sequence_inputs

LOSS_ON = ("assistant", "sequence")


def prompt_loss_mask(input_ids: np.ndarray, attention_mask: np.ndarray,
                     excluded_ids: Sequence[int]) -> np.ndarray:
  """[B, P] int32: 1 on the prompt tokens the `sequence` loss predicts (left-padded rows):
  attended, not one of `excluded_ids`, not the row's first token."""
  ids = np.asarray(input_ids)
  attended = np.asarray(attention_mask).astype(bool)
  mask = attended & ~np.isin(ids, np.asarray(list(excluded_ids), ids.dtype))
  rows = np.flatnonzero(attended.any(1))
  mask[rows, attended[rows].argmax(1)] = False
  return mask.astype(np.int32)


def loss_masks(arrays: Mapping[str, Any], model_config, loss_on: str = "assistant"
               ) -> tuple[np.ndarray, np.ndarray]:
  """(prompt mask [B, P], target mask [B, N]) of a host batch (`data.pipeline.collate` arrays)
  for `loss_on`; the prompt mask is all zeros for `assistant`."""
  if loss_on not in LOSS_ON:
    raise ValueError(f"config key 'sft.loss_on' must be one of {LOSS_ON}, got {loss_on!r}")
  target = np.asarray(arrays["target_mask"], np.int32)
  ids = np.asarray(arrays["input_ids"])
  if loss_on == "assistant":
    return np.zeros(ids.shape, np.int32), target
  excluded = (model_config.image_token_id, model_config.video_token_id)
  return prompt_loss_mask(ids, arrays["attention_mask"], excluded), target


def sequence_logprobs(model: Qwen2_5_VL, prompt: ModelInputs, target_ids: jax.Array,
                      target_mask: jax.Array, chunk: int = 512) -> jax.Array:
  """[B, P-1+N] fp32 log p(token_{j+1} | tokens_<=j) over prompt + target (token j+1 of the
  concatenation), the LM head applied `chunk` positions at a time and recomputed in the
  backward pass, so the full [B, P+N, vocab] logits never exist at once."""
  ids = jnp.concatenate([prompt.input_ids, target_ids.astype(prompt.input_ids.dtype)], 1)
  h = model.hidden_states(sequence_inputs(prompt, target_ids, target_mask, 1))[:, :-1]
  labels = ids[:, 1:]
  b, length, d = h.shape
  c = max(1, min(chunk, length))
  pad = (-length) % c
  h = jnp.pad(h, ((0, 0), (0, pad), (0, 0))).reshape(b, -1, c, d).swapaxes(0, 1)
  labels = jnp.pad(labels, ((0, 0), (0, pad))).reshape(b, -1, c).swapaxes(0, 1)

  @jax.checkpoint
  def one(args):
    hc, lc = args
    logits = model.head(hc)
    picked = jnp.take_along_axis(logits, lc[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)

  out = jax.lax.map(one, (h, labels))  # [chunks, B, c]
  return out.swapaxes(0, 1).reshape(b, -1)[:, :length]
