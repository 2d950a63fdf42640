"""An ahead-of-time memory plan of the VisionCoach train step (docs/design.md §11).

The step is lowered and compiled for a mesh without any weights existing: the model is built
under `nnx.eval_shape`, the train state and the reference are `jax.ShapeDtypeStruct`s, and the
batches are the shapes `batching.batch_inputs` gives a full host batch of the config (every
prompt at the chosen length bucket, every patch slot used). `compiled.memory_analysis()` then
gives the per-device bytes XLA needs, which is what decides whether a run fits a chip.

  step, state, ref = abstract_setup(config, mesh)
  raw, prompted = abstract_batches(config, model_config(config), prompt_length=8192)
  report = memory_plan_of(compile_step(step, state, ref, raw, prompted), num_params(ref))

`compile_sampler` does the same for the sampler's program (prefill + decode loop) on a full
batch of prompts; `parallel/scaling.py` reads both programs' HLO for the scaling report.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vcoach_jax.model import build, lora
from vcoach_jax.model.batching import batch_inputs
from vcoach_jax.model.config import ModelConfig
from vcoach_jax.model.qwen2_5_vl import Qwen2_5_VL
from vcoach_jax.parallel import activations, mesh as mesh_lib
from vcoach_jax.rl import optim, train_step, update

GIB = 1024 ** 3
# Per-device memory of the plan's targets (GiB): TPU v5p HBM per chip, H100 SXM HBM. A plan is
# for one device per chip; `slice_names` says which slice a mesh of n devices is.
TARGETS = (("TPU v5p", 95.0), ("H100", 80.0))
TEXT_RESERVE = 512  # prompt tokens kept for text (system prompt, question, frame times)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
  """Per-device bytes of one compiled step (`compiled.memory_analysis()`)."""
  argument: int
  output: int
  temp: int
  generated_code: int
  alias: int
  num_params: int

  @property
  def peak(self) -> int:
    """Arguments + temporaries + outputs, minus the outputs that reuse donated arguments."""
    return self.argument + self.temp + self.output - self.alias


def model_config(config) -> ModelConfig:
  """The `ModelConfig` of a run config without reading any weights (a checkpoint's
  config.json, else the preset)."""
  m = config.model
  runtime = ModelConfig.runtime_options(m)
  if m.checkpoint:
    return ModelConfig.from_file(f"{m.checkpoint}/config.json", **runtime)
  return build.preset_config(m.preset, **runtime)


def abstract_model(config, mesh=None) -> Qwen2_5_VL:
  """The model of `config` with `jax.ShapeDtypeStruct` leaves (nothing allocated); with a mesh,
  its activations are laid out on it as a built model's are (`activations.attach`)."""
  m = config.model
  if m.dtype not in build.DTYPES:
    raise ValueError(f"config.model.dtype must be one of {sorted(build.DTYPES)}, got {m.dtype!r}")
  dtype, cfg = build.DTYPES[m.dtype], model_config(config)

  def make():
    model = Qwen2_5_VL(cfg, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0))
    if m.lora_rank > 0:
      lora.apply_lora(model, rank=m.lora_rank, alpha=m.lora_alpha,
                      targets=tuple(m.lora_targets), rngs=nnx.Rngs(1))
    return model
  model = nnx.eval_shape(make)
  activations.attach(model, mesh, mesh_lib.rules_from_config(config.parallel.rules))
  return model


def abstract_setup(config, mesh, *, group_size: int | None = None):
  """`train_step.setup` on an abstract model: (Step, TrainState, reference params)
  whose arrays are all `jax.ShapeDtypeStruct`s; the step carries the mesh's shardings."""
  model = abstract_model(config, mesh)
  tx = optim.make_optimizer(config.optim)
  freeze = config.optim.freeze_vision
  graphdef, *_ = nnx.split(model, update.trainable_filter(model, freeze), ...)
  full_def, full = nnx.split(model)

  def init(values):
    return update.init_train_state(nnx.merge(full_def, values), tx, freeze_vision=freeze)[1]
  state = jax.eval_shape(init, full)
  step = train_step.make_step(config, graphdef, tx, state=state, ref=full, mesh=mesh,
                              group_size=group_size)
  return step, state, full


def num_params(tree: Any) -> int:
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def _image_grids(cfg: ModelConfig, prompt_length: int, max_patches: int, max_images: int):
  """Up to `max_images` equal square-ish image grids `[1, h, w]` filling the patch budget, with
  their merged tokens (plus vision start/end) leaving `TEXT_RESERVE` text tokens (half the
  prompt when it is shorter than twice that)."""
  merge = cfg.vision.spatial_merge_size
  unit = cfg.vision.merge_unit
  reserve = min(TEXT_RESERVE, prompt_length // 2)  # half of a short prompt
  budget = min(max_patches, max(0, prompt_length - reserve) * unit)
  for n in range(max(1, max_images), 0, -1):
    per = budget // n
    h = max(0, int(math.isqrt(per)) // merge * merge)
    w = (per // h) // merge * merge if h else 0
    if h and w and n * (h * w // unit + 2) <= prompt_length:
      return np.tile(np.asarray([[1, h, w]], np.int32), (n, 1))
  return np.zeros((0, 3), np.int32)


def host_prompts(cfg: ModelConfig, batch_size: int, prompt_length: int, max_patches: int,
                 max_images: int) -> dict[str, np.ndarray]:
  """A full padded host batch (the `data.pipeline.collate` layout) of zero pixels: every row
  `prompt_length` real tokens, its images first, then text."""
  grids = _image_grids(cfg, prompt_length, max_patches, max_images)
  unit = cfg.vision.merge_unit
  row = []
  for g in grids:
    row += [cfg.vision_start_token_id] + [cfg.image_token_id] * int(np.prod(g) // unit)
    row += [cfg.vision_end_token_id]
  row += [cfg.bos_token_id] * (prompt_length - len(row))
  b = batch_size
  patches = int(np.prod(grids, axis=-1).sum()) if len(grids) else 0
  arrays = {"input_ids": np.tile(np.asarray(row, np.int32), (b, 1)),
            "attention_mask": np.ones((b, prompt_length), np.int32)}
  if patches:
    d = cfg.vision.in_channels * cfg.vision.temporal_patch_size * cfg.vision.patch_size ** 2
    full = np.zeros((b, max(max_images, len(grids)), 3), np.int32)
    full[:, :len(grids)] = grids
    arrays.update(pixel_values=np.zeros((b, max_patches, d), np.float32),
                  image_grid_thw=full, num_images=np.full((b,), len(grids), np.int32),
                  num_patches=np.full((b,), patches, np.int32))
  return arrays


def _shapes(tree: Any) -> Any:
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, jax.dtypes.canonicalize_dtype(x.dtype)), tree)


def abstract_batches(config, cfg: ModelConfig, prompt_length: int, *, prompted: bool = True):
  """(raw, prompted-or-None) `RolloutBatch`es of ShapeDtypeStructs at the config's shapes:
  data.batch_size prompts, sampling.num_samples completions of sampling.max_new_tokens each;
  with optim.grad_accum = k, k stacked micro-batches of batch_size / k prompts."""
  k = config.optim.grad_accum
  b, g, n = config.data.batch_size, config.sampling.num_samples, config.sampling.max_new_tokens
  b //= k
  inputs = batch_inputs(cfg, host_prompts(cfg, b, prompt_length, config.data.max_patches,
                                          config.data.max_images))
  rows = np.zeros((b * g, n), np.int32)
  logp, per_row = np.zeros((b * g, n), np.float32), np.zeros((b * g,), np.float32)
  raw = train_step.RolloutBatch(inputs, rows, rows, logp, per_row, None)
  hard = train_step.RolloutBatch(inputs, rows, rows, logp, None, per_row) if prompted else None
  if k > 1:
    raw = update.stack_microbatches([raw] * k)
    hard = update.stack_microbatches([hard] * k) if prompted else None
  return _shapes(raw), None if hard is None else _shapes(hard)


def default_prompt_length(config, cfg: ModelConfig) -> int:
  """The smallest prompt bucket that holds a full patch budget's image tokens plus
  `TEXT_RESERVE` text tokens (capped at data.max_prompt_length)."""
  need = config.data.max_patches // cfg.vision.merge_unit + 2 * config.data.max_images
  need += TEXT_RESERVE
  cap = config.data.max_prompt_length
  fits = [p for p in config.data.prompt_buckets if p >= need and p <= cap]
  return min(fits) if fits else min(cap, max(config.data.prompt_buckets))


def compile_step(step, state, ref, raw, prompted):
  """The train step compiled ahead of time for these abstract arguments (the one place the plan
  lowers it)."""
  rng = jax.eval_shape(lambda: jax.random.key(0))
  return step.lower(state, ref, raw, prompted, rng).compile()


def memory_analysis(compiled) -> MemoryPlan:
  """Per-device bytes of a compiled program (`num_params` left 0)."""
  ma = compiled.memory_analysis()
  if ma is None:
    raise ValueError("this backend gives no memory analysis of compiled programs")
  return MemoryPlan(argument=int(ma.argument_size_in_bytes), output=int(ma.output_size_in_bytes),
                    temp=int(ma.temp_size_in_bytes),
                    generated_code=int(ma.generated_code_size_in_bytes),
                    alias=int(ma.alias_size_in_bytes), num_params=0)


def memory_plan_of(compiled, params: int) -> MemoryPlan:
  """The per-device bytes of the compiled step, with its parameter count."""
  return dataclasses.replace(memory_analysis(compiled), num_params=params)


def compile_sampler(config, mesh, cfg: ModelConfig, prompt_length: int):
  """The sampler's program (prefill of data.batch_size prompts, then the decode loop of
  sampling.num_samples x sampling.max_new_tokens tokens) compiled for `mesh` on an abstract
  model; the weights are the decoding copy `sampling.weights_layout` gives."""
  from vcoach_jax.sampling import sampler as sampler_lib  # pylint: disable=g-import-not-at-top
  model = abstract_model(config, mesh)
  rules = mesh_lib.rules_from_config(config.parallel.rules)
  sampler = sampler_lib.Sampler(model, None, mesh, end_ids=[cfg.eos_token_id],
                                pad_id=cfg.bos_token_id, rules=rules)
  inputs = batch_inputs(cfg, host_prompts(cfg, config.data.batch_size, prompt_length,
                                          config.data.max_patches, config.data.max_images))
  sampling = sampler_lib.SamplingConfig.from_config(config.sampling)
  return sampler.lower(inputs, sampling, jax.random.key(0)).compile()


def slice_names(devices: int) -> dict[str, str]:
  """{target: the slice of `devices` chips}: a TPU v5p-N slice has N / 2 chips (N counts
  TensorCores), each one JAX device."""
  return {"TPU v5p": f"v5p-{2 * devices} ({devices} chips)", "H100": f"{devices}x H100"}


def format_plan(p: MemoryPlan, mesh_shape: Mapping[str, int],
                targets=TARGETS) -> str:
  """The printed table: per-device bytes in GiB and a verdict per target."""
  gib = lambda x: f"{x / GIB:10.3f} GiB"  # noqa: E731
  mesh = ",".join(f"{k}={v}" for k, v in mesh_shape.items())
  devices = math.prod(mesh_shape.values())
  slices = slice_names(devices)
  lines = [f"parameters        {p.num_params:,} ({p.num_params / 1e9:.2f} B)",
           f"mesh              {mesh} ({devices} devices)",
           "per-device bytes (compiled.memory_analysis):",
           f"  arguments       {gib(p.argument)}",
           f"  outputs         {gib(p.output)}",
           f"  temporaries     {gib(p.temp)}",
           f"  generated code  {gib(p.generated_code)}",
           f"  aliased         {gib(p.alias)}",
           f"  peak estimate   {gib(p.peak)}  (arguments + temporaries + outputs - aliased)"]
  for name, budget in targets:
    room = budget - p.peak / GIB
    verdict = "fits" if room >= 0 else "does NOT fit"
    lines.append(f"{slices.get(name, name)} ({budget:g} GiB/device): {verdict}, "
                 f"headroom {room:+.2f} GiB")
  return "\n".join(lines)
