"""`vcoach eval` through the real sampler: a tiny random checkpoint on the synthetic benchmark."""

import json

import jax
import pytest

from vcoach_jax import cli
from vcoach_jax import config as config_lib
from vcoach_jax.data import chat
from vcoach_jax.evaluation import generation, loaders, scoring
from vcoach_jax.model import prepare_inputs
from vcoach_jax.rewards import targets

# Tiny everywhere: 4 held-out clips of at most 4 frames, 6 new tokens.
OVERRIDES = ["synthetic.num_eval=4", "synthetic.max_frames=4", "sampling.max_new_tokens=6",
             "synthetic.num_train=40"]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
  """A random tiny model matched to the tiny tokenizer, saved with `save_hf` (+ tokenizer): the
  session's `tiny_checkpoint` (conftest)."""
  return tiny_checkpoint


@pytest.fixture(scope="module")
def gen(checkpoint, tmp_path_factory):
  config = config_lib.load(None, OVERRIDES + [f"model.checkpoint={checkpoint}",
                                              "eval.batch_size=4"])
  from vcoach_jax.evaluation.runner import synthetic_world  # pylint: disable=import-outside-toplevel
  return generation.SamplerGenerate.from_config(
      config, str(tmp_path_factory.mktemp("work")), world=synthetic_world(config)), config


def test_batched_generation_equals_one_prompt_at_a_time(gen):
  """Padding a prompt into a batch (prompt bucket, patch capacity, dummy rows) changes nothing:
  the batched greedy completions are those of each prompt alone through `prepare_inputs`."""
  g, config = gen
  items = loaders.synthetic_items(config)
  requests = [r for it in items for r in scoring.requests_for(it)]
  batched = g(requests)
  assert len(batched) == 4 and g.calls == 1
  prompts = g.builder(requests)
  for prompt, text in zip(prompts, batched):
    inputs = prepare_inputs(g.sampler.model.config, chat.Processor(g.sampler.tokenizer)(prompt))
    alone = g.sampler.generate(inputs, g.sampling, jax.random.key(0)).texts[0]
    assert text == alone
  assert g.sampler.last_num_steps <= 6


def test_cli_eval_synthetic_end_to_end_and_resume(checkpoint, tmp_path, capsys):
  out = tmp_path / "out"
  argv = ["eval", "--checkpoint", str(checkpoint), "--benchmark", "synthetic", "--limit", "4",
          "--out", str(out), "--no-progress", "--batch-size", "4", "--judge",
          f"model:{checkpoint}"] + [a for o in OVERRIDES for a in ("--set", o)]
  assert cli.main(argv) == 0
  lines = [json.loads(l) for l in (out / "synthetic.jsonl").read_text().splitlines()]
  summary = json.loads((out / "summary.json").read_text())
  assert summary["n"] == 4 and summary["new"] == 4 and len(lines) == 4
  assert set(summary["rewards"]) >= {"format", "ans_acc"}
  for r in lines:  # free-form answers were graded by the judge model (0-3), the rest not
    assert isinstance(r["outputs"]["answer"], str)
    judged = r["task"] in (targets.TASK_ST, targets.TASK_FREE)
    assert r["score"] in ((0, 1, 2, 3) if judged else (None, 0, 3))
  printed = capsys.readouterr().out
  assert "synthetic: 4 item(s)" in printed and "4 new, 0 resumed" in printed
  assert cli.main(argv) == 0  # everything is already written: resumes, generates nothing
  assert "0 new, 4 resumed" in capsys.readouterr().out


def test_cli_eval_errors_on_a_missing_checkpoint(tmp_path, capsys):
  assert cli.main(["eval", "--benchmark", "synthetic", "--checkpoint", str(tmp_path / "nope"),
                   "--out", str(tmp_path), "--set", "synthetic.num_eval=1"]) == 2
  assert "nope" in capsys.readouterr().err
  assert cli.main(["eval", "--benchmark", "synthetic", "--judge", f"model:{tmp_path / 'nj'}",
                   "--out", str(tmp_path), "--set", "synthetic.num_eval=1"]) == 2
  assert "judge checkpoint" in capsys.readouterr().err


def test_tiny_model_judge_grades_with_the_prompt_file(checkpoint, tmp_path):
  """`--judge model:DIR` with a tiny checkpoint: the prompt from assets/judge_prompt.json goes to
  the model, greedy, 10 tokens at most, no repetition penalty; replies are read per protocol
  (the reference reads the whole reply as an integer, -1 otherwise)."""
  from vcoach_jax.evaluation.runner import judge_generate_fn  # pylint: disable=import-outside-toplevel
  from vcoach_jax.evaluation import judge as judge_lib, reference  # pylint: disable=import-outside-toplevel
  config = config_lib.load(None, OVERRIDES + ["sampling.repetition_penalty=1.3"])
  generate = judge_generate_fn(config, str(checkpoint), str(tmp_path / "judge"))
  gen = generate.__self__
  assert gen.sampling.max_new_tokens == 10 and gen.sampling.repetition_penalty == 1.0
  assert gen.sampling.greedy
  args = (["What is red?", "Who runs?"], ["the ball", "a dog"], ["a ball", "the cat"])
  judge = judge_lib.make_judge(f"model:{checkpoint}", generate=generate,
                               parse=reference.parse_grade)
  prompts = judge.prompts(*args)
  system, _ = judge_lib.load_judge_prompt()
  assert system in prompts[0] and "Candidate answer: the cat" in prompts[1]
  replies = generate(prompts)
  grades = judge.score_many(*args)
  assert grades == [reference.parse_grade(r) for r in replies]
  assert all(g in (-1, 0, 1, 2, 3) for g in grades)


def test_eval_inputs_of_a_synthetic_item_are_the_training_pipelines(tiny_checkpoint, tiny_world,
                                                                    tmp_path):
  """`vcoach eval --benchmark synthetic` (protocol `training`) feeds the model, for each held-out
  record, what the RL step's input pipeline feeds it (token ids, positions, pixels, vision
  tables: every array equal), key frames included, and the policy's greedy completions are the
  same as the sampler's on the pipeline's batch."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from vcoach_jax import experiment  # pylint: disable=import-outside-toplevel
  from vcoach_jax.data import pipeline as pipeline_lib  # pylint: disable=import-outside-toplevel
  from vcoach_jax.model import batching  # pylint: disable=import-outside-toplevel
  from vcoach_jax.evaluation.runner import synthetic_world  # pylint: disable=import-outside-toplevel
  from conftest import TINY_WORLD  # pylint: disable=import-outside-toplevel
  config = config_lib.load(None, list(TINY_WORLD) + tiny_world + [
      f"model.checkpoint={tiny_checkpoint}", "data.batch_size=4", "eval.batch_size=4",
      "sampling.max_new_tokens=6"])
  g = generation.SamplerGenerate.from_config(config, str(tmp_path / "work"),
                                             world=synthetic_world(config))
  pipe = experiment.pipeline(config, g.sampler.tokenizer, tmp_path, split="eval",
                             shuffle_buffer=1)
  batch = pipe.next_host_batch()  # the whole held-out split (4 records), in the stream's order
  by_id = {it.id: it for it in loaders.synthetic_items(config)}
  requests = [scoring.requests_for(by_id[rid])[0] for rid in batch.ids]
  assert {r.task for r in requests} >= {targets.TASK_ST}  # a record with key frames among them
  assert any(pipeline_lib.record_of(e)["key_frames"] for e in batch.examples)
  ours = g.model_inputs(requests)
  theirs = batching.batch_inputs(g.sampler.model.config, batch.arrays)
  for name, a, b in zip(ours._fields, ours, theirs):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
  greedy = g.sampler.generate(theirs, g.sampling, jax.random.key(0)).texts
  assert g(requests) == greedy
