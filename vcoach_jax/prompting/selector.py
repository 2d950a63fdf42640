"""The VP-Selector (docs/design.md §8.6): which visual prompt helps a hard sample.

Two forms share one module, one head and one training loop:

  text (reference)  instruction + question + the record's key object names (sorted, comma-joined)
                    -> the Qwen2.5 text decoder with LoRA (the vision tower is dropped)
  vl (paper)        the sample's video prompt (frames + question, the selector instruction as the
                    system text) -> Qwen2.5-VL with LoRA

In both, the final hidden state of the last non-pad token goes through a linear head to one logit
per class (`config.selector.types`, class 0 = `raw`). Only the LoRA adapters and the head train
(cross-entropy) on the trainers' machinery (`rl/update.py`: train state, AdamW of `rl/optim.py`,
non-finite guard, stated shardings); the checkpoint (`checkpointing.Checkpointer`) holds just
those plus a small meta JSON.

Predictions go to a cache `{record_id: type}` (JSON) that the RL trainer reads (`choose`);
`load_cache` also reads a cache written by the released code (`cache_labels`).

  sel = Selector(backbone, num_classes=2, text_only=True)
  history = fit(sel, make_inputs, labels, steps=100, batch_size=8, lr=1e-4)
  probs = predict(sel, inputs)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding

from vcoach_jax import storage
from vcoach_jax.model.qwen2_5_vl import ModelInputs, Qwen2_5_VL
from vcoach_jax.shapes import pow2
from vcoach_jax.parallel import mesh as mesh_lib
from vcoach_jax.parallel.rules import DEFAULT_RULES
from vcoach_jax.rl import optim, update

# What trains: the LoRA adapters of the backbone and the head.
TRAINABLE = nnx.Any(nnx.LoRAParam, nnx.PathContains("head"))
META_FILE = "selector.json"
# The selector's input forms (`config.selector.mode`): name -> text only (the vision tower dropped).
MODES = {"text": True, "vl": False}


# ---------------------------------------------------------------------------------------------
# Input text (text form).


@dataclasses.dataclass(frozen=True)
class SelectorTexts:
  """The selector's wording (`selector_instruction`, `selector_input` in the prompts file)."""
  instruction: str
  template: str  # placeholders {instruction}, {question}, {objects}

  @classmethod
  def load(cls, path: str | None = None) -> "SelectorTexts":
    from vcoach_jax.data import chat  # pylint: disable=g-import-not-at-top
    path = path or chat.DEFAULT_PROMPTS_FILE
    chat.PromptTexts.load(path)  # the same file must also be a valid prompts file
    raw = json.loads(storage.read_text(path))
    for key in ("selector_instruction", "selector_input"):
      if not isinstance(raw.get(key), str):
        raise ValueError(f"prompts file {path!r} has no {key!r} text")
    return cls(raw["selector_instruction"], raw["selector_input"])


def object_names(record: Mapping[str, Any]) -> str:
  """The record's key object names, distinct, sorted and comma-joined."""
  items = record.get("key_items") or {}
  if isinstance(items, (str, bytes)):
    items = json.loads(items)
  return ", ".join(sorted({name for objects in items.values() if objects for name in objects}))


def input_text(record: Mapping[str, Any], texts: SelectorTexts) -> str:
  """The text form's input for one record."""
  question = record["question"]
  question = question.decode("utf-8") if isinstance(question, bytes) else str(question)
  return texts.template.format(instruction=texts.instruction, question=question,
                               objects=object_names(record))


def text_batch(token_lists: Sequence[Sequence[int]], pad_id: int, max_length: int
               ) -> dict[str, np.ndarray]:
  """Left-padded `input_ids` / `attention_mask` [B, L]; L = the next power of two >= the longest
  row (at most `max_length`); longer rows keep their last `max_length` tokens."""
  rows = [list(r)[-max_length:] for r in token_lists]
  length = min(pow2(max(len(r) for r in rows)), max_length)
  ids = np.full((len(rows), length), pad_id, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    if r:
      ids[i, -len(r):], mask[i, -len(r):] = r, 1
  return {"input_ids": ids, "attention_mask": mask}


def text_inputs_fn(records: Sequence[Mapping[str, Any]], tokenizer, texts: SelectorTexts,
                   model_config, max_length: int) -> Callable[[np.ndarray], ModelInputs]:
  """`make_inputs(indices) -> ModelInputs` of the text form over `records` (tokenised once)."""
  from vcoach_jax.model import batching  # pylint: disable=g-import-not-at-top
  tokens = [tokenizer(input_text(r, texts), add_special_tokens=False)["input_ids"]
            for r in records]
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

  def make_inputs(indices: np.ndarray) -> ModelInputs:
    arrays = text_batch([tokens[i] for i in indices], pad, max_length)
    return batching.batch_inputs(model_config, arrays)
  return make_inputs


def vl_texts(texts, instruction: str):
  """The policy's prompt texts with the selector instruction as every task's system text."""
  return dataclasses.replace(texts, system={task: instruction for task in texts.system})


def vl_inputs_fn(examples: Sequence[Mapping[str, Any]], processor, texts, shapes, model_config
                 ) -> Callable[[np.ndarray], ModelInputs]:
  """`make_inputs(indices)` of the VL form: each decoded example's raw video prompt (docs/design.md
  §8.2) with the selector instruction as system text (`vl_texts`), in fixed-shape batches."""
  from vcoach_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import batching  # pylint: disable=g-import-not-at-top
  items = [pipeline.encode_example(e, processor, texts, shapes) for e in examples]
  pad = processor.tokenizer.pad_token_id
  pad = int(pad if pad is not None else 0)

  def make_inputs(indices: np.ndarray) -> ModelInputs:
    batch = pipeline.collate([items[i] for i in indices], shapes, pad)
    return batching.batch_inputs(model_config, batch.arrays)
  return make_inputs


# ---------------------------------------------------------------------------------------------
# The model.


class Selector(nnx.Module):
  """Backbone (a `Qwen2_5_VL`) + linear head over the last non-pad token's final hidden state."""

  def __init__(self, backbone: Qwen2_5_VL, num_classes: int, *, text_only: bool,
               rngs: nnx.Rngs | None = None):
    rngs = rngs or nnx.Rngs(0)
    if text_only:
      backbone.visual = None  # the reference form reads text only; free the vision tower
    backbone.lm_head = None  # token logits are never needed (with tied embeddings it is None)
    self.backbone = backbone
    self.head = nnx.Linear(backbone.config.hidden_size, num_classes, rngs=rngs)
    self.num_classes = num_classes
    self.text_only = text_only

  def hidden(self, inputs: ModelInputs) -> jax.Array:
    """[B, D] final (normed) hidden state of each row's last non-pad token."""
    h = self.backbone.hidden_states(inputs)
    valid = inputs.attention_mask.astype(bool)
    t = h.shape[1]
    last = t - 1 - jnp.argmax(valid[:, ::-1], axis=1)  # [B]
    return jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]

  def __call__(self, inputs: ModelInputs) -> jax.Array:
    """[B, num_classes] fp32 logits."""
    return self.head(self.hidden(inputs).astype(jnp.float32))


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, inputs: ModelInputs) -> jax.Array:
  return nnx.merge(graphdef, state)(inputs)


def predict(selector: Selector, inputs: ModelInputs) -> np.ndarray:
  """[B, num_classes] class probabilities."""
  graphdef, state = nnx.split(selector)
  return np.asarray(jax.nn.softmax(_logits(graphdef, state, inputs), axis=-1))


# ---------------------------------------------------------------------------------------------
# Training.


class Batch(NamedTuple):
  inputs: ModelInputs  # [B] prompts
  labels: jax.Array  # [B] int32 class of each prompt


def selector_loss(model: Selector, batch: Batch):
  """(mean cross-entropy, metrics: accuracy)."""
  logits = model(batch.inputs)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.labels)
  return ce.mean(), {"accuracy": (jnp.argmax(logits, -1) == batch.labels).mean()}


def _mesh_of(selector: Selector):
  """The mesh the selector was placed on (`from_config`), else a one-device mesh."""
  leaves = jax.tree.leaves(nnx.state(selector))
  mesh = next((x.sharding.mesh for x in leaves if isinstance(x.sharding, NamedSharding)), None)
  return mesh or mesh_lib.make_mesh({}, devices=[next(iter(leaves[0].devices()))])


def train_setup(selector: Selector, *, lr: float, weight_decay: float = 0.01, steps: int,
                batch_size: int):
  """(jitted update, graphdef, TrainState) of the selector on the trainers' machinery
  (`rl/update.py`): its LoRA adapters and head as the train state's params, AdamW of
  `rl/optim.py` (decay by name, constant lr, no clipping), the non-finite guard, and one
  `jax.jit` with the shardings of its mesh stated."""
  o = ml_collections.ConfigDict(dict(
      lr=lr, weight_decay=weight_decay, b1=0.9, b2=0.999, eps=1e-8, clip_norm=float("inf"),
      schedule="constant", warmup_steps=0, total_steps=steps))
  tx = optim.make_optimizer(o)
  mesh = _mesh_of(selector)
  graphdef, state = update.init_train_state(selector, tx, mesh=mesh, trainable=TRAINABLE)
  fn = update.update_fn(graphdef, lambda model, aux, batch: selector_loss(model, batch), tx,
                        optim.learning_rate_schedule(o))
  rules = DEFAULT_RULES
  sh = Batch(update.inputs_shardings(batch_size, mesh, rules),
             update.rows_sharding(batch_size, 1, mesh, rules))
  # Not donated: the frozen backbone in the state is the selector module's own (and its clones').
  jitted = update.jit_update(fn, mesh=mesh, state=state, batch_shardings=sh, rules=rules,
                             donate=False)
  return jitted, graphdef, state


def index_batches(n: int, batch_size: int, seed: int = 0):
  """Endless full batches of indices into n items: shuffled epochs, wrapping across epochs."""
  if n == 0:
    raise ValueError("no training examples")
  rng = np.random.default_rng(seed)
  pool = np.zeros((0,), np.int64)
  while True:
    while len(pool) < batch_size:
      pool = np.concatenate([pool, rng.permutation(n)])
    yield pool[:batch_size]
    pool = pool[batch_size:]


def fit(selector: Selector, make_inputs: Callable[[np.ndarray], ModelInputs], labels: np.ndarray,
        *, steps: int, batch_size: int, lr: float, weight_decay: float = 0.01, seed: int = 0,
        on_step: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
  """Trains `steps` updates on batches `make_inputs(indices)` with `labels[indices]`."""
  labels = np.asarray(labels, np.int64)
  if labels.min() < 0 or labels.max() >= selector.num_classes:
    raise ValueError(f"labels must be in [0, {selector.num_classes}), got {np.unique(labels)}")
  jitted, _, state = train_setup(selector, lr=lr, weight_decay=weight_decay, steps=steps,
                                 batch_size=batch_size)
  history = []
  for step, idx in zip(range(steps), index_batches(len(labels), batch_size, seed)):
    batch = Batch(make_inputs(idx), np.asarray(labels[idx], np.int32))
    state, metrics = jitted(state, None, batch, jax.random.key(step))
    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
    history.append(metrics)
    if on_step is not None:
      on_step(step, metrics)
  trained = nnx.state(selector, TRAINABLE)
  nnx.update(selector, jax.tree.map(lambda new, old: new.astype(old.dtype), state.params,
                                    trained))
  return history


def predict_all(selector: Selector, make_inputs: Callable[[np.ndarray], ModelInputs], n: int,
                batch_size: int) -> np.ndarray:
  """[n, num_classes] probabilities, in fixed-size batches (the last one padded by repetition)."""
  out = []
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    padded = np.concatenate([idx, np.full(batch_size - len(idx), idx[-1])])
    out.append(predict(selector, make_inputs(padded))[:len(idx)])
  return np.concatenate(out) if out else np.zeros((0, selector.num_classes), np.float32)


def from_config(config, tokenizer, workdir: str | os.PathLike, seed: int = 0) -> Selector:
  """The selector of `config.selector`: its backbone (`selector.backbone`, else the model of
  `config.model`, via `experiment.policy`) with fresh LoRA adapters and head, on the config's
  mesh."""
  from vcoach_jax import experiment  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import lora  # pylint: disable=g-import-not-at-top
  from vcoach_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  s = config.selector
  local = config.copy_and_resolve_references()
  with local.unlocked():
    local.model.lora_rank = 0
    if s.backbone:
      local.model.checkpoint = s.backbone
  model, mesh = experiment.policy(local, tokenizer, workdir, seed)
  lora.apply_lora(model, rank=s.lora_rank, alpha=s.lora_alpha,
                  targets=tuple(config.model.lora_targets), rngs=nnx.Rngs(seed + 1))
  selector = Selector(model, len(s.types), text_only=MODES[s.mode], rngs=nnx.Rngs(seed + 2))
  mesh_lib.shard_model(selector, mesh, mesh_lib.rules_from_config(config.parallel.rules))
  return selector


# ---------------------------------------------------------------------------------------------
# Checkpoints and the prediction cache.


def save(selector: Selector, directory: str | os.PathLike, meta: Mapping[str, Any]) -> None:
  """Writes the trainable params (DIR/params, a `checkpointing.Checkpointer` step with its
  checksums) and `meta` (DIR/selector.json)."""
  from vcoach_jax import checkpointing  # pylint: disable=g-import-not-at-top
  directory = storage.path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  ckpt = checkpointing.Checkpointer(directory / "params", keep=1)
  try:
    latest = ckpt.latest_step()  # a second save into the same folder is the next step
    ckpt.save(0 if latest is None else latest + 1,
              nnx.to_pure_dict(nnx.state(selector, TRAINABLE)), jax.random.key(0))
  finally:
    ckpt.close()
  meta = dict(meta, num_classes=selector.num_classes, text_only=selector.text_only)
  storage.write_text(directory / META_FILE, json.dumps(meta, indent=1, sort_keys=True))


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
  path = storage.path(directory) / META_FILE
  if not path.exists():
    raise FileNotFoundError(f"selector checkpoint {str(directory)!r} has no {META_FILE}")
  return json.loads(path.read_text())


def restore(selector: Selector, directory: str | os.PathLike) -> dict[str, Any]:
  """Loads trainable params written by `save` into `selector` (same shapes); returns the meta."""
  directory = storage.path(directory)
  meta = read_meta(directory)
  if meta["num_classes"] != selector.num_classes or meta["text_only"] != selector.text_only:
    raise ValueError(f"selector checkpoint {str(directory)!r} has {meta['num_classes']} classes "
                     f"(text_only={meta['text_only']}); the config builds {selector.num_classes} "
                     f"(text_only={selector.text_only})")
  from vcoach_jax import checkpointing  # pylint: disable=g-import-not-at-top
  state = nnx.state(selector, TRAINABLE)
  ckpt = checkpointing.Checkpointer(directory / "params", keep=1)
  try:
    restored = ckpt.restore(nnx.to_pure_dict(state)).state
  finally:
    ckpt.close()
  nnx.replace_by_pure_dict(state, restored)
  nnx.update(selector, state)
  return meta


def write_cache(path: str | os.PathLike, labels: Mapping[str, str]) -> None:
  """The prediction cache: JSON {record_id: prompt type}."""
  storage.write_text(path, json.dumps(dict(labels), indent=0, sort_keys=True))


# The released code's cache values: its binary selector's class (0 = raw, 1 = darken) or its
# names of the prompt types, which are this project's under other names.
RELEASED_CLASSES = {0: "raw", 1: "darken"}
RELEASED_NAMES = {"numpro": "numbers", "api_prompt": "attention"}


def cache_labels(cache: Mapping[str, Any], where: str = "selector cache") -> dict[str, str]:
  """{record_id: prompt type} of a cache in this project's form ({id: type}) or the released
  code's ({id: 0 | 1}, or its type names `numpro`, `api_prompt`); refuses anything else."""
  from vcoach_jax.prompting import visual_prompts  # pylint: disable=g-import-not-at-top
  if not isinstance(cache, dict):
    raise ValueError(f"{where}: expected a JSON object {{record id: prompt type}}, got "
                     f"{type(cache).__name__}")
  out = {}
  for rid, label in cache.items():
    if isinstance(label, int) and not isinstance(label, bool) and label in RELEASED_CLASSES:
      out[str(rid)] = RELEASED_CLASSES[label]
    elif isinstance(label, str) and RELEASED_NAMES.get(label, label) in visual_prompts.PROMPT_TYPES:
      out[str(rid)] = RELEASED_NAMES.get(label, label)
    else:
      raise ValueError(f"{where}: record id {rid!r} has type {label!r}; expected one of "
                       f"{visual_prompts.PROMPT_TYPES}, the released classes 0 (raw) / 1 (darken), "
                       f"or the released names {sorted(RELEASED_NAMES)}")
  return out


def load_cache(path: str | os.PathLike) -> dict[str, str]:
  """Reads a prediction cache (this project's form or the released code's: `cache_labels`)."""
  path = storage.path(path)
  if not path.exists():
    raise FileNotFoundError(f"selector cache {str(path)!r} does not exist")
  return cache_labels(json.loads(path.read_text()), f"selector cache {str(path)!r}")


# Where the RL trainer takes a hard prompt's visual prompt from (`config.rl.prompt_selector`):
# name -> fn(config) -> {record_id: prompt type} (`choose` gives `raw` for an id not in it).
PROMPT_SELECTORS: dict[str, Callable[[Any], dict[str, str]]] = {
    "cache": lambda config: load_cache(config.selector.cache) if config.selector.cache else {},
    "off": lambda config: {},  # every hard prompt gets `raw` (the hint only)
}


def prompt_cache(config) -> dict[str, str]:
  """{record_id: prompt type} the RL trainer reads, by `config.rl.prompt_selector`."""
  return PROMPT_SELECTORS[config.rl.prompt_selector](config)


def choose(cache: Mapping[str, str] | None, record_id: str, has_key_items: bool = True) -> str:
  """The prompt type of a hard sample (docs/design.md §8.4.2): `raw` with no selector, no key items
  or an unknown id."""
  if not cache or not has_key_items:
    return "raw"
  return cache.get(str(record_id), "raw")
