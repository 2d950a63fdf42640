"""The shared machinery of a jitted, sharded optimizer step (RL and SFT use the same one).

  graphdef, state = init_train_state(model, tx, freeze_vision=..., mesh=mesh)
  step = TrainStep(graphdef, loss_fn, tx, schedule, mesh=mesh, grad_accum=k)
  state, metrics = step(state, aux, batch, rng)

`loss_fn(model, extra, batch) -> (loss, metrics)` is pure; `extra = prepare_fn(aux, batch)` is
computed outside the differentiated function (the reference policy's log-probs from `aux`, the
reference params), so no gradient is traced through it.

The step: the host batch cut into `grad_accum` micro-batches of consecutive rows
(`split_rows`), their gradients summed with `lax.scan` (weighted so the update is the whole
batch's), global norm, AdamW, and the non-finite guard: a non-finite loss or gradient norm
leaves params and optimizer state unchanged and sets `metrics["skipped"] = 1`. Shardings are
stated: params and optimizer moments by their logical axes, rows of the batch over the `batch`
rule (data x fsdp), vision patches and scalars replicated.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

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


def _is_var(x) -> bool:
  return isinstance(x, nnx.Variable)


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
                     rules=DEFAULT_RULES):
  """(graphdef, TrainState) of `model`: trainable params upcast to fp32, optimizer state
  initialised, everything placed on its sharding when a mesh is given."""
  graphdef, params, frozen = nnx.split(model, trainable_filter(model, freeze_vision), ...)
  params = jax.tree.map(_upcast, params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
                     opt_state=tx.init(params))
  if mesh is not None:
    state = jax.device_put(state, state_shardings(state, mesh, rules))
  return graphdef, state


def state_shardings(tree: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
  """NamedShardings for a tree holding nnx Variables (by their logical axes; optimizer moments
  inherit them) and plain arrays (replicated)."""
  rep = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(
      lambda v: mesh_lib.variable_sharding(v, mesh, rules) if _is_var(v) else rep, tree,
      is_leaf=_is_var)


def inputs_shardings(inputs: ModelInputs, mesh: Mesh, rules=DEFAULT_RULES,
                     stacked: bool = False) -> ModelInputs:
  """Rows of the token arrays over the `batch` rule; vision patches and tables replicated (they
  are indexed globally by the segment tables). `stacked`: arrays carry a micro-batch axis."""
  lead = (None,) if stacked else ()
  ns = lambda axes, x: mesh_lib.named_sharding(lead + axes, x.shape, mesh, rules)  # noqa: E731
  rep = NamedSharding(mesh, PartitionSpec())
  out = ModelInputs(
      input_ids=ns((BATCH, None), inputs.input_ids),
      attention_mask=ns((BATCH, None), inputs.attention_mask),
      positions=ns((None, BATCH, None), inputs.positions),
      rope_deltas=ns((BATCH,), inputs.rope_deltas))
  return out._replace(**{f: None if getattr(inputs, f) is None else rep for f in VISION_FIELDS})


def rows_shardings(batch: Any, mesh: Mesh, rules=DEFAULT_RULES, stacked: bool = False) -> Any:
  """Shardings of a NamedTuple batch: `ModelInputs` fields as `inputs_shardings`, other arrays
  with their first (row) axis over the `batch` rule."""
  lead = (None,) if stacked else ()

  def one(x):
    if x is None:
      return None
    if isinstance(x, ModelInputs):
      return inputs_shardings(x, mesh, rules, stacked)
    if isinstance(x, tuple) and hasattr(x, "_fields"):
      return type(x)(*[one(v) for v in x])
    if isinstance(x, (tuple, list)):
      return type(x)(one(v) for v in x)
    axes = lead + (BATCH,) + (None,) * (len(x.shape) - len(lead) - 1)
    return mesh_lib.named_sharding(axes, x.shape, mesh, rules)
  return one(batch)


def _is_namedtuple(x) -> bool:
  return isinstance(x, tuple) and hasattr(x, "_fields")


def stack_microbatches(batches: Sequence[Any]) -> Any:
  """Host: k same-shaped batches (numpy NamedTuples or tuples of them) -> one batch with a
  leading micro-batch axis. Vision segment tables are padded to the largest of the k first."""
  def pad(segs):
    s = max(x.gather.shape[0] for x in segs)
    l = max(x.gather.shape[1] for x in segs)
    return [pad_segments(Segments(*map(np.asarray, x)), s, l) for x in segs]

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


class TrainStep:
  """A jitted optimizer step of `loss_fn(model, prepare_fn(aux, batch), batch)`.

  `step(state, aux, batch, rng)` takes the whole host batch; with `grad_accum = k > 1` it cuts
  it into k micro-batches of consecutive rows (`split_rows`) and the jitted program sums their
  gradients under `lax.scan`. Each micro-batch's loss, gradient and averaged metrics weigh
  `metrics[weight_by]` (e.g. its token count, for a token-mean loss) or 1 (`weight_by=None`, for
  losses averaged over rows), so the update is the one of the whole batch. `jitted` and `lower`
  take the batch as the program sees it (already split when k > 1).

  One program per batch structure and shapes (cached); in/out shardings stated when `mesh` is
  given; the train state is donated.
  """

  def __init__(self, graphdef, loss_fn: Callable, tx: optax.GradientTransformation,
               schedule: Callable, *, grad_accum: int = 1, mesh: Mesh | None = None,
               rules=DEFAULT_RULES, donate: bool = True,
               prepare_fn: Callable | None = None, weight_by: str | None = None):
    self.graphdef, self.loss_fn, self.tx, self.schedule = graphdef, loss_fn, tx, schedule
    self.prepare_fn = prepare_fn or (lambda aux, batch: aux)
    self.grad_accum, self.mesh, self.rules, self.donate = int(grad_accum), mesh, rules, donate
    self.weight_by = weight_by
    self._cache: dict[Any, Any] = {}

  def _grads(self, state: TrainState, aux, batch):
    # Every array reaches the model as an argument of the function being traced (not through
    # a closure): nnx.remat inside the model refuses variables from an outer trace.
    def loss(params, frozen, mb, extra):
      return self.loss_fn(nnx.merge(self.graphdef, params, frozen), extra, mb)
    value_and_grad = jax.value_and_grad(loss, has_aux=True)

    def grad_fn(params, frozen, aux, mb):
      return value_and_grad(params, frozen, mb, self.prepare_fn(aux, mb))
    if self.grad_accum == 1:
      return grad_fn(state.params, state.frozen, aux, batch)

    def weighted(out):  # (l, m), g -> everything but the summed metrics times the weight
      (l, m), g = out
      w = m[self.weight_by].astype(jnp.float32) if self.weight_by else jnp.ones((), jnp.float32)
      m = {key: v if key in SUM_METRICS else v * w for key, v in m.items()}
      return (l * w, m, w), jax.tree.map(lambda x: x * w, g)

    def body(carry, mb):
      acc, params, frozen, aux = carry
      acc = jax.tree.map(jnp.add, acc, weighted(grad_fn(params, frozen, aux, mb)))
      return (acc, params, frozen, aux), None
    first = jax.tree.map(lambda x: x[0], batch)
    shapes = jax.eval_shape(lambda *a: weighted(grad_fn(*a)), state.params, state.frozen, aux,
                            first)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    ((l, m, w), g), *_ = jax.lax.scan(body, (zeros, state.params, state.frozen, aux), batch)[0]
    w = jnp.where(w > 0, w, 1.0)
    m = {key: v if key in SUM_METRICS else v / w for key, v in m.items()}
    return (l / w, m), jax.tree.map(lambda x: x / w, g)

  def _step(self, state: TrainState, aux, batch, rng):
    del rng  # the model has no dropout; kept in the signature for stochastic losses
    (loss, metrics), grads = self._grads(state, aux, batch)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
    new_state = state.replace(step=state.step + ok.astype(jnp.int32),
                              params=jax.tree.map(keep, params, state.params),
                              opt_state=jax.tree.map(keep, opt_state, state.opt_state))
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   lr=jnp.asarray(self.schedule(state.step), jnp.float32),
                   skipped=(~ok).astype(jnp.float32))
    return new_state, metrics

  def jitted(self, state, aux, batch):
    """The jitted step for this structure of arguments (for `.lower(...)` / AOT plans)."""
    return self._entry(state, aux, batch)[0]

  def _entry(self, state, aux, batch):
    """(jitted step, shardings of (aux, batch, rng) or None), built once per structure."""
    key = (jax.tree.structure((state, aux, batch)),
           tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves((aux, batch))))
    if key not in self._cache:
      donate = (0,) if self.donate else ()
      if self.mesh is None:
        self._cache[key] = (jax.jit(self._step, donate_argnums=donate), None)
      else:
        rep = NamedSharding(self.mesh, PartitionSpec())
        state_sh = state_shardings(state, self.mesh, self.rules)
        aux_sh = state_shardings(aux, self.mesh, self.rules)
        batch_sh = rows_shardings(batch, self.mesh, self.rules, stacked=self.grad_accum > 1)
        fn = jax.jit(self._step, in_shardings=(state_sh, aux_sh, batch_sh, rep),
                     out_shardings=(state_sh, rep), donate_argnums=donate)
        self._cache[key] = (fn, (aux_sh, batch_sh, rep))
    return self._cache[key]

  def __call__(self, state: TrainState, aux, batch, rng):
    if self.grad_accum > 1:
      batch = split_rows(batch, self.grad_accum)
    fn, placement = self._entry(state, aux, batch)
    if placement is not None:  # host batches -> global arrays (what multi-host jit accepts)
      aux_sh, batch_sh, rep = placement
      aux, batch = mesh_lib.put_global(aux, aux_sh), mesh_lib.put_global(batch, batch_sh)
      rng = mesh_lib.put_global(rng, rep)
    return fn(state, aux, batch, rng)
