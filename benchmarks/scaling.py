"""The scaling report (`vcoach plan --devices N`) for a 0.5B-width model under the 7B recipe.

  PYTHONPATH=. USE_TF=0 python benchmarks/scaling.py [--mesh fsdp=8] [--mesh data=2,fsdp=4]

The shape: configs/visioncoach_7b.py's settings (bf16 compute with fp32 masters, scanned layers,
full remat, chunked attention, grad_accum 4) on a model of Qwen2.5-0.5B's text width with 4
decoder layers and the 7B vision tower cut to 4 blocks (one of them full attention), the prompts
of all micro-batches in one forward (`optim.prompt_once`); 8 prompts
x G 4, 1,024-token prompts each holding one image of 1,936 patches (44 x 44), 128 new tokens.
One process compiles the train step and the sampler for each mesh of 8 simulated CPU devices
and once for 1 device (six compilations of a few CPU minutes each).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

from vcoach_jax import storage  # noqa: E402
from vcoach_jax.model.config import ModelConfig, VisionConfig  # noqa: E402

SHAPE = ModelConfig(
    vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=4,
    num_attention_heads=14, num_key_value_heads=2, mrope_section=(8, 12, 12),
    tie_word_embeddings=True,
    vision=VisionConfig(depth=4, out_hidden_size=896, fullatt_block_indexes=(3,)))
# Prompts once per step (optim.prompt_once; the 7B config turns it off for memory): every
# forward's rows divide the 8 devices.
SETTINGS = ("data.batch_size=8", "sampling.num_samples=4", "sampling.max_new_tokens=128",
            "data.max_patches=1936", "data.max_images=1", "optim.prompt_once=True")
PROMPT_LENGTH = 1024


def run(meshes: list[str], devices: int, folder: pathlib.Path) -> str:
  sets = [a for s in SETTINGS + (f"model.checkpoint={folder}",) for a in ("--set", s)]
  cmd = [sys.executable, "-m", "vcoach_jax.cli", "plan", "--config",
         str(_ROOT / "configs" / "visioncoach_7b.py"), "--devices", str(devices),
         *[a for m in meshes for a in ("--mesh", m)], "--prompt-length", str(PROMPT_LENGTH),
         *sets]
  env = dict(os.environ, USE_TF="0",
             PYTHONPATH=os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
  if proc.returncode:
    raise SystemExit(f"`{' '.join(cmd)}` failed:\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}")
  return proc.stdout


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--mesh", action="append", default=None,
                      help="mesh to report, 8 devices (repeatable; default: fsdp=8 and "
                           "data=2,fsdp=4)")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    folder = pathlib.Path(tmp)
    storage.write_text(folder / "config.json", json.dumps(SHAPE.to_hf()))
    out = run(args.mesh or ["fsdp=8", "data=2,fsdp=4"], 8, folder)
  print("\n".join(l for l in out.splitlines() if not l.startswith("compiling")), flush=True)


if __name__ == "__main__":
  main()
