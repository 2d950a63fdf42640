"""The shared pieces of a jitted, sharded optimizer step (RL, SFT and the selector use them).

  graphdef, state = init_train_state(model, tx, freeze_vision=..., mesh=mesh)
  update = update_fn(graphdef, loss_fn, tx, schedule, grad_accum=k)
  jitted = jax.jit(update, donate_argnums=0, in_shardings=..., out_shardings=...)
  state, metrics = jitted(state, aux, split_rows(batch, k) if k > 1 else batch, rng)

`loss_fn(model, extra, batch) -> (loss, metrics)` is pure; `extra = prepare_fn(aux, batch)` is
computed outside the differentiated function (the reference policy's log-probs from `aux`, the
reference params), so no gradient is traced through it.

The update: the gradients of `grad_accum` micro-batches of consecutive rows (`split_rows`, on
the host) summed with `lax.scan` (weighted so the update is the whole batch's), global norm,
AdamW, and the non-finite guard: a non-finite loss or gradient norm leaves params and optimizer
state unchanged and sets `metrics["skipped"] = 1`. Shardings are stated: params and optimizer
moments by their logical axes (`parallel.mesh.state_shardings`), rows of the batch over the `batch` rule
(data x fsdp; `rows_sharding`, `inputs_shardings`), vision patches and scalars replicated.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vcoach_jax.model.batching import pad_segments, split_inputs
from vcoach_jax.model.qwen2_5_vl import ModelInputs
from vcoach_jax.model.vision import Segments
from vcoach_jax.parallel import mesh as mesh_lib
from vcoach_jax.parallel.rules import DEFAULT_RULES

BATCH = "batch"  # logical axis of batch rows (parallel/rules.py)
VISION_FIELDS = ("pixels", "rotary_ids", "windows", "frames", "vision_slots")
SUM_METRICS = ("num_positives", "nll_nonfinite", "num_tokens")  # summed over micro-batches


@flax.struct.dataclass
class TrainState:
  """Everything an update changes, as one pytree (the graphdef stays outside the jit)."""
  step: jax.Array  # [] int32: applied (not skipped) updates
  params: nnx.State  # trainable parameters, fp32 master copies
  frozen: nnx.State  # the rest of the model state (frozen vision tower, non-LoRA weights...)
  opt_state: Any  # optax state over `params`


def trainable_filter(model: nnx.Module, freeze_vision: bool = False):
  """LoRA params when the model has adapters, else all params; minus the vision tower when
  `freeze_vision`."""
  lora = jax.tree.leaves(nnx.state(model, nnx.LoRAParam))
  base = nnx.LoRAParam if lora else nnx.Param
  return nnx.All(base, nnx.Not(nnx.PathContains("visual"))) if freeze_vision else base


def _upcast(x):
  return x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation, *,
                     freeze_vision: bool = False, mesh: Mesh | None = None,
                     rules=DEFAULT_RULES, trainable=None):
  """(graphdef, TrainState) of `model`: trainable params (`trainable`, an nnx filter; default
  `trainable_filter`) upcast to fp32, optimizer state initialised, everything placed on its
  sharding when a mesh is given."""
  trainable = trainable_filter(model, freeze_vision) if trainable is None else trainable
  graphdef, params, frozen = nnx.split(model, trainable, ...)
  params = jax.tree.map(_upcast, params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                     opt_state=tx.init(params))
  if mesh is not None:
    state = jax.device_put(state, mesh_lib.state_shardings(state, mesh, rules))
  return graphdef, state


def rows_sharding(rows: int, ndim: int, mesh: Mesh, rules=DEFAULT_RULES,
                  stacked: bool = False) -> NamedSharding:
  """The sharding of an array of `ndim` dims whose first (row) axis of `rows` rows is split over
  the `batch` rule (replicated when `rows` does not divide); `stacked`: a leading micro-batch
  axis comes first."""
  lead = (None,) if stacked else ()
  shape = (1,) * len(lead) + (rows,) + (1,) * (ndim - 1)
  return mesh_lib.named_sharding(lead + (BATCH,) + (None,) * (ndim - 1), shape, mesh, rules)


def inputs_shardings(rows: int, mesh: Mesh, rules=DEFAULT_RULES,
                     stacked: bool = False) -> ModelInputs:
  """Shardings of a `ModelInputs` of `rows` prompts, as a prefix of its tree: the token arrays'
  rows over the `batch` rule; vision patches and tables replicated (the vision tower's
  constraints then keep each device's blocks of them, `model/vision.py`). Fields that are None
  in a batch (text only) take no sharding."""
  row = lambda ndim: rows_sharding(rows, ndim, mesh, rules, stacked)  # noqa: E731
  rep = NamedSharding(mesh, PartitionSpec())
  lead = (None,) if stacked else ()
  positions = mesh_lib.named_sharding(lead + (None, BATCH, None),
                                      (1,) * len(lead) + (3, rows, 1), mesh, rules)
  return ModelInputs(input_ids=row(2), attention_mask=row(2), positions=positions,
                     rope_deltas=row(1), **{f: rep for f in VISION_FIELDS})


def _is_namedtuple(x) -> bool:
  return isinstance(x, tuple) and hasattr(x, "_fields")


def stack_microbatches(batches: Sequence[Any]) -> Any:
  """Host: k same-shaped batches (numpy NamedTuples or tuples of them) -> one batch with a
  leading micro-batch axis. Vision segment tables are padded to the largest of the k first."""
  def pad(segs):
    s = max(x.gather.shape[-2] for x in segs)
    l = max(x.gather.shape[-1] for x in segs)
    return [pad_segments(x, s, l) for x in segs]

  def fix(items):
    first = items[0]
    if first is None:
      return None
    if isinstance(first, Segments):
      return jax.tree.map(lambda *xs: np.stack(xs), *pad(items))
    if isinstance(first, tuple):
      parts = [fix([it[i] for it in items]) for i in range(len(first))]
      return type(first)(*parts) if _is_namedtuple(first) else tuple(parts)
    return np.stack([np.asarray(x) for x in items])
  return fix(list(batches))


def split_rows(batch: Any, k: int) -> Any:
  """Host: a whole batch (numpy NamedTuples, tuples of them, None) -> k micro-batches of its
  consecutive rows, stacked on a leading axis: what the step's `lax.scan` runs over.
  `ModelInputs` split with `batching.split_inputs` (vision patches by row block); every other
  array by its first axis (rows b*G .. b*G+G-1 of a rollout batch stay with prompt b)."""
  def parts(x) -> list:
    if x is None:
      return [None] * k
    if isinstance(x, ModelInputs):
      return split_inputs(x, k)
    if isinstance(x, tuple):
      fields = [parts(v) for v in x]
      make = type(x) if _is_namedtuple(x) else (lambda *v: tuple(v))
      return [make(*[f[j] for f in fields]) for j in range(k)]
    x = np.asarray(x)
    if x.shape[0] % k:
      raise ValueError(f"{x.shape[0]} rows do not split into {k} micro-batches")
    return np.split(x, k)
  return stack_microbatches(parts(batch))


class Shared(NamedTuple):
  """A micro-batch with its slices of what the step computed once for the whole batch
  (`update_fn`'s `shared_fn`)."""
  batch: Any  # the micro-batch
  shared: Any  # differentiable: its gradient flows back through the one whole-batch forward
  const: Any  # not differentiated


def update_fn(graphdef, loss_fn: Callable, tx: optax.GradientTransformation,
              schedule: Callable, *, grad_accum: int = 1, prepare_fn: Callable | None = None,
              weight_by: str | None = None, shared_fn: Callable | None = None) -> Callable:
  """The pure optimizer step `update(state, aux, batch, rng) -> (state, metrics)` of
  `loss_fn(model, prepare_fn(aux, batch), batch) -> (loss, metrics)`; jit it with
  `donate_argnums=0` and the shardings of its arguments.

  With `grad_accum = k > 1` the batch arrives cut into k micro-batches (`split_rows`) and their
  gradients are summed under `lax.scan`, each weighing `metrics[weight_by]` (e.g. its token
  count, for a token-mean loss) or 1 (`weight_by=None`, for losses averaged over rows), so the
  update is the one of the whole batch. Then global norm, `tx`, and the non-finite guard.

  `shared_fn(model, aux, batch) -> (shared, const)` (used when k > 1) runs once per step on the
  whole stacked batch, before the micro-batches: both trees carry a leading micro-batch axis of
  size k, and micro-batch j gets slice j of each as `Shared(mb, shared_j, const_j)` (what
  `prepare_fn` sees with `shared` None, and `loss_fn`). The gradient of each micro-batch's loss
  with respect to its `shared_j` (weighted like its parameter gradient) is collected and pulled
  back through the whole-batch forward once (`jax.vjp`): e.g. the prompts of all micro-batches
  run in one forward whose rows divide the devices, and each micro-batch runs only its
  completions against them; the update is the same.
  """
  prepare_fn = prepare_fn or (lambda aux, batch: aux)

  # Every array reaches the model as an argument of the function being traced (not through a
  # closure): nnx.remat inside the model refuses variables from an outer trace.
  def loss(params, frozen, mb, extra):
    return loss_fn(nnx.merge(graphdef, params, frozen), extra, mb)
  value_and_grad = jax.value_and_grad(loss, has_aux=True)

  def grad_fn(params, frozen, aux, mb):
    return value_and_grad(params, frozen, mb, prepare_fn(aux, mb))

  def weighted(out):  # (l, m), g -> everything but the summed metrics times the weight
    (l, m), g = out
    w = m[weight_by].astype(jnp.float32) if weight_by else jnp.ones((), jnp.float32)
    m = {key: v if key in SUM_METRICS else v * w for key, v in m.items()}
    return (l * w, m, w), jax.tree.map(lambda x: x * w, g)

  def summed(step_fn, state: TrainState, aux, xs):
    """`lax.scan` over micro-batches `xs` of `step_fn(params, frozen, aux, x) -> (out, y)`: the
    sum of the `out`s and the stacked `y`s."""
    def body(carry, x):
      acc, params, frozen, aux = carry
      out, y = step_fn(params, frozen, aux, x)
      return (jax.tree.map(jnp.add, acc, out), params, frozen, aux), y
    first = jax.tree.map(lambda x: x[0], xs)
    shapes = jax.eval_shape(lambda *a: step_fn(*a)[0], state.params, state.frozen, aux, first)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (acc, *_), ys = jax.lax.scan(body, (zeros, state.params, state.frozen, aux), xs)
    return acc, ys

  def normalised(l, m, w, g):  # weighted sums over micro-batches -> the whole batch's means
    w = jnp.where(w > 0, w, 1.0)
    m = {key: v if key in SUM_METRICS else v / w for key, v in m.items()}
    return (l / w, m), jax.tree.map(lambda x: x / w, g)

  def accumulated(state: TrainState, aux, batch):
    ((l, m, w), g), _ = summed(lambda *a: (weighted(grad_fn(*a)), None), state, aux, batch)
    return normalised(l, m, w, g)

  def shared_loss(params, shared, frozen, mb, extra):
    return loss_fn(nnx.merge(graphdef, params, frozen), extra, mb._replace(shared=shared))
  shared_value_and_grad = jax.value_and_grad(shared_loss, argnums=(0, 1), has_aux=True)

  def accumulated_shared(state: TrainState, aux, batch):
    # Every array is a primal of the vjp (nnx refuses variables closed over from an outer
    # trace); only the params' cotangent is used, XLA drops the others.
    def whole(params, frozen, aux, batch):
      return shared_fn(nnx.merge(graphdef, params, frozen), aux, batch)
    shared, pull, const = jax.vjp(whole, state.params, state.frozen, aux, batch, has_aux=True)

    def grads(params, frozen, aux, xs):
      mb, shared_mb, const_mb = xs
      mb = Shared(mb, None, const_mb)
      (l, m), (g, g_shared) = shared_value_and_grad(params, shared_mb, frozen, mb,
                                                    prepare_fn(aux, mb))
      (l, m, w), g = weighted(((l, m), g))
      return ((l, m, w), g), jax.tree.map(lambda x: x * w.astype(x.dtype), g_shared)

    ((l, m, w), g), g_shared = summed(grads, state, aux, (batch, shared, const))
    return normalised(l, m, w, jax.tree.map(jnp.add, g, pull(g_shared)[0]))

  def update(state: TrainState, aux, batch, rng):
    del rng  # the model has no dropout; kept in the signature for stochastic losses
    if grad_accum > 1 and shared_fn is not None:
      (loss_value, metrics), grads = accumulated_shared(state, aux, batch)
    elif grad_accum > 1:
      (loss_value, metrics), grads = accumulated(state, aux, batch)
    else:
      (loss_value, metrics), grads = grad_fn(state.params, state.frozen, aux, batch)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss_value) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
    new_state = state.replace(step=state.step + ok.astype(jnp.int32),
                              params=jax.tree.map(keep, params, state.params),
                              opt_state=jax.tree.map(keep, opt_state, state.opt_state))
    metrics = dict(metrics, loss=loss_value, grad_norm=grad_norm,
                   lr=jnp.asarray(schedule(state.step), jnp.float32),
                   skipped=(~ok).astype(jnp.float32))
    return new_state, metrics
  return update


@dataclasses.dataclass(frozen=True)
class Jitted:
  """One jitted update and how a host batch reaches it: cut into `grad_accum` micro-batches,
  then placed on `batch_shardings` (global arrays, each process placing its own devices'
  slices; None without a mesh). `jitted(state, aux, batch, rng)`; `jitted.fn` is the `jax.jit`
  (for `.lower`)."""
  fn: Callable
  batch_shardings: Any = None
  grad_accum: int = 1

  def place(self, batch):
    if self.grad_accum > 1:
      batch = split_rows(batch, self.grad_accum)
    if self.batch_shardings is None:
      return batch
    return mesh_lib.put_global(batch, self.batch_shardings)

  def __call__(self, state: TrainState, aux, batch, rng):
    return self.fn(state, aux, self.place(batch), rng)


def jit_update(update, *, grad_accum: int = 1, mesh: Mesh | None = None, state=None, aux=None,
               batch_shardings=None, rules=DEFAULT_RULES, donate: bool = True) -> Jitted:
  """`jax.jit(update, donate_argnums=0)`; with a mesh, the in/out shardings of (state, aux,
  batch, rng) -> (state, metrics) stated: `state` and `aux` (possibly abstract) by their logical
  axes, the batch by `batch_shardings` (a prefix of its tree), rng and metrics replicated.
  `donate=False` keeps the state's arrays (its frozen part may be shared with a live module)."""
  donated = (0,) if donate else ()
  if mesh is None:
    return Jitted(jax.jit(update, donate_argnums=donated), None, grad_accum)
  rep = NamedSharding(mesh, PartitionSpec())
  state_sh = mesh_lib.state_shardings(state, mesh, rules)
  aux_sh = mesh_lib.state_shardings(aux, mesh, rules)
  fn = jax.jit(update, donate_argnums=donated,
               in_shardings=(state_sh, aux_sh, batch_shardings, rep),
               out_shardings=(state_sh, rep))
  return Jitted(fn, batch_shardings, grad_accum)
