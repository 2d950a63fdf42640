"""Cold-start SFT (docs/design.md §8.8), top to bottom: the grounded traces of the data stream,
token cross-entropy on the assistant turn (a share `sft.prompted` of them shown with a visual
prompt: `sft/prompted.py`), on the RL trainer's train state, optimizer, jitted
update, checkpoints and metrics.

  run = setup(config, workdir)          # mesh -> model -> data -> train state -> jitted update
  result = fit(run, config.sft.steps, resume=True)
  run.export(workdir / "policy")        # HF layout + tokenizer: the RL run's starting point
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import ml_collections
from flax import nnx

from vcoach_jax import experiment
from vcoach_jax import storage
from vcoach_jax import training_loop
from vcoach_jax.model import hf_checkpoint
from vcoach_jax.parallel import mesh as mesh_lib
from vcoach_jax.rl import hosts
from vcoach_jax.rl import placement
from vcoach_jax.sft import prompted
from vcoach_jax.sft import step as sft_step


@dataclasses.dataclass
class Run:
  """An SFT run; `session` carries the train state and rng."""
  config: ml_collections.ConfigDict
  parts: experiment.Parts  # tokenizer, policy model, mesh, prompt texts
  pipe: Any  # data.pipeline.Pipeline with the SFT's texts
  step: sft_step.Step  # the jitted update
  session: training_loop.Session
  prompting: prompted.Plan | None  # which examples are shown prompted (None: none)
  box_ids: tuple[int, int] | None = None  # token ids of `<box>`, `</box>` (None: not single tokens)
  placer: placement.Placer | None = None  # places each process's own rows' pixels (several processes)

  @property
  def writer(self):
    return self.session.writer

  def policy(self) -> nnx.Module:
    """The current policy as a model (parameters are the train state's)."""
    return nnx.merge(self.step.graphdef, self.session.state.params, self.session.state.frozen)

  def export(self, path: storage.PathLike) -> storage.Path:
    """Writes the policy in the HF layout with its tokenizer (LoRA merged)."""
    hf_checkpoint.save_hf(self.policy(), path, tokenizer=self.parts.tokenizer)
    return storage.path(path)


def setup(config: ml_collections.ConfigDict, workdir: str, *, seed: int = 0,
          progress: bool = True) -> Run:
  """Builds an SFT run from a config and a work folder (nothing is trained yet)."""
  # 1. Mesh, tokenizer, policy.
  parts = experiment.build(config, workdir, seed)
  # 2. Data, with the SFT's texts and key-frame rules. With several processes each reads and
  # encodes only its slice of every global batch (`rl.hosts`).
  rows = (jax.process_index(), jax.process_count()) if jax.process_count() > 1 else None
  pipe = experiment.pipeline(config, parts.tokenizer, workdir, row_slice=rows)
  pipe.texts = pipe.texts.for_sft()
  # 3. Train state on its shardings and the jitted update.
  step, state = sft_step.setup(config, parts.model, parts.mesh)
  # 4. Checkpoints and metrics; the rng is the seed's key (each step folds its index in).
  session = training_loop.open_session(config, workdir, state=state, rng=jax.random.key(seed),
                                       pipe=pipe, schedule_key="sft.steps", desc="sft",
                                       plot_keys=("nll",), progress=progress)
  placer = None if rows is None else placement.Placer(
      parts.mesh, mesh_lib.rules_from_config(config.parallel.rules))
  return Run(config, parts, pipe, step, session, prompted.Plan.from_config(config),
             sft_step.box_tag_ids(parts.tokenizer), placer)


def step(run: Run, index: int) -> dict[str, Any]:
  """One SFT step on the next host batch; returns its metrics."""
  s = run.session
  batch = run.pipe.next_host_batch(prompted.encoder(run.prompting, run.pipe, index))
  s.state, metrics = run.step(s.state, global_batch(run, batch), jax.random.fold_in(s.rng, index))
  out = {k: float(v) for k, v in jax.device_get(metrics).items()}
  out["batch_ids"] = hosts.global_ids(batch)
  out["host_rows"] = len(batch.ids)  # the rows this process read and encoded
  return out


def global_batch(run: Run, batch) -> sft_step.SFTBatch:
  """The step's `SFTBatch` from this process's host batch: with a row slice the small per-row
  arrays are exchanged and each process places its own rows' pixels (`rl.hosts`)."""
  cfg, sft = run.parts.model.config, run.config.sft
  encode = lambda arrays: sft_step.sft_batch(cfg, arrays, sft.loss_on, run.box_ids, sft.box_weight)
  if batch.rows is None:
    return encode(batch.arrays)
  arrays = hosts.global_arrays(batch, run.pipe.pad_id,
                               hosts.SMALL_FIELDS + ("target_ids", "target_mask"))
  host = encode(arrays)
  if host.prompt.pixels is None:
    return host
  return host._replace(prompt=host.prompt._replace(pixels=hosts.own_pixels(batch, run.placer)))


def fit(run: Run, steps: int | None = None, **kw) -> training_loop.LoopResult:
  """Restores (with `resume`) and runs `step` until step `steps` (default: `sft.steps`); keywords:
  `training_loop.fit`'s (resume, reschedule)."""
  return training_loop.fit(run.session, functools.partial(step, run), steps, **kw)


def train(config: ml_collections.ConfigDict, workdir: str,
          **kw) -> tuple[Run, training_loop.LoopResult]:
  """`setup` then `fit`: a whole SFT run; returns the run and how it ended. Keywords:
  `training_loop.train`'s (seed, steps, resume, reschedule, progress)."""
  return training_loop.train(setup, step, config, workdir, **kw)
