"""Writes the notebooks of colabs/ (no outputs) from the cell sources below.

  python colabs/build_notebooks.py          # rewrite colabs/*.ipynb
  python colabs/build_notebooks.py --check  # exit 1 if a committed notebook differs

Edit the cells here, not in the .ipynb files: tests/test_colabs.py checks that the committed
notebooks are what this script writes, then executes each one.
"""

from __future__ import annotations

import pathlib
import sys

import nbformat

HERE = pathlib.Path(__file__).resolve().parent

# Every notebook starts here: work from the repository root (the clip in tests/data and the
# package itself are found from there), whatever folder Jupyter was started in.
SETUP = """\
import os, pathlib, sys

ROOT = pathlib.Path.cwd().resolve()
while not (ROOT / "vcoach_jax" / "__init__.py").is_file() and ROOT != ROOT.parent:
  ROOT = ROOT.parent
if not (ROOT / "vcoach_jax").is_dir():
  raise RuntimeError("run this notebook from inside a vcoach_jax checkout")
os.chdir(ROOT)
sys.path.insert(0, str(ROOT))
os.environ.setdefault("USE_TF", "0")
print("repository:", ROOT)"""

REWARDS = [
    ("md", """\
# Reusing the VisionCoach rewards from JAX code

The seven rewards (`vcoach_jax.rewards`) are split in two halves:

* **host**: completion text is parsed (`parsing`) and the sample's ground truth prepared
  (`targets`), then both are packed into fixed-shape numpy arrays (`packing.pack` -> `RewardBatch`);
* **device**: pure `jax.numpy` kernels score one example (`grounding`, `accuracy`), and
  `kernels.score_batch` is their `jit(vmap(...))` over the batch.

`rewards.compute(completions, samples, options)` runs both halves and is exact to the authors'
released code. Below: `compute` on the example completions shipped with the package, then the
packed kernels used directly from our own jitted code, checked against `compute`, and the speed of
one batched call against scoring one completion at a time. Runs on CPU in well under a minute."""),
    ("code", SETUP),
    ("code", """\
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import vcoach_jax
from vcoach_jax import rewards
from vcoach_jax.rewards import grounding, kernels, packing, parsing, targets

# The paper run's reward options (configs/default.py `rewards.*`).
OPTIONS = {"spatial_iou_mode": "avg", "identity_match_mode": "soft",
           "spatial_norm_mode": "matched", "correct_tempgate": True}
path = pathlib.Path(vcoach_jax.__file__).parent / "assets" / "example_completions.jsonl"
cases = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
texts = [c["completion"] for c in cases]
print(f"{len(cases)} example completions over {len({c['task'] for c in cases})} tasks")
print(texts[0])"""),
    ("md", "## 1. `rewards.compute`: strings in, one float array per reward out"),
    ("code", """\
scores = rewards.compute(texts, cases, OPTIONS)
total = rewards.total(scores, [c["task"] for c in cases])
short = {"ans_acc": "acc", "ans_tiou": "tIoU", "ans_viou": "vIoU", "thk_temporal_point": "t-pt",
         "thk_temporal_segment": "t-seg", "thk_spatial": "spat", "format": "fmt"}
print(f"{'id':22s}" + "".join(f"{short[n]:>6s}" for n in rewards.REWARD_NAMES) + "  total")
for i, c in enumerate(cases):
  row = "".join(f"{scores[n][i]:6.2f}" for n in rewards.REWARD_NAMES)
  print(f"{c['id']:22s}{row}  {total[i]:5.2f}")"""),
    ("md", """\
## 2. The packed batch and the kernels, from our own jitted code

`packing.pack` turns N parsed completions and their targets into a `RewardBatch` of fixed shapes
(rows padded to a power of two, slots to the `Shapes` defaults), plus the host-side flags of the
cases where the reference code would raise (those score 0)."""),
    ("code", """\
parsed = [parsing.parse_completion(t) for t in texts]
truth = [targets.prepare(c, i) for i, c in enumerate(cases)]
batch, flags, grown = packing.pack(parsed, truth, OPTIONS, packing.Shapes())
n = len(cases)
for name, value in batch._asdict().items():
  print(f"{name:15s}", jax.tree.map(lambda x: x.shape, value))"""),
    ("md", """\
Any per-example kernel vmaps and jits like any JAX function. Here the temporal-segment reward
(fraction of the times cited in `<think>` that fall inside the ground-truth segment), and a
function of our own that sums the three grounding rewards of `kernels.score_batch` inside our
own `jit`. Float64 (`jax.enable_x64`) gives the reference's exact values."""),
    ("code", """\
segment_reward = jax.jit(jax.vmap(grounding.temporal_segment_reward))

@jax.jit
def grounding_sum(b: packing.RewardBatch) -> jax.Array:
  r = kernels.score_batch(b, correct_tempgate=True, iou_avg=True, norm_matched=True)
  return r["thk_temporal_point"] + r["thk_temporal_segment"] + r["thk_spatial"]

with jax.enable_x64(True):
  seg = np.asarray(segment_reward(batch.times, batch.time_mask, batch.segment))[:n]
  device = {k: np.asarray(v)[:n] for k, v in kernels.score_batch(
      batch, correct_tempgate=True, iou_avg=True, norm_matched=True).items()}
  mine = np.asarray(grounding_sum(batch))[:n]

# The kernel's value where the task scores this reward and the reference would not raise.
seg = np.where(np.asarray(batch.segment_active)[:n] & ~flags.segment_raised, seg, 0.0)
raised = {"thk_temporal_point": flags.point_raised, "thk_temporal_segment": flags.segment_raised,
          "thk_spatial": flags.spatial_raised | device["spatial_raised"]}
worst = 0.0
for name in ("ans_tiou", "ans_viou", "thk_temporal_point", "thk_temporal_segment", "thk_spatial"):
  value = np.where(raised.get(name, False), 0.0, device[name])
  worst = max(worst, float(np.abs(value - scores[name]).max()))
print("max |kernels - compute| over the five device rewards:", worst)
seg_ok = np.allclose(seg, scores["thk_temporal_segment"], atol=1e-12)
print("vmapped segment reward == compute:", seg_ok)
no_raise = ~(flags.point_raised | flags.segment_raised | raised["thk_spatial"])
expected = sum(scores[k] for k in ("thk_temporal_point", "thk_temporal_segment", "thk_spatial"))
sum_ok = np.allclose(mine[no_raise], expected[no_raise], atol=1e-12)
print("our jitted grounding sum == compute:", sum_ok)
assert worst <= 1e-6 and seg_ok and sum_ok"""),
    ("md", """\
## 3. One batched call vs one completion at a time

A batch of 1024 completions (the examples repeated) is scored by one `compute` call — one host
packing pass and one device dispatch — and, as the baseline, the first 64 of them one per call.
Both are timed after a warm-up call that compiles their shapes."""),
    ("code", """\
N, ONE_BY_ONE = 1024, 64
many_texts = [texts[i % n] for i in range(N)]
many_cases = [cases[i % n] for i in range(N)]

rewards.compute(many_texts, many_cases, OPTIONS)  # warm-up: compiles the 1024-row program
for t, c in zip(many_texts[:n], many_cases[:n]):  # and the 1-row ones
  rewards.compute([t], [c], OPTIONS)

t0 = time.perf_counter()
batched = rewards.compute(many_texts, many_cases, OPTIONS)
t_batch = time.perf_counter() - t0
t0 = time.perf_counter()
single = [rewards.compute([t], [c], OPTIONS)
          for t, c in zip(many_texts[:ONE_BY_ONE], many_cases[:ONE_BY_ONE])]
t_one = time.perf_counter() - t0

for name in rewards.REWARD_NAMES:  # the same values either way
  assert np.array_equal(batched[name][:ONE_BY_ONE], np.concatenate([s[name] for s in single]))
rate_batch, rate_one = N / t_batch, ONE_BY_ONE / t_one
print(f"batched    : {rate_batch:9.0f} completions/s ({N} in {t_batch:.3f} s)")
print(f"one by one : {rate_one:9.0f} completions/s ({ONE_BY_ONE} in {t_one:.3f} s)")
print(f"speed-up   : {rate_batch / rate_one:.1f}x")"""),
    ("code", """\
# The device half alone: the packed 1024-row batch through the jitted kernels.
many_parsed = [parsing.parse_completion(t) for t in many_texts]
many_truth = [targets.prepare(c, i) for i, c in enumerate(many_cases)]
big, _, _ = packing.pack(many_parsed, many_truth, OPTIONS, packing.Shapes())
with jax.enable_x64(True):
  jax.block_until_ready(grounding_sum(big))
  t0 = time.perf_counter()
  jax.block_until_ready(grounding_sum(big))
  print(f"kernels only: {N / (time.perf_counter() - t0):,.0f} completions/s "
        f"(compiled reward programs so far: {kernels.compiled_programs()})")"""),
]

VISUAL_PROMPTS = [
    ("md", """\
# Visual prompts

VisionCoach coaches a hard sample by drawing a *visual prompt* on its key frames and appending a
textual *hint* to the question (docs/design.md §8.4-8.5). `vcoach_jax.prompting.visual_prompts` has the
four prompt types — `darken` (everything outside the key objects' boxes dimmed, the reference's
arithmetic), `circle` (a red ellipse around each box), `numbers` (the frame's position in the
prompt), `attention` (a warm heat map over each box) — as pure numpy on uint8 frames.

Here: decode a real clip as training does, write an STGR record by hand with three key frames and
their boxes, draw every prompt type on them, show the results and the hint texts, and build the
prompted chat prompt the policy would see."""),
    ("code", SETUP),
    ("code", """\
import numpy as np
from IPython.display import display
from PIL import Image

from vcoach_jax import config as config_lib
from vcoach_jax.data import chat, records, tfds_stgr
from vcoach_jax.data import video as video_lib
from vcoach_jax.plots import contact_sheet
from vcoach_jax.prompting import hints
from vcoach_jax.prompting import visual_prompts as vp

config = config_lib.load()  # the embedded default
spec = video_lib.VideoSpec.from_config(config.video)
clip = ROOT / "tests" / "data" / "example_22s_640x360.mp4"
video = video_lib.decode_video(str(clip), spec)
h, w = video.frames.shape[1:3]
print(f"{clip.name}: {video.duration:.1f} s; {len(video.frames)} frames sampled at "
      f"{[round(float(t), 1) for t in video.timestamps]} s, resized to {w}x{h}")
strip = contact_sheet([list(video.frames[:8]), list(video.frames[8:16])])
display(Image.fromarray(strip).reduce(2))"""),
    ("md", """\
## A record written by hand

Key frames are frame indices of the original video (22.29 fps) with their times; `key_items`
gives each key frame's objects with boxes as normalised `[x1, y1, x2, y2]`."""),
    ("code", """\
record = records.validate_record({
    "id": "colab/pool-and-bowling", "task": "temporal-spatial free-form QA",
    "video_path": clip.name,
    "question": "Which ball is rolled into the pins, and where is it?",
    "answer": "the red bowling ball",
    "key_frames": [{"idx": 45, "time": 2.02, "path": ""}, {"idx": 156, "time": 7.0, "path": ""},
                   {"idx": 290, "time": 13.01, "path": ""}],
    "key_items": {
        "45": {"yellow ball": [[0.56, 0.36, 0.61, 0.44]],
               "racked balls": [[0.61, 0.48, 0.83, 0.55]]},
        "156": {"player": [[0.02, 0.03, 0.17, 0.50]], "yellow ball": [[0.80, 0.75, 0.86, 0.84]]},
        "290": {"bowling ball": [[0.55, 0.54, 0.64, 0.70]], "pins": [[0.32, 0.44, 0.84, 0.72]]},
    },
})
example = tfds_stgr.decode_record(record, {"": str(clip.parent)}, spec)
key_frames = example["key_frames"]
key_pos, frame_pos = hints.frame_positions(example)
print(f"{len(key_frames)} key frames of {key_frames.shape[2]}x{key_frames.shape[1]} px, "
      f"inserted at positions {key_pos} of the prompt's frame list")"""),
    ("md", "## Every prompt type on every key frame (rows: key frames; columns: " +
           ", ".join(["raw", "darken", "circle", "numbers", "attention"]) + ")"),
    ("code", """\
options = hints.PromptOptions.from_config(config.prompting)
drawn = {kind: vp.prompt_key_frames(record, key_frames, kind, key_pos,
                                    per_key_frame_boxes=options.per_key_frame_boxes,
                                    darken_factor=options.darken_factor,
                                    darken_pad=options.darken_pad)
         for kind in vp.PROMPT_TYPES}
sheet = contact_sheet([[drawn[kind][k] for kind in vp.PROMPT_TYPES]
                       for k in range(len(key_frames))])
print("prompt types:", ", ".join(vp.PROMPT_TYPES))
display(Image.fromarray(sheet))"""),
    ("code", """\
# Each renderer is a plain function of frames and per-frame boxes: here `darken` with the
# released helper's constants and its known values (outside the padded boxes: pixel * 0.3,
# truncated; inside: unchanged).
boxes = vp.key_frame_boxes(record)
dark = vp.darken(key_frames, boxes, factor=0.3, pad=10)
inside = vp.darken_mask(*vp.pad_boxes(boxes, len(key_frames)), *key_frames.shape[1:3], pad=10)
outside_ok = np.array_equal(dark[~inside], (key_frames[~inside] * 0.3).astype(np.uint8))
inside_ok = np.array_equal(dark[inside], key_frames[inside])
print(f"{(~inside).mean():.0%} of the key-frame pixels lie outside the padded boxes; "
      f"outside = 0.3 x pixel: {outside_ok}; inside unchanged: {inside_ok}")
assert outside_ok and inside_ok
display(Image.fromarray(np.concatenate([key_frames[2], dark[2]], axis=1)))"""),
    ("md", "## The hints, and the prompted prompt the policy sees"),
    ("code", """\
texts = chat.PromptTexts.load()
for kind in vp.PROMPT_TYPES:
  print(f"{kind:10s} {hints.hint(kind, texts)!r}")"""),
    ("code", """\
prompt = hints.prompted_prompt(example, "circle", texts, options)
shown = prompt.text.replace("<|image_pad|>", "[img]")
print(f"{len(prompt.images)} images ({sum(prompt.is_key_frame)} key frames with the circle drawn)")
print(shown[-900:])
keys = [im for im, key in zip(prompt.images, prompt.is_key_frame) if key]
display(Image.fromarray(contact_sheet([keys])))"""),
]

QUICKSTART = [
    ("md", """\
# Quickstart: VisionCoach end to end on a CPU

The embedded default (docs/design.md §10) needs nothing downloaded: a procedurally generated world of
short clips with coloured objects (every object's box and time known, so every task's ground
truth is exact), a tiny tokenizer built on the world's text, and a tiny Qwen2.5-VL (the same code
as the 7B) initialised at random. `vcoach_jax.demo.run` then does the whole method:

1. cold-start SFT on grounded reasoning traces,
2. the VP-Selector: proxy-reasoner labels, training, a prediction cache,
3. VisionCoach RL: GSPO with the grounding rewards, visual-prompt coaching of hard samples and
   self-distillation,

probing the policy on held-out clips before and after RL. `demo_config(fast=True)` is the
1-2 minute version of `vcoach demo` (fewer steps, shorter completions); the numbers of such a
short run are a smoke test of the pipeline, not a result."""),
    ("code", SETUP),
    ("code", """\
import tempfile

from IPython.display import display
from PIL import Image

from vcoach_jax import demo

config = demo.demo_config(fast=True)
for key in ("sft.steps", "optim.total_steps", "sampling.num_samples", "sampling.max_new_tokens",
            "synthetic.num_train", "synthetic.num_eval", "data.batch_size"):
  section, name = key.split(".")
  print(f"{key:25s} {config[section][name]}")
workdir = pathlib.Path(tempfile.mkdtemp(prefix="vcoach_quickstart_"))
print("work folder:", workdir)"""),
    ("code", """\
result = demo.run(config, str(workdir), progress=False, fast=True)
print()
print(result.table)
print("seconds per phase:", {k: round(v, 1) for k, v in result.seconds.items()})"""),
    ("md", "## Training curves (SFT, then RL)"),
    ("code", """\
for png in result.plots:
  print(png)
  display(Image.open(png))"""),
    ("md", """\
## Evaluate the trained policy

The RL policy is exported in the Hugging Face layout (with its tokenizer), so `vcoach eval` takes
it like any Qwen2.5-VL checkpoint: raw video, no visual prompt, greedy, batched through the
sampler. Here on 8 held-out synthetic clips."""),
    ("code", """\
from vcoach_jax import cli

policy = workdir / "rl" / "policy"
argv = ["eval", "--checkpoint", str(policy), "--benchmark", "synthetic", "--limit", "8",
        "--out", str(workdir / "eval"), "--no-progress",
        "--set", f"synthetic.num_eval={config.synthetic.num_eval}",
        "--set", f"sampling.max_new_tokens={config.sampling.max_new_tokens}"]
print("vcoach " + " ".join(argv))
assert cli.main(argv) == 0"""),
]

NOTEBOOKS = {
    "rewards_in_jax.ipynb": REWARDS,
    "visual_prompts.ipynb": VISUAL_PROMPTS,
    "quickstart.ipynb": QUICKSTART,
}


def build(cells) -> nbformat.NotebookNode:
  nb = nbformat.v4.new_notebook()
  nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python",
                                "name": "python3"},
                 "language_info": {"name": "python"}}
  for i, (kind, source) in enumerate(cells):
    make = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
    cell = make(source)
    cell["id"] = f"cell-{i}"  # stable ids, so rebuilding gives the same file
    nb.cells.append(cell)
  nbformat.validate(nb)
  return nb


def text(cells) -> str:
  return nbformat.writes(build(cells)) + "\n"


def main(argv) -> int:
  check = "--check" in argv
  stale = []
  for name, cells in NOTEBOOKS.items():
    path = HERE / name
    want = text(cells)
    if check:
      if not path.is_file() or path.read_text(encoding="utf-8") != want:
        stale.append(name)
    else:
      path.write_text(want, encoding="utf-8")
      print("wrote", path)
  if stale:
    print("out of date (run python colabs/build_notebooks.py):", ", ".join(stale))
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
