"""Rollouts from Qwen2.5-VL: one jitted program per (batch bucket, prompt bucket) does the
prefill and the whole decode loop.

  sampler = Sampler(model, tokenizer, mesh)
  out = sampler.generate(inputs, SamplingConfig(num_samples=4), jax.random.key(0))
  out.tokens, out.mask, out.logprobs   # [B*G, N]; row b*G+j is sample j of prompt b
  out.texts                            # decoded completions

Inside the program: the B prompt rows are prefilled once (vision tower and text forward run once
per prompt, however many samples are drawn), the cache rows are repeated G times
(`kv_cache.expand`), then a `lax.while_loop` samples one token per row per step and feeds it
back through the model with the cache, until every row has produced an end token or
`max_new_tokens` is reached. The cache is a loop carry of the one program, so XLA updates it in
place: it is allocated once, never copied between steps. Rows are sharded over the mesh's batch
axes and kv heads over `tensor`, by the same rules as the parameters.

An RL step places a prompt batch's pixels once (`place_pixels`, or `place_local_pixels` from each
process's own rows) and passes that device array here and to the update: `generate` pads it on
the devices when its patch bucket needs it, and copies nothing back to the host.

The weights are a copy of the policy in the compute dtype, laid out for decoding (replicated, or
split over `tensor` only), made once per `generate` call (`weights`): the loop never gathers
fsdp-sharded master weights. The prefill applies the LM head to the last prompt position only.

With `repetition_penalty` != 1 the loop also carries a [rows, vocab] mask of the ids seen (the
prompt's, padding left out, then each sampled token) and penalises their logits before the next
token is chosen (`select.repetition_penalty`, transformers' convention).

Outputs, per row: completion ids (the pad id after the end), a mask that is 1 up to and including
the first end token (all ones if none came), and the log-prob of each sampled token under the
policy at temperature 1 before any penalty or top-k/top-p (`select.token_logprobs`), 0 where the
mask is 0.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vcoach_jax.model import qwen2_5_vl as qwen
from vcoach_jax.parallel import mesh as mesh_lib
from vcoach_jax.parallel.rules import DEFAULT_RULES
from vcoach_jax.sampling import buckets
from vcoach_jax.sampling import kv_cache
from vcoach_jax.sampling import select
from vcoach_jax.sampling import weights as weights_lib

END_TOKENS = ("<|im_end|>", "<|endoftext|>")
PAD_TOKEN = "<|endoftext|>"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How completions are drawn (docs/design.md §8.1; defaults are the reference's)."""
  temperature: float = 1.0
  top_p: float = 0.95  # nucleus: smallest prefix of the sorted distribution with this mass
  top_k: int = 50  # 0 = no top-k cut
  greedy: bool = False  # argmax; the other sampling fields are ignored
  max_new_tokens: int = 768  # the reference's max_completion_length
  num_samples: int = 1  # G rollouts per prompt
  repetition_penalty: float = 1.0  # > 1 discourages tokens already seen (1 = off; `select`)
  weights_layout: str = "auto"  # the decoding copy of the weights (`weights.LAYOUTS`)

  def __post_init__(self):
    if self.weights_layout not in weights_lib.LAYOUTS:
      raise ValueError(f"weights_layout must be one of {weights_lib.LAYOUTS}, got "
                       f"{self.weights_layout!r}")
    if self.repetition_penalty <= 0:
      raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")
    if self.max_new_tokens < 1 or self.num_samples < 1:
      raise ValueError(f"max_new_tokens ({self.max_new_tokens}) and num_samples "
                       f"({self.num_samples}) must be positive")

  @classmethod
  def from_config(cls, sampling: ml_collections.ConfigDict) -> "SamplingConfig":
    """From a config's `sampling` section (extra keys such as `batch_buckets` are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: sampling[k] for k in sampling.keys() if k in names})


class Rollouts(NamedTuple):
  """Completions of one `generate` call, on the host."""
  tokens: np.ndarray  # [B*G, N] int32, row b*G+j = sample j of prompt b; pad id after the end
  mask: np.ndarray  # [B*G, N] int32, 1 up to and including the first end token
  logprobs: np.ndarray  # [B*G, N] float32 log softmax(raw logits)[token]; 0 where mask is 0
  texts: list[str]  # decoded completions (special tokens dropped, grounding tags kept)
  # (tokens, mask, logprobs) as the device arrays they were copied from (None: host only): a
  # train step given these needs no upload of them
  placed: tuple[jax.Array, jax.Array, jax.Array] | None = None


class _Static(NamedTuple):
  """The compile-time part of a SamplingConfig (temperature and top_p are traced)."""
  greedy: bool
  top_k: int
  max_new_tokens: int
  num_samples: int
  penalise: bool  # repetition_penalty != 1: the loop tracks the tokens seen


@flax.struct.dataclass
class _LoopState:
  """Carry of the decode loop (R = rows * samples, N = max_new_tokens, V = vocab)."""
  step: jax.Array  # [] int32: tokens sampled so far
  logits: jax.Array  # [R, V] fp32: next-token logits
  cache: qwen.KVCache  # [L, R, T + N, K, H]
  tokens: jax.Array  # [R, N] int32
  mask: jax.Array  # [R, N] bool
  logprobs: jax.Array  # [R, N] fp32
  done: jax.Array  # [R] bool: the row has produced an end token (or is a padding row)
  seen: jax.Array  # [R, V] bool: ids in the prompt (not its padding) or sampled so far; [R, 0]
  # when there is no repetition penalty


class Sampler:
  """Jitted KV-cache generation for a `Qwen2_5_VL`.

  Args:
    model: the policy (its own weights are used unless `generate(state=...)` passes others).
    tokenizer: a transformers tokenizer, for the end/pad ids and the decoded texts; may be None
      when `end_ids` and `pad_id` are given (texts are then empty strings).
    mesh: shard rows over (`data`, `fsdp`) and kv heads over `tensor`; None = one device.
    end_ids: token ids that end a completion (default `<|im_end|>` and `<|endoftext|>`).
    pad_id: written after the end (default `<|endoftext|>`).
    batch_buckets: prompt-row counts a batch is padded to.
    prompt_buckets: prompt lengths a batch is padded to (the run's `data.prompt_buckets`, so a
      pipeline batch is not padded further); a longer prompt goes to the next power of two.
    rules: logical -> mesh axis rules (`config.parallel.rules`).
  """

  def __init__(self, model: qwen.Qwen2_5_VL, tokenizer: Any = None, mesh: Mesh | None = None, *,
               end_ids: Sequence[int] | None = None, pad_id: int | None = None,
               batch_buckets: Sequence[int] = BATCH_BUCKETS,
               prompt_buckets: Sequence[int] = (),
               rules: mesh_lib.Rules = DEFAULT_RULES):
    if tokenizer is None and (end_ids is None or pad_id is None):
      raise ValueError("Sampler needs a tokenizer, or both end_ids and pad_id")
    if end_ids is None:
      end_ids = [tokenizer.convert_tokens_to_ids(t) for t in END_TOKENS]
    if pad_id is None:
      pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    if not batch_buckets or min(batch_buckets) < 1:
      raise ValueError(f"batch_buckets must be positive integers, got {batch_buckets}")
    self.model = model
    self.tokenizer = tokenizer
    self.mesh = mesh
    self.rules = rules
    self.end_ids = tuple(int(i) for i in end_ids)
    self.pad_id = int(pad_id)
    self.batch_buckets = tuple(sorted(int(b) for b in batch_buckets))
    self.prompt_buckets = tuple(sorted(int(b) for b in prompt_buckets))
    self.last_num_steps = 0  # decode steps the last `generate` ran (< N when all rows ended)
    self._compilations = 0
    self._weights = weights_lib.Placer(mesh, rules, model.dtype)
    out = None if mesh is None else NamedSharding(mesh, PartitionSpec())
    self._program = jax.jit(self._generate, static_argnums=(0, 1), out_shardings=out)

  @property
  def num_compilations(self) -> int:
    """Programs compiled so far (one per distinct bucket / static sampling setting)."""
    return self._compilations

  # ----------------------------------------------------------------------------------------------
  def generate(self, inputs: qwen.ModelInputs, config: SamplingConfig, rng: jax.Array, *,
               state: nnx.State | None = None, live_rows: int | None = None,
               text_rows: Sequence[int] | None = None) -> Rollouts:
    """Samples `config.num_samples` completions for each of the B left-padded prompt rows.

    Args:
      inputs: `ModelInputs` of B prompts (numpy; `prepare_inputs` or `batching.batch_inputs`),
        left padded; `pixels` may be a jax.Array already placed (`place_pixels`: the caller
        hands the same device array to the train step, and nothing is copied back).
      config: sampling settings.
      rng: PRNG key; the same key gives the same completions.
      state: the policy's `nnx.State` to sample from instead of the model's own weights (the
        trainer's current parameters); same structure as `nnx.split(model)[1]`. Either way the
        program decodes from a copy laid out by `config.weights_layout` (`weights`), made here.
      live_rows: only the first `live_rows` rows are sampled (the rest are padding rows of the
        caller's layout: done from the start, not returned); default all B.
      text_rows: the prompt rows whose completions are decoded to text (the others' texts are
        empty: another process decodes them); default all.
    """
    b = np.shape(inputs.input_ids)[0] if live_rows is None else int(live_rows)
    n = b * config.num_samples
    *outputs, steps = self._program(*self._arguments(inputs, config, rng, state, b))
    placed = _first_rows(*outputs, n)  # on the devices, kept for the train step
    tokens, mask, logprobs, steps = (np.asarray(x) for x in jax.device_get((*placed, steps)))
    self.last_num_steps = int(steps)
    g = config.num_samples
    keep = np.ones((n,), bool) if text_rows is None else np.isin(np.arange(n) // g, text_rows)
    texts = self.decode(tokens[keep], mask[keep])
    out = iter(texts)
    return Rollouts(tokens, mask, logprobs, [next(out) if k else "" for k in keep], placed)

  def lower(self, inputs: qwen.ModelInputs, config: SamplingConfig, rng: jax.Array, *,
             state: nnx.State | None = None) -> jax.stages.Lowered:
    """The program `generate` would run for these arguments, lowered (for `.compile()`, its
    HLO text and memory analysis)."""
    return self._program.lower(*self._arguments(inputs, config, rng, state))

  def place_pixels(self, inputs: qwen.ModelInputs) -> qwen.ModelInputs:
    """`inputs` with its vision patches placed on the devices, split like the rows over the
    mesh's batch axes (each row's patches are one block of `batching.batch_inputs`'s layout):
    each device receives only its rows' patches, each process places only its own devices'
    slices, and the programs gather what they need on the devices. The other fields stay on
    the host. Placed once, the same array serves the sampler and the train step."""
    if inputs.pixels is None or isinstance(inputs.pixels, jax.Array):
      return inputs
    return inputs._replace(pixels=self._put_patches(np.asarray(inputs.pixels, np.float32)))

  def _put_patches(self, pixels: np.ndarray) -> jax.Array:
    """Host patches (all rows of the global batch) -> split like the rows over the batch axes."""
    if self.mesh is None:
      return jax.device_put(pixels)
    return mesh_lib.put_global(pixels, self._sharding(("batch", None), pixels.shape))

  def place_local_pixels(self, local: np.ndarray, rows: int) -> jax.Array:
    """The `[rows, D]` pixels of a global batch from this process's own block of them
    (`local`, its rows' patches), split like `place_pixels` over the batch axes. Each process's
    devices must hold exactly its own block (the mesh's batch axes laid out by process, as
    `make_mesh` does); ValueError otherwise."""
    from vcoach_jax.rl import placement  # pylint: disable=g-import-not-at-top
    if jax.process_count() == 1 and local.shape[0] != rows:
      raise ValueError(f"one process holds {local.shape[0]} of {rows} patch rows")
    return placement.Placer(self.mesh, self.rules).place_local_pixels(local, rows)

  def _arguments(self, inputs, config: SamplingConfig, rng, state, live_rows=None):
    """The program's arguments: bucketed, placed inputs and the decoding copy of the weights.
    Placed pixels (a jax.Array) stay on the devices: they are padded there when the patch
    bucket needs it."""
    placed = inputs.pixels if isinstance(inputs.pixels, jax.Array) else None
    if placed is not None:  # a zero-width stand-in: the host padding below moves no pixels
      inputs = inputs._replace(pixels=np.zeros((placed.shape[0], 0), np.float32))
    inputs = jax.tree.map(np.asarray, inputs)
    b, t = inputs.input_ids.shape
    rows = buckets.batch_bucket(b, self.batch_buckets)
    padded = buckets.pad_inputs(inputs, rows, buckets.prompt_bucket(t, self.prompt_buckets),
                                 self.pad_id)
    if placed is not None:
      padded = padded._replace(pixels=_pad_patches(placed, padded.pixels.shape[0]))
    live = np.arange(rows) < (b if live_rows is None else live_rows)
    graphdef, own_state = nnx.split(self.model)
    static = _Static(bool(config.greedy or config.temperature == 0), int(config.top_k),
                     int(config.max_new_tokens), int(config.num_samples),
                     float(config.repetition_penalty) != 1.0)
    weights = self._weights(own_state if state is None else state, config.weights_layout)
    return (graphdef, static, weights, self._place(padded), self._place_rows(live), rng,
            jnp.float32(config.temperature), jnp.float32(config.top_p),
            jnp.float32(config.repetition_penalty))

  def decode(self, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    """Texts of completions (up to and including the end token; special tokens dropped)."""
    if self.tokenizer is None:
      return [""] * len(tokens)
    return [self.tokenizer.decode(row[m == 1].tolist(), skip_special_tokens=True)
            for row, m in zip(tokens, mask)]

  # ----------------------------------------------------------------------------------------------
  def _sharding(self, axes, shape):
    return mesh_lib.named_sharding(axes, shape, self.mesh, self.rules)

  def _place_rows(self, x: np.ndarray):
    if self.mesh is None:
      return jnp.asarray(x)
    return mesh_lib.put_global(x, self._sharding(("batch",) + (None,) * (x.ndim - 1), x.shape))

  def _place(self, inputs: qwen.ModelInputs) -> qwen.ModelInputs:
    """Token arrays sharded by rows; vision arrays (shared by all rows) replicated."""
    if self.mesh is None:
      return jax.tree.map(jnp.asarray, inputs)
    rows = dict(input_ids=None, attention_mask=None, rope_deltas=None, positions=None)
    replicated = NamedSharding(self.mesh, PartitionSpec())
    placed = mesh_lib.put_global(inputs._replace(**rows), replicated)  # the vision fields
    return placed._replace(
        input_ids=self._place_rows(inputs.input_ids),
        attention_mask=self._place_rows(inputs.attention_mask),
        rope_deltas=self._place_rows(inputs.rope_deltas),
        positions=mesh_lib.put_global(
            inputs.positions, self._sharding((None, "batch", None), inputs.positions.shape)))

  def _pin(self, x: jax.Array, axes) -> jax.Array:
    if self.mesh is None:
      return x
    return jax.lax.with_sharding_constraint(x, self._sharding(axes, x.shape))

  def _generate(self, graphdef, static: _Static, state, inputs: qwen.ModelInputs,
                live: jax.Array, rng: jax.Array, temperature: jax.Array, top_p: jax.Array,
                penalty: jax.Array):
    """The jitted program: prefill, expand the cache G times, decode until done."""
    self._compilations += 1  # runs once per trace, i.e. once per compilation
    model = nnx.merge(graphdef, state)
    b, t = inputs.input_ids.shape
    g, n = static.num_samples, static.max_new_tokens
    r = b * g
    last, cache = qwen.prefill(model, inputs, max_len=t)  # [B, V], cache of the prompt slots
    cache = kv_cache.constrain(kv_cache.expand(cache, g, t + n), self.mesh, self.rules)
    end_ids = jnp.asarray(self.end_ids, jnp.int32)

    def cond(s: _LoopState):
      return (s.step < n) & ~jnp.all(s.done)

    def body(s: _LoopState) -> _LoopState:
      scores = select.repetition_penalty(s.logits, s.seen, penalty) if static.penalise else s.logits
      tok = select.next_tokens(scores, jax.random.fold_in(rng, s.step), temperature, top_p,
                               top_k=static.top_k, greedy=static.greedy)
      lp = select.token_logprobs(s.logits, tok)
      alive = ~s.done
      tok = jnp.where(alive, tok, self.pad_id)
      put = lambda buf, x: jax.lax.dynamic_update_slice(buf, x[:, None], (0, s.step))  # noqa: E731
      logits, cache = qwen.decode_step(model, tok, s.cache)
      return _LoopState(
          step=s.step + 1, logits=self._pin(logits, ("batch", None)),
          cache=kv_cache.constrain(cache, self.mesh, self.rules),
          tokens=put(s.tokens, tok), mask=put(s.mask, alive),
          logprobs=put(s.logprobs, jnp.where(alive, lp, 0.0)),
          done=s.done | jnp.isin(tok, end_ids),
          seen=select.mark_seen(s.seen, tok) if static.penalise else s.seen)

    rows = lambda x: self._pin(x, ("batch", None))  # noqa: E731
    init = _LoopState(
        step=jnp.zeros((), jnp.int32), logits=rows(jnp.repeat(last, g, axis=0)), cache=cache,
        tokens=rows(jnp.full((r, n), self.pad_id, jnp.int32)), mask=rows(jnp.zeros((r, n), bool)),
        logprobs=rows(jnp.zeros((r, n), jnp.float32)),
        done=self._pin(~jnp.repeat(live, g), ("batch",)),
        seen=rows(jnp.repeat(select.prompt_seen(inputs.input_ids, inputs.attention_mask,
                                                last.shape[-1]), g, axis=0)
                  if static.penalise else jnp.zeros((r, 0), bool)))
    out = jax.lax.while_loop(cond, body, init)
    return out.tokens, out.mask, out.logprobs, out.step


@functools.partial(jax.jit, static_argnums=3)
def _first_rows(tokens: jax.Array, mask: jax.Array, logprobs: jax.Array, n: int):
  """The program's outputs cut to the live rows, the mask as int32 (the train step's dtype)."""
  return tokens[:n], mask[:n].astype(jnp.int32), logprobs[:n]


@jax.jit
def _pad_rows(x: jax.Array, zeros: jax.Array) -> jax.Array:
  return jnp.concatenate([x, zeros.astype(x.dtype)])


def _pad_patches(pixels: jax.Array, n: int) -> jax.Array:
  """Placed `[N, D]` pixels -> `[n, D]` with zero patches after, on the devices."""
  extra = n - pixels.shape[0]
  if extra == 0:
    return pixels
  zeros = jnp.zeros((extra, pixels.shape[1]), pixels.dtype, device=pixels.sharding)
  return _pad_rows(pixels, zeros)
