"""Building blocks shared by the text decoder and the vision tower.

Parameters carry logical axis names in their `logical_axes` metadata; `vcoach_jax.parallel.mesh`
maps them to mesh axes. Linear kernels are stored `[in, out]` (the transpose of torch's layout).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# Logical axis names (weights).
EMBED = "embed"  # text model width
MLP = "mlp"  # text MLP width
HEADS = "heads"  # query heads x head_dim (flattened)
KV_HEADS = "kv_heads"  # kv heads x head_dim (flattened)
VOCAB = "vocab"
NORM = "norm"  # norm scales: replicated
VIT_EMBED = "vit_embed"
VIT_MLP = "vit_mlp"
VIT_HEADS = "vit_heads"
PATCH = "patch"  # flattened input patch
LORA_RANK = "lora_rank"
LAYERS = "layers"  # leading axis of stacked (scanned) decoder-layer / vision-block weights

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


class Linear(nnx.Module):
  """y = x @ kernel (+ bias), with an optional LoRA delta attached by `vcoach_jax.model.lora`."""

  def __init__(self, din: int, dout: int, *, axes: tuple[str, str], bias: bool, dtype,
               param_dtype, rngs: nnx.Rngs):
    self.kernel = nnx.Param(
        (jax.random.normal(rngs.params(), (din, dout)) * 0.02).astype(param_dtype),
        logical_axes=axes)
    self.bias = (nnx.Param(jnp.zeros((dout,), param_dtype), logical_axes=(axes[1],))
                 if bias else None)
    self.lora = nnx.data(None)  # a lora.LoRAAdapter, when attached
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype)
    y = jnp.einsum("...i,io->...o", x, self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    if self.lora is not None:
      y = y + self.lora(x)
    return y


class RMSNorm(nnx.Module):
  """x / rms(x) * scale, computed in fp32 and cast back to the compute dtype before scaling."""

  def __init__(self, dim: int, *, eps: float, dtype, param_dtype):
    self.weight = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=(NORM,))
    self.eps = eps
    self.dtype = dtype

  @jax.named_scope("rms_norm")
  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.weight[...].astype(self.dtype) * x32.astype(self.dtype)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, impl: str = "xla",
              chunk: int = 512):
  """Grouped-query attention by the implementation `impl` (a name of `ATTENTION`).

  Args:
    q: [B, T, N, H] queries.
    k: [B, S, K, H] keys (N a multiple of K).
    v: [B, S, K, H] values.
    mask: [B, T, S] bool, True where a query may attend a key. A row with no True key gives a
      finite (meaningless) output, never NaN.
    impl: "xla" (plain einsum + fp32 softmax), "chunked" (the same in blocks of `chunk`
      queries, see `chunked_attention`), "dot_product_attention" or "cudnn"
      (`jax.nn.dot_product_attention`).
    chunk: query block of "chunked".

  Returns:
    [B, T, N, H] in q's dtype.
  """
  if impl not in ATTENTION:
    raise ValueError(f"config key 'model.attention_impl' must be one of {tuple(ATTENTION)}, got "
                     f"{impl!r}")
  return ATTENTION[impl](q, k, v, mask, chunk)


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                  chunk: int = 0) -> jax.Array:
  """Plain attention: einsum scores, fp32 softmax over all keys (`chunk` unused)."""
  del chunk
  b, t, n, h = q.shape
  kv = k.shape[2]
  q = q.reshape(b, t, kv, n // kv, h)
  scores = jnp.einsum("btkgh,bskh->bkgts", q, k, preferred_element_type=jnp.float32)
  scores = scores * (h ** -0.5)
  scores = jnp.where(mask[:, None, None], scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
  return out.reshape(b, t, n, h)


def _jax_nn_attention(implementation: str | None):
  """`jax.nn.dot_product_attention` with `implementation` (None: XLA picks)."""
  def fn(q, k, v, mask, chunk=0):
    del chunk
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None],
                                        implementation=implementation)
  return fn


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                      chunk: int) -> jax.Array:
  """`attention` over blocks of `chunk` queries (`lax.map`), each block rematerialised in the
  backward pass, so scores never exist for more than one block: memory O(B x N x chunk x S)
  instead of O(B x N x T x S), where no fused kernel exists (CPU, and XLA's plan of a run).
  Exactly the plain result: softmax runs over all keys of a query, and blocks are independent."""
  b, t, n, h = q.shape
  if t <= chunk:
    return xla_attention(q, k, v, mask)
  pad = -t % chunk
  blocks = (t + pad) // chunk
  qb = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, blocks, chunk, n, h)
  mb = jnp.pad(mask, ((0, 0), (0, pad), (0, 0))).reshape(b, blocks, chunk, mask.shape[-1])

  @jax.checkpoint
  def block(args):
    q_blk, m_blk = args
    return xla_attention(q_blk, k, v, m_blk)
  out = jax.lax.map(block, (qb.swapaxes(0, 1), mb.swapaxes(0, 1)))  # [blocks, B, chunk, N, H]
  return out.swapaxes(0, 1).reshape(b, t + pad, n, h)[:, :t]


# The attention implementations (`config.model.attention_impl`): name -> fn(q, k, v, mask, chunk).
ATTENTION = {
    "xla": xla_attention,  # CPU, tests
    "chunked": chunked_attention,  # xla in query blocks: O(block x keys) memory
    "dot_product_attention": _jax_nn_attention(None),
    "cudnn": _jax_nn_attention("cudnn"),
}


def stack_modules(modules: list[nnx.Module]) -> nnx.Module:
  """One module of the same type whose every variable is the stack of the `modules`' (a new
  leading axis, named `LAYERS` in the logical axes): what `jax.lax.scan` runs over."""
  graphdef, _ = nnx.split(modules[0])
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[nnx.state(m) for m in modules])
  for _, var in nnx.to_flat_state(stacked):
    axes = var.get_metadata().get("logical_axes")
    if axes is not None:
      var.set_metadata("logical_axes", (LAYERS,) + tuple(axes))
  return nnx.merge(graphdef, stacked)


# State path prefixes of the layer lists that `scan_layers` stacks: decoder layers, vision blocks.
STACKED_PREFIXES = (("model", "layers"), ("visual", "blocks"))


def is_stacked_layer_path(path: tuple) -> bool:
  """Whether a state path is inside stacked layers (`model.layers.<name>...`,
  `visual.blocks.<name>...`, where an unrolled model has `<prefix>.<index>...`)."""
  return (len(path) > 2 and tuple(path[:2]) in STACKED_PREFIXES
          and not isinstance(path[2], int))


# Remat policies (`config.model.remat_policy`): name -> (remat at all, jax checkpoint policy).
REMAT_POLICIES = {
    "none": (False, None),
    "full": (True, None),
    "dots": (True, jax.checkpoint_policies.checkpoint_dots),
    "dots_no_batch": (True, jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims),
}


def remat_policy(name: str):
  """(do_remat, jax checkpoint policy) of a config remat policy name."""
  if name not in REMAT_POLICIES:
    raise ValueError(f"config key 'model.remat_policy' must be one of {tuple(REMAT_POLICIES)}, "
                     f"got {name!r}")
  return REMAT_POLICIES[name]
