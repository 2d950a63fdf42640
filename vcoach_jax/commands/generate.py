"""`vcoach generate`: answer a question about a video with a Qwen2.5-VL checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from vcoach_jax import config as config_lib

HELP = "answer a question about a video with a checkpoint (grounded reasoning + answer)"
DESCRIPTION = """\
Answer a question about a video with a Hugging Face-layout Qwen2.5-VL checkpoint (config.json,
safetensors and the tokenizer files in one folder, e.g. written by `save_hf` or a trained run).

Frames are sampled and resized as in training (the config's `video.*`, docs/design.md §6) and the
prompt is the training prompt of --task (docs/design.md §8.2) on the raw video: no visual prompt, no
hint. Decoding is greedy unless --sample or --num-samples > 1, which use the config's
`sampling.*` (temperature, top-p, top-k). The completion (reasoning with grounded claims, then
the answer) is printed to stdout, one block per sample.

examples:
  vcoach generate --checkpoint ckpt/ --video clip.mp4 --question "What does the man pick up?"
  vcoach generate --checkpoint ckpt/ --video clip.mp4 --question "..." --num-samples 4 --seed 1
  vcoach generate --checkpoint ckpt/ --video clip.mp4 --question "..." --set video.max_frames=8
"""

DEFAULT_TASK = "temporal-spatial free-form QA"


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--checkpoint", required=True, metavar="DIR",
                      help="HF Qwen2.5-VL folder with config.json, safetensors, tokenizer.json")
  parser.add_argument("--video", required=True, metavar="PATH", help="the video file")
  parser.add_argument("--question", required=True, help="the question, used verbatim")
  parser.add_argument("--task", default=DEFAULT_TASK,
                      help=f"task whose system prompt is used (default: {DEFAULT_TASK!r})")
  parser.add_argument("--num-samples", type=int, default=1, metavar="N",
                      help="completions to draw (N > 1 samples instead of greedy decoding)")
  parser.add_argument("--sample", action="store_true",
                      help="sample with the config's sampling.* settings even for one completion")
  parser.add_argument("--max-new-tokens", type=int, default=0, metavar="N",
                      help="completion length limit (default: sampling.max_new_tokens)")
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed for sampling")
  config_lib.add_config_flags(parser)


def run(args: argparse.Namespace) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import chat  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.data import video as video_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import build  # pylint: disable=g-import-not-at-top
  from vcoach_jax.model import prepare_inputs  # pylint: disable=g-import-not-at-top
  from vcoach_jax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.sampling import Sampler, SamplingConfig  # pylint: disable=g-import-not-at-top

  config = config_lib.load(args.config, args.overrides)
  if args.num_samples < 1:
    raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
  if not os.path.isdir(args.checkpoint):
    raise FileNotFoundError(f"checkpoint folder {args.checkpoint!r} does not exist")
  texts = chat.PromptTexts.from_config(config)
  if args.task not in texts.system:
    raise ValueError(f"--task {args.task!r} is unknown; expected one of {list(texts.system)}")
  tokenizer = tokenizer_lib.load_tokenizer(args.checkpoint)
  video = video_lib.decode_video(args.video, video_lib.VideoSpec.from_config(config.video))

  with config.unlocked():
    config.model.checkpoint = args.checkpoint
  model, mesh = build.from_config(config)
  tokenizer_lib.check_vision_ids(tokenizer, model.config, args.checkpoint)

  prompt = chat.build_video_prompt(args.task, args.question, list(video.frames),
                                   [float(t) for t in video.timestamps], video.duration, texts,
                                   sample_fps=video.sample_fps)
  inputs = prepare_inputs(model.config, chat.Processor(tokenizer)(prompt))
  sampling = SamplingConfig.from_config(config.sampling)
  sampling = dataclasses.replace(
      sampling, num_samples=args.num_samples,
      greedy=not (args.sample or args.num_samples > 1),
      max_new_tokens=args.max_new_tokens or sampling.max_new_tokens)
  h, w = video.frames.shape[1:3]
  print(f"video {args.video}: {len(video.frames)} frames of {h}x{w} (HxW) over "
        f"{video.duration:.1f} s; prompt {inputs.input_ids.shape[1]} tokens; "
        f"{'greedy' if sampling.greedy else 'sampling'}, up to {sampling.max_new_tokens} tokens",
        file=sys.stderr)
  sampler = Sampler(model, tokenizer, mesh, batch_buckets=(1,),
                    rules=mesh_lib.rules_from_config(config.parallel.rules))
  rollouts = sampler.generate(inputs, sampling, jax.random.key(args.seed))
  for j, text in enumerate(rollouts.texts):
    if len(rollouts.texts) > 1:
      print(f"--- sample {j + 1} ({int(rollouts.mask[j].sum())} tokens) ---")
    print(text)
  return 0
