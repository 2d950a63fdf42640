"""The Qwen2.5 text decoder: GQA attention with q/k/v bias and M-RoPE, SwiGLU MLP, RMSNorm.

Einsum letters: B batch, T query tokens, S key slots, D model width, N query heads, K kv heads,
H head dim, F mlp width, L layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vcoach_jax.model import layers as lyr
from vcoach_jax.model.config import ModelConfig
from vcoach_jax.model.rope import apply_rotary
from vcoach_jax.parallel import activations as act
from vcoach_jax.parallel.activations import shard

KV = (act.BATCH, None, lyr.KV_HEADS, None)  # keys / values: every slot of a row on its device


class Attention(nnx.Module):
  """Causal GQA self-attention; q/k/v with bias, o without."""

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    d, h = cfg.hidden_size, cfg.head_dim
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.q_proj = lyr.Linear(d, cfg.num_attention_heads * h, axes=(lyr.EMBED, lyr.HEADS), bias=True, **kw)
    self.k_proj = lyr.Linear(d, cfg.num_key_value_heads * h, axes=(lyr.EMBED, lyr.KV_HEADS), bias=True, **kw)
    self.v_proj = lyr.Linear(d, cfg.num_key_value_heads * h, axes=(lyr.EMBED, lyr.KV_HEADS), bias=True, **kw)
    self.o_proj = lyr.Linear(cfg.num_attention_heads * h, d, axes=(lyr.HEADS, lyr.EMBED), bias=False, **kw)
    self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, h
    self.impl, self.chunk = cfg.attention_impl, cfg.attention_chunk

  @jax.named_scope("attention")
  def __call__(self, x, cos, sin, mask, kv=None, write_index=None):
    """x [B,T,D]; cos/sin [B,T,H]; mask [B,T,S]; kv: optional (k, v) caches [B,S,K,H] into which
    this call's keys are written at slot `write_index`. Returns (out [B,T,D], (k, v))."""
    b, t, _ = x.shape
    heads = (act.BATCH, act.LENGTH, lyr.HEADS, None)
    q = shard(self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim), heads)
    k = shard(self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim), KV)
    v = shard(self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim), KV)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    if kv is not None:
      k_cache, v_cache = kv
      k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, write_index, 0, 0))
      v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, write_index, 0, 0))
      k, v = shard(k, KV), shard(v, KV)
    out = lyr.attention(q, k.astype(q.dtype), v.astype(q.dtype), mask, self.impl, self.chunk)
    out = shard(out.reshape(b, t, -1), act.RESIDUAL[:2] + (lyr.HEADS,))
    return shard(self.o_proj(out), act.RESIDUAL), (k, v)


class MLP(nnx.Module):
  """down(silu(gate(x)) * up(x))."""

  def __init__(self, din: int, dff: int, *, axes: tuple[str, str], bias: bool, dtype, param_dtype,
               rngs: nnx.Rngs, lead: tuple[str, ...] = act.RESIDUAL[:2]):
    kw = dict(bias=bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.lead = lead  # activation axes before the width: (rows, tokens) or (patches,)
    self.hidden_axis = axes[1]
    self.gate_proj = lyr.Linear(din, dff, axes=axes, **kw)
    self.up_proj = lyr.Linear(din, dff, axes=axes, **kw)
    self.down_proj = lyr.Linear(dff, din, axes=axes[::-1], **kw)

  @jax.named_scope("feed_forward")
  def __call__(self, x):
    h = shard(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x), self.lead + (self.hidden_axis,))
    return shard(self.down_proj(h), self.lead + (None,))


class DecoderLayer(nnx.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    self.input_layernorm = lyr.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
    self.self_attn = Attention(cfg, rngs=rngs, **kw)
    self.post_attention_layernorm = lyr.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, **kw)
    self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, axes=(lyr.EMBED, lyr.MLP), bias=False,
                   rngs=rngs, **kw)

  @jax.named_scope("decoder_layer")
  def __call__(self, x, cos, sin, mask, kv=None, write_index=None):
    h, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, kv, write_index)
    x = shard(x + h, act.RESIDUAL)
    x = shard(x + self.mlp(self.post_attention_layernorm(x)), act.RESIDUAL)
    return x, kv


class TextModel(nnx.Module):
  """Token embedding, decoder layers and final norm (HF `model.*`)."""

  def __init__(self, cfg: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.embed_tokens = nnx.Param(
        (jax.random.normal(rngs.params(), (cfg.vocab_size, cfg.hidden_size)) * 0.02
         ).astype(param_dtype), logical_axes=(lyr.VOCAB, lyr.EMBED))
    layers = [DecoderLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
              for _ in range(cfg.num_hidden_layers)]
    # scan_layers: one DecoderLayer whose weights carry a leading layer axis, run by lax.scan
    # (one compiled layer body however deep the model); otherwise a list, unrolled.
    self.layers = lyr.stack_modules(layers) if cfg.scan_layers else nnx.List(layers)
    self.scan = cfg.scan_layers
    self.norm = lyr.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype,
                            param_dtype=param_dtype)
    self.dtype = dtype
    self.remat = cfg.remat_policy

  def embed(self, input_ids: jax.Array) -> jax.Array:
    """[B, T] ids -> [B, T, D]."""
    return jnp.take(self.embed_tokens[...], input_ids, axis=0).astype(self.dtype)

  @jax.named_scope("decoder")
  def __call__(self, x, cos, sin, mask, cache_k=None, cache_v=None, write_index=None):
    """Runs all layers.

    Args:
      x: [B, T, D] input embeddings.
      cos, sin: [B, T, H] rotary tables.
      mask: [B, T, S] attention mask (S = T without a cache, the cache length with one).
      cache_k, cache_v: optional [L, B, S, K, H] caches; this call's keys go to slot
        `write_index` (a scalar) of every layer.

    Returns:
      (hidden [B, T, D] after the final norm, cache_k, cache_v).
    """
    x = shard(x, act.RESIDUAL)
    cos, sin = shard(cos, act.RESIDUAL), shard(sin, act.RESIDUAL)
    mask = shard(mask, act.RESIDUAL)
    if cache_k is not None:
      cache_k, cache_v = shard(cache_k, (None,) + KV), shard(cache_v, (None,) + KV)
    if self.scan:
      x, cache_k, cache_v = self._scan(x, cos, sin, mask, cache_k, cache_v, write_index)
      return self.norm(x), cache_k, cache_v
    do_remat, policy = lyr.remat_policy(self.remat)

    def run(layer, x, kv):
      return layer(x, cos, sin, mask, kv, write_index)
    if do_remat:
      run = nnx.remat(run, policy=policy, prevent_cse=True)
    for i, layer in enumerate(self.layers):
      kv = None if cache_k is None else (cache_k[i], cache_v[i])
      x, (k, v) = run(layer, x, kv)
      if cache_k is not None:
        cache_k = cache_k.at[i].set(k)
        cache_v = cache_v.at[i].set(v)
    return self.norm(x), cache_k, cache_v

  def _scan(self, x, cos, sin, mask, cache_k, cache_v, write_index):
    """The stacked layers under `lax.scan`; the caches ride in the carry and each layer's slice
    is updated in place (`dynamic_update_index_in_dim`), never copied whole per layer."""
    graphdef, stacked = nnx.split(self.layers)
    do_remat, policy = lyr.remat_policy(self.remat)

    def body(carry, layer_state):
      x, ck, cv, i = carry
      layer = nnx.merge(graphdef, layer_state)
      kv = None if ck is None else (ck[i], cv[i])
      x, (k, v) = layer(x, cos, sin, mask, kv, write_index)
      if ck is not None:
        ck = jax.lax.dynamic_update_index_in_dim(ck, k.astype(ck.dtype), i, 0)
        cv = jax.lax.dynamic_update_index_in_dim(cv, v.astype(cv.dtype), i, 0)
      return (x, ck, cv, i + 1), None
    if do_remat:
      body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    (x, cache_k, cache_v, _), _ = jax.lax.scan(
        body, (x, cache_k, cache_v, jnp.zeros((), jnp.int32)), stacked)
    return x, cache_k, cache_v
