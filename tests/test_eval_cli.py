"""`evaluate()` (batching, JSONL, resuming) and `vcoach eval` with an injected generate function."""

import importlib.util
import json

import pytest

from conftest import DATA_DIR
from vcoach_jax import cli
from vcoach_jax.commands import evaluate as eval_cmd
from vcoach_jax.data import synthetic
from vcoach_jax import config as config_lib
from vcoach_jax.evaluation import evaluate, loaders, runner, summary_table
from vcoach_jax.evaluation.judge import RougeJudge

EVAL = DATA_DIR / "eval"


def _vstar_oracle(request):
  """A perfect answer to each V-STAR request, from the item's ground truth."""
  item = request.item
  if request.step == "answer":
    return f"<think>...</think><answer>{item.answer}</answer>"
  if request.step.startswith("when"):
    s, e = item.segment
    return f"<answer>From <t>{s}</t>s to <t>{e}</t>s.</answer>"
  boxes = {str(int(t)): list(b) for t, b in item.boxes}
  return f"<answer>{json.dumps(boxes)}</answer>"


class Counting:
  def __init__(self, fn, fail_on_call=None):
    self.fn, self.calls, self.fail_on_call = fn, [], fail_on_call

  def __call__(self, requests):
    self.calls.append(len(requests))
    if self.fail_on_call == len(self.calls):
      raise KeyboardInterrupt
    return [self.fn(r) for r in requests]


def test_evaluate_vstar_oracle_scores_perfectly_and_batches_whole_items(tmp_path):
  items = loaders.load("vstar", EVAL / "vstar.json")
  gen = Counting(_vstar_oracle)
  s = evaluate(items, gen, "vstar", out_jsonl=str(tmp_path / "r.jsonl"), batch_size=7,
               progress=False)
  assert gen.calls == [5, 5]  # an item's five requests are never split
  o = s["vstar"]["overall"]
  assert o["acc"] == 1.0 and o["mAM"] == pytest.approx(1.0)
  for chain in ("chain1", "chain2"):
    assert o[chain]["mean_tiou"] == pytest.approx(1.0) and o[chain]["mean_miou"] == 1.0
    assert o[chain]["answer&tiou&miou"] == 1.0
  assert set(s["vstar"]["by_domain"]) == {"Daily Life", "Sports"}
  table = summary_table(s)
  assert "chain2:mIoU" in table and "domain=Sports" in table and "length=long" in table


def test_evaluate_resumes_after_an_interruption_and_a_torn_line(tmp_path):
  items = loaders.load("videomme", EVAL / "videomme.jsonl")
  out = tmp_path / "r.jsonl"
  answer = lambda r: f"<answer>{r.item.answer}</answer>"
  first = Counting(answer, fail_on_call=2)
  with pytest.raises(KeyboardInterrupt):
    evaluate(items, first, "videomme", out_jsonl=str(out), batch_size=1, progress=False)
  assert [json.loads(l)["id"] for l in out.read_text().splitlines()] == ["001-1"]
  second = Counting(answer)
  s = evaluate(items, second, "videomme", out_jsonl=str(out), batch_size=1, progress=False)
  assert second.calls == [1] and s["new"] == 1 and s["resumed"] == 1
  assert s["n"] == 2 and s["mcq"]["acc"] == 1.0
  # A crash in the middle of a write leaves half a line: it is dropped and that item redone.
  lines = out.read_text().splitlines()
  out.write_text(lines[0] + "\n" + lines[1][:20], encoding="utf-8")
  third = Counting(lambda r: "<answer>A</answer>")
  s = evaluate(items, third, "videomme", out_jsonl=str(out), batch_size=4, progress=False)
  assert third.calls == [1] and s["mcq"]["acc"] == 0.5
  assert len(out.read_text().splitlines()) == 2
  with pytest.raises(ValueError, match="returned 0 texts"):
    evaluate(items, lambda reqs: [], "videomme", progress=False)


def test_evaluate_charades_and_limit():
  items = loaders.load("charades", EVAL / "charades_sta_test.txt")
  gen = Counting(lambda r: "<answer>From <t>24.3</t>s to <t>27.35</t>s</answer>")
  s = evaluate(items, gen, "charades", batch_size=8, limit=2, progress=False)
  # item 1: IoU 0.5; item 2 (0-6.9): no overlap.
  c = s["charades"]
  assert s["n"] == 2 and (c["R@0.3"], c["R@0.5"], c["R@0.7"]) == (0.5, 0.5, 0.0)
  assert c["mIoU"] == pytest.approx(0.25)
  assert "R@0.5" in summary_table(s)


def test_cli_eval_synthetic_with_an_oracle_generate_fn(tmp_path, capsys):
  config = config_lib.load(None, ["synthetic.num_eval=6"])
  world = synthetic.SyntheticWorld(synthetic.WorldSpec.from_config(config.synthetic))
  oracle = lambda reqs: [world.sample(loaders.synthetic_index(r.item)).completion for r in reqs]
  args = cli.build_parser().parse_args(
      ["eval", "--benchmark", "synthetic", "--out", str(tmp_path), "--no-progress",
       "--set", "synthetic.num_eval=6", "--batch-size", "4"])
  assert eval_cmd.main(args, generate_fn=oracle) == 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  overall = summary["vstar"]["overall"]
  assert summary["n"] == 6 and overall["acc"] == 1.0
  assert overall["chain1"]["mean_tiou"] == 1.0 and overall["chain1"]["mean_miou"] == 1.0
  assert summary["rewards"]["format"] == 1.0
  assert len((tmp_path / "synthetic.jsonl").read_text().splitlines()) == 6
  printed = capsys.readouterr().out
  assert "task=visual QA" in printed and "mean rewards" in printed and "6 new" in printed


def test_cli_eval_errors_and_help(tmp_path, capsys):
  assert cli.main(["eval", "--benchmark", "vstar", "--out", str(tmp_path)]) == 2
  assert "needs --data" in capsys.readouterr().err
  assert cli.main(["eval", "--benchmark", "charades", "--judge", "llm",
                   "--data", str(EVAL / "charades_sta_test.txt")]) == 2
  assert "eval.judge" in capsys.readouterr().err
  if importlib.util.find_spec("vcoach_jax.sampling") is None:
    assert cli.main(["eval", "--benchmark", "charades", "--out", str(tmp_path),
                     "--data", str(EVAL / "charades_sta_test.txt")]) == 2
    assert "sampler" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["eval", "--help"])
  assert "--judge" in capsys.readouterr().out


def test_pred_size_follows_the_input_pipeline_resize():
  config = config_lib.load()
  [item, _] = loaders.load("vstar", EVAL / "vstar.json")
  w, h = runner.pred_size_fn(config)(item)
  assert w % 28 == 0 and h % 28 == 0 and w > h  # 640x360 keeps its aspect, multiples of 28
  assert RougeJudge().score("a blue cup", "A blue cup.") == 3


def test_prompts_of_requests_key_frames_as_training_shows_them():
  from vcoach_jax.data import chat
  from vcoach_jax.evaluation import scoring
  from vcoach_jax.evaluation.items import EvalItem
  from vcoach_jax.evaluation.prompting import PromptBuilder
  config = config_lib.load(None, ["synthetic.num_eval=6"])
  world = synthetic.SyntheticWorld(synthetic.WorldSpec.from_config(config.synthetic))
  items = loaders.synthetic_items(config)
  real = EvalItem(id="r", benchmark="charades", video=str(DATA_DIR / "example_22s_640x360.mp4"),
                  question="a person walks", task="temporal QA", segment=(1.0, 2.0))
  requests = [r for it in items + [real] for r in scoring.requests_for(it)]
  prompts = PromptBuilder(chat.PromptTexts.load(), world=world)(requests)
  assert len(prompts) == len(requests)
  for req, prompt in zip(requests, prompts):
    assert req.question in prompt.text
    assert any(prompt.is_key_frame) == (req.task == "temporal-spatial free-form QA")
    assert prompt.text.count("<|image_pad|>") == len(prompt.images)
  st = next(i for i, r in enumerate(requests) if r.task == "temporal-spatial free-form QA")
  sample = world.sample(loaders.synthetic_index(requests[st].item))
  # The sampled frames and the record's key frames, as the training pipeline inserts them.
  assert len(prompts[st].images) == len(sample.times) + len(sample.record["key_frames"])
  assert sum(prompts[st].is_key_frame) == len(sample.record["key_frames"])
  assert "When does this happen in the video: a person walks?" in prompts[-1].text
  assert len(prompts[-1].images) == config.video.max_frames
