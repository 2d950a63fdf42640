"""The tiny local tokenizer of the embedded default, and loading a real one (docs/design.md §10).

`build_tiny_tokenizer(texts, out_dir)` trains a byte-level BPE with `tokenizers` on a corpus (the
synthetic world's prompts, traces and answers) and writes `tokenizer.json` plus the transformers
side files into `out_dir`; `load_tokenizer(dir)` loads it, or a real Qwen2.5-VL checkpoint folder,
as a transformers fast tokenizer. Byte-level means any text encodes, even words the corpus never
had.

Ids in the tiny vocabulary differ from Qwen's: the Qwen special tokens come first, in Qwen's
order, so `<|endoftext|>` is 0, `<|im_start|>` 1, `<|im_end|>` 2, `<|vision_start|>` 9,
`<|vision_end|>` 10, `<|image_pad|>` 12 and `<|video_pad|>` 13 (`TINY_SPECIAL_IDS`; Qwen's are
151643, 151644, 151645, 151652, 151653, 151655, 151656). Code never hard-codes either table:
`special_ids(tokenizer)` reads them from the tokenizer. The grounding tags (`<think>`, `<obj>`,
`<box>`, `<t>`, ...) are single non-special tokens in the tiny vocabulary (they stay in decoded
text); a real Qwen tokenizer splits them into several pieces.
"""

from __future__ import annotations

import itertools
import os
from typing import Iterable, Iterator

from vcoach_jax import storage

# Qwen2.5-VL's added special tokens, in the order of their ids there (151643 upwards).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
QWEN_SPECIAL_IDS = {tok: 151643 + i for i, tok in enumerate(QWEN_SPECIAL_TOKENS)}
TINY_SPECIAL_IDS = {tok: i for i, tok in enumerate(QWEN_SPECIAL_TOKENS)}
# The chat template's role names (one token each once the corpus repeats them).
ROLES = ("system", "user", "assistant")
# Grounded-format tags: one token each in the tiny vocabulary.
GROUNDING_TAGS = ("<think>", "</think>", "<answer>", "</answer>", "<obj>", "</obj>", "<box>",
                  "</box>", "<t>", "</t>")


def build_tiny_tokenizer(texts: Iterable[str], out_dir: str, vocab_size: int = 1024) -> str:
  """Trains a byte-level BPE on `texts` and saves it loadable by `load_tokenizer(out_dir)`.

  Args:
    texts: the corpus (any iterable of strings).
    out_dir: folder to write `tokenizer.json`, `tokenizer_config.json` and
      `special_tokens_map.json` into (created if missing).
    vocab_size: target size including the special tokens and the 256 byte symbols.

  Returns:
    The path of `tokenizer.json`.
  """
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top

  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(QWEN_SPECIAL_TOKENS), show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(texts, trainer=trainer)
  tok.add_tokens([tokenizers.AddedToken(tag, normalized=False, special=False)
                  for tag in GROUNDING_TAGS])
  for name, want in TINY_SPECIAL_IDS.items():
    if tok.token_to_id(name) != want:
      raise AssertionError(f"tiny tokenizer put {name} at {tok.token_to_id(name)}, not {want}")
  with storage.local_dir_for(out_dir) as local:  # the files land in out_dir (local or remote)
    tok.save(os.path.join(local, "tokenizer.json"))
    _wrap(os.path.join(local, "tokenizer.json")).save_pretrained(local)
  return os.fspath(storage.path(out_dir) / "tokenizer.json")


def _wrap(tokenizer_file: str):
  from transformers import Qwen2TokenizerFast  # pylint: disable=g-import-not-at-top
  return Qwen2TokenizerFast(
      tokenizer_file=tokenizer_file, unk_token=None, eos_token="<|im_end|>",
      pad_token="<|endoftext|>", errors="replace",
      additional_special_tokens=[t for t in QWEN_SPECIAL_TOKENS if t not in
                                 ("<|endoftext|>", "<|im_end|>")])


def load_tokenizer(path: str):
  """A transformers fast tokenizer from a folder (tiny tokenizer or a real Qwen checkpoint)."""
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  folder = storage.path(path)
  if not folder.is_dir():
    raise FileNotFoundError(f"tokenizer folder {path!r} does not exist")
  if not (folder / "tokenizer.json").exists():
    raise FileNotFoundError(f"tokenizer folder {path!r} has no tokenizer.json")
  with storage.local_copy(folder) as local:  # transformers reads local files only
    return AutoTokenizer.from_pretrained(local, use_fast=True)


def from_config(config, cache_dir: str):
  """`config.data.tokenizer_dir` if set, else the tiny tokenizer of the config's synthetic world
  (built once into `cache_dir`, reused when it is already there)."""
  if config.data.tokenizer_dir:
    return load_tokenizer(config.data.tokenizer_dir)
  if not (storage.path(cache_dir) / "tokenizer.json").exists():
    from vcoach_jax.data import synthetic  # pylint: disable=g-import-not-at-top
    from vcoach_jax.data import chat  # pylint: disable=g-import-not-at-top
    spec = synthetic.WorldSpec.from_config(config.synthetic)
    n = min(config.synthetic.num_train, 600)
    texts = chat.PromptTexts.load(config.prompts_file or None)
    corpus = itertools.chain(synthetic.corpus(spec, n=n),
                             prompt_corpus(texts, spec.tasks, spec.max_frames, n))
    build_tiny_tokenizer(corpus, cache_dir, config.data.tiny_vocab_size)
  return load_tokenizer(cache_dir)


def prompt_corpus(texts, tasks, max_frames: int, n: int) -> Iterator[str]:
  """The fixed wording of `n` prompts (system texts of `tasks` in turn, RL's and SFT's, the chat
  roles, frame labels up to `max_frames`, duration lines, hints), so the tiny tokenizer merges it into few tokens: the
  prompts it sees in training are then short, which makes every step cheaper."""
  hints = [h for h in texts.hints.values() if h]
  sft = texts.for_sft()  # cold-start SFT's wording (the file's `sft` overrides)
  for i in range(n):
    yield texts.system[tasks[i % len(tasks)]]
    yield sft.system[tasks[i % len(tasks)]]
    yield "\n".join(ROLES)
    frames = 2 + 2 * (i % max(1, max_frames // 2))
    yield "\n".join(texts.frame_label.format(index=k + 1, time=k / 2) for k in range(frames))
    yield texts.key_frame_label.format(index=i % (frames + 2) + 1, time=i % 5)
    yield texts.duration_line.format(seconds=frames / 2) + " " + texts.image_label
    if hints:
      yield hints[i % len(hints)]


def special_ids(tokenizer) -> dict[str, int]:
  """{'<|image_pad|>': id, ...} for the Qwen special tokens of `tokenizer`; raises if one is missing."""
  out = {}
  for name in QWEN_SPECIAL_TOKENS:
    i = tokenizer.convert_tokens_to_ids(name)
    if i is None or i == tokenizer.unk_token_id:
      raise ValueError(f"tokenizer has no {name} token")
    out[name] = int(i)
  return out


def check_vision_ids(tokenizer, model_config, where: str) -> None:
  """Raises when the tokenizer's vision token ids are not those of `model_config` (a tokenizer
  and a checkpoint from different models); `where` names the checkpoint in the message."""
  specials = special_ids(tokenizer)
  for token, model_id in (("<|image_pad|>", model_config.image_token_id),
                          ("<|vision_start|>", model_config.vision_start_token_id)):
    if specials[token] != model_id:
      raise ValueError(f"{where}: the tokenizer has {token} = {specials[token]} but the model's "
                       f"config says {model_id}; they must come from the same model")
