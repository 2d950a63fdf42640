"""Eval protocols: the reference parsers' known values, the reference frame rule, and
`vcoach eval --protocol vstar_reference` end to end (frames, times, sizes and decoding fed to the
sampler; metrics equal to a hand computation of the reference formulas)."""

import json
import math
import pathlib
import shutil
import time

import numpy as np
import pytest

from conftest import DATA_DIR
from vcoach_jax import cli
from vcoach_jax.evaluation import evaluate, loaders, protocols, reference, reference_inputs
from vcoach_jax.evaluation.judge import ExactJudge, ModelJudge, answer_text, load_judge_prompt, parse_grade
from vcoach_jax.rewards import parsing

# --- parsers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, want", [
    ("<think>at 0:30 maybe</think><answer>From 0:02 to 1:07</answer>", [2.0, 67.0]),
    ("From <t>2.5</t>s to <t>7</t>s.", [2.5, 7.0]),  # no answer block: the whole text
    ("<answer>12 - 15.5</answer>", [12.0, 15.5]),  # two bare numbers
    ("<answer>0:01:05 to 0:01:09</answer>", []),  # h:mm:ss reads as h:mm + :ss -> 4 numbers
    ("<answer>0:01:05</answer>", [1.0, 5.0]),  # ... so one h:mm:ss alone gives two numbers
    ("<answer>from 2s to 7s</answer>", []),  # a digit then a letter is not a whole number
    ("<answer>2.5s to 7.5 s</answer>", [2.0, 7.5]),  # "2.5s" reads as 2
    ("<answer>From 3 to 5 in a 20 s clip</answer>", []),  # three numbers
    ("<answer>From 3 to 5", [3.0, 5.0]),  # an unclosed answer block: the whole text
])
def test_parse_span_known_values(text, want):
  assert reference.parse_span(text) == want


@pytest.mark.parametrize("text, want", [
    ('<answer>{"3": [1, 2, 3, 4], "4": [[1, 2, 3, 4], [5, 6, 7, 8]]}</answer>',
     {"3": [1, 2, 3, 4], "4": [[1, 2, 3, 4], [5, 6, 7, 8]]}),  # flat and nested
    ("<answer>```json\n{'3': [1, 2, 3, 4]}\n```</answer>", {"3": [1, 2, 3, 4]}),  # fenced, quotes
    ('<answer>[{"3": [1, 2, 3, 4]}, {"5": [5, 6, 7, 8]}]</answer>',
     {"3": [1, 2, 3, 4], "5": [5, 6, 7, 8]}),  # a list of objects merged
    ('<answer>[[3, [1, 2, 3, 4]], [5.0, [5, 6, 7, 8]]]</answer>',
     {"3": [1, 2, 3, 4], "5.0": [5, 6, 7, 8]}),  # [key, box] pairs
    ('<answer>{"3": {"4": [1, 2, 3, 4]}</answer>', {"3": {"4": [1, 2, 3, 4]}}),  # repaired
    ('<answer>[1, 2, 3, 4]</answer>', [1, 2, 3, 4]),  # pairs fail; the repaired read is kept
    ('<answer>{"3": [1, 2, 3, 4]</answer>', [1, 2, 3, 4]),  # no "}": the list alone is found
    ("<think>{\"9\": [0, 0, 9, 9]}</think><answer>none</answer>", None),  # the answer only
])
def test_parse_boxes_known_values(text, want):
  assert reference.parse_boxes(text) == want


def test_reference_ious_and_spatial_scores():
  assert reference.span_iou((2.5, 6.0), [2.0, 7.0]) == pytest.approx(3.5 / 5)
  assert reference.span_iou((2.0, 6.0), [7.0, 3.0]) == 0.0  # reversed: no reordering
  assert reference.span_iou((2.0, 6.0), []) == 0.0
  gt = [(3.0, (100, 50, 200, 250)), (5.0, (120, 60, 220, 260)), (7.5, (0, 0, 10, 10))]
  preds = {"3": [100, 50, 150, 250], "5": [[0, 0, 1, 1], [120, 60, 220, 200]], "7.5": "x"}
  aps, miou = reference.spatial_scores(gt, preds)
  assert miou == pytest.approx((0.5 + 0.7 + 0.0) / 3)
  assert aps == pytest.approx([2 / 3, 2 / 3, 2 / 3, 1 / 3, 0.0])
  assert reference.spatial_scores(gt, {"3.0": [100, 50, 200, 250]})[1] == 0.0  # key "3"
  assert reference.spatial_scores(gt, [[100, 50, 200, 250]]) == ([0.0] * 5, 0.0)  # a list
  assert reference.best_box_iou((0, 0, 10, 10), [0, 0, 10, 10]) == 1.0  # one flat box
  assert reference.parse_grade(" 2\n") == 2 and reference.parse_grade("2.") == -1
  assert parse_grade("Grade: 2.") == 2  # the training judge reads the first digit


def test_reference_frame_rule():
  # <= 16 s: every int(native fps)-th frame from 0 (at most 16); > 16 s: 16 by linspace.
  np.testing.assert_array_equal(reference_inputs.frame_indices(300, 30.0), np.arange(0, 300, 30))
  np.testing.assert_array_equal(reference_inputs.frame_indices(250, 29.97),
                                np.arange(0, 250, 29))  # 8.3 s, step int(29.97) = 29
  np.testing.assert_array_equal(reference_inputs.frame_indices(509, 30.0),
                                np.arange(0, 509, 30)[:16])  # 16.97 s: int(...) = 16, 17 -> 16
  got = reference_inputs.frame_indices(540, 29.97)  # 18.02 s
  np.testing.assert_array_equal(got, [int(i) for i in np.linspace(0, 539, 16)])
  assert got[:3].tolist() == [0, 35, 71] and got[-1] == 539


def test_protocol_registry():
  assert protocols.NAMES == ("training", "vstar_reference", "charades_reference")
  p = protocols.get("vstar_reference", "vstar")
  assert (p.repetition_penalty, p.max_new_tokens, p.fps, p.max_frames) == (1.05, 2048, 1.0, 16)
  with pytest.raises(ValueError, match="not 'videomme'"):
    protocols.get("vstar_reference", "videomme")
  with pytest.raises(ValueError, match="unknown eval protocol"):
    protocols.get("nope")
  from vcoach_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  with pytest.raises(config_lib.ConfigError, match="eval.protocol"):
    config_lib.load(overrides=["eval.protocol=nope"])


def test_model_judge_reads_its_prompt_file_and_parses_by_protocol(tmp_path):
  seen = []

  def generate(prompts):
    seen.extend(prompts)
    return [" 3\n", "2.", "Grade: 1"]

  system, user = load_judge_prompt()
  judge = ModelJudge(generate, parse=reference.parse_grade)
  assert judge.score_many(["q1", "q2", "q3"], ["a1", "a2", "a3"], ["p1", "p2", "p3"]) == [3, -1, -1]
  assert system in seen[0] and user.format(question="q2", answer="a2", prediction="p2") in seen[1]
  assert ModelJudge(generate).score_many(["q"] * 3, ["a"] * 3, ["p"] * 3) == [3, 2, 1]
  bad = tmp_path / "judge.json"
  bad.write_text(json.dumps({"system": "s", "user": "{question} {answer}"}))
  with pytest.raises(ValueError, match="prediction"):
    ModelJudge(generate, prompt_file=str(bad))


# --- end to end ----------------------------------------------------------------------------------

CLIP = DATA_DIR / "vstar_5587257558.mp4"  # 540 frames at 29.97 fps, 640x360
CLIP2 = DATA_DIR / "example_22s_640x360.mp4"  # 491 frames at 22.29 fps, 640x360
ITEMS = [
    {"vid": "5587257558", "domain": "Daily Life", "fps": 30.0, "width": 640, "height": 360,
     "frame_count": 540, "question": "What does the man pick up?", "answer": "a blue cup",
     "temporal_question": "When does he pick up the cup?", "timestamps": [2.5, 6.0],
     "spatial_question": "Where is he while he picks it up?", "spatial_question_2": "Where is he?",
     "bboxes": [{"timestamp": 3, "frame_index": 90, "xmin": 100, "ymin": 50, "xmax": 200,
                 "ymax": 250},
                {"timestamp": 5, "frame_index": 150, "xmin": 120, "ymin": 60, "xmax": 220,
                 "ymax": 260}]},
    {"vid": "5587257558", "id": "second", "domain": "Sports", "fps": 30.0, "width": 640,
     "height": 360, "frame_count": 5400, "question": "What does he catch?", "answer": "the ball",
     "temporal_question": "When does he catch it?", "timestamps": [10.0, 12.0],
     "spatial_question": "Where is he as he catches it?", "spatial_question_2": "Where is he?",
     "bboxes": [{"timestamp": 11, "frame_index": 330, "xmin": 10, "ymin": 20, "xmax": 110,
                 "ymax": 220}]},
    {"vid": "example", "domain": "Sports", "fps": 22.29, "width": 640, "height": 360,
     "frame_count": 491, "question": "What happens?", "answer": "a jump",
     "temporal_question": "When?", "timestamps": [1.0, 3.0], "spatial_question": "Where?",
     "spatial_question_2": "Where?",
     "bboxes": [{"timestamp": 2, "frame_index": 44, "xmin": 0, "ymin": 0, "xmax": 10,
                 "ymax": 10}]},
]
# Completions in request order: per item answer, when, where, where_2, when_2.
COMPLETIONS = [
    "<think>He reaches.</think><answer>a blue cup</answer>",
    "<answer>From 0:02 to 0:07</answer>",
    '<answer>```json\n{"3": [100, 50, 200, 250], "5": [[0, 0, 10, 10], [120, 60, 220, 200]]}'
    "\n```</answer>",
    "<answer>[{\"3\": [100, 50, 150, 250]}, {'4': [1, 2, 3, 4]}]</answer>",
    "<answer>2.5 - 6</answer>",
    "<answer>the bat</answer>",
    "<answer>From <t>9</t>s to <t>12</t>s of 180 s</answer>",
    '<answer>{"11": [10, 20, 110, 120]}',
    "<answer>{'11': [10, 20, 110, 220]}</answer>",
    "<answer>0:10 to 0:13</answer>",
    "<think>Unsure.</think><answer></answer>",  # an empty answer: the item is skipped
    "<answer>1 to 3</answer>", '<answer>{"2": [0, 0, 10, 10]}</answer>',
    '<answer>{"2": [0, 0, 10, 10]}</answer>', "<answer>1 to 3</answer>",
]


def _hand_metrics():
  """The reference formulas worked by hand on COMPLETIONS (items 1 and 2 judged, 3 skipped)."""
  total = 3
  acc = 1 / total  # item 1 correct (exact), item 2 wrong, item 3 counted but skipped
  t1, t2 = [3.5 / 5, 0.0], [1.0, 2 / 3]
  m1, m2 = [(1.0 + 0.7) / 2, 0.5], [(0.5 + 0.0) / 2, 1.0]
  ap1 = [[1, 1, 1, 1, 0.5], [1, 1, 1, 0, 0]]
  ap2 = [[0.5, 0.5, 0.5, 0, 0], [1, 1, 1, 1, 1]]
  out = {}
  for chain, t, m, ap, joints in (
      ("chain1", t1, m1, ap1, (1, 1, 1, 1)), ("chain2", t2, m2, ap2, (1, 1, 2, 1))):
    mt, mm = sum(t) / 2, sum(m) / 2
    out[chain] = {
        "R1@0.3": 0.5 if chain == "chain1" else 1.0, "R1@0.5": 0.5 if chain == "chain1" else 1.0,
        "R1@0.7": 0.5 if chain == "chain1" else 0.5, "mean_tiou": mt, "mean_miou": mm,
        **{f"mAP@{th:g}": (ap[0][i] + ap[1][i]) / 2
           for i, th in enumerate((0.1, 0.3, 0.5, 0.7, 0.9))},
        "AM": (acc + mt + mm) / 3,
        "LGM": -(math.log(1 - acc) + math.log(1 - mt) + math.log(1 - mm)) / 3,
        "answer&tiou": joints[0] / total, "answer&miou": joints[1] / total,
        "tiou&miou": joints[2] / total, "answer&tiou&miou": joints[3] / total}
  return acc, out


def test_cli_vstar_reference_frames_decoding_and_metrics(tmp_path, monkeypatch, capsys):
  from vcoach_jax.sampling import sampler as sampler_lib  # pylint: disable=import-outside-toplevel
  videos = tmp_path / "videos"
  videos.mkdir()
  shutil.copy(CLIP, videos / "5587257558.mp4")
  shutil.copy(CLIP2, videos / "example.mp4")
  data = tmp_path / "vstar.json"
  data.write_text(json.dumps(ITEMS))
  fed, decoded = [], []
  decode = reference_inputs.decode_frames

  def recording_decode(path, protocol):
    frames = decode(path, protocol)
    decoded.append((path, frames))
    return frames

  def fake_generate(self, inputs, config, rng, state=None):
    del rng, state
    ids = np.asarray(inputs.input_ids)[0][np.asarray(inputs.attention_mask)[0]]
    fed.append({"config": config, "text": self.tokenizer.decode(ids.tolist()),
                "pixels": int(np.asarray(inputs.pixels).shape[0])})
    text = COMPLETIONS[len(fed) - 1]
    return sampler_lib.Rollouts(None, None, None, [text])

  monkeypatch.setattr(reference_inputs, "decode_frames", recording_decode)
  monkeypatch.setattr(sampler_lib.Sampler, "generate", fake_generate)
  out = tmp_path / "out"
  assert cli.main(["eval", "--benchmark", "vstar", "--protocol", "vstar_reference", "--data",
                   str(data), "--video-dir", str(videos), "--out", str(out), "--judge", "exact",
                   "--batch-size", "1", "--no-progress"]) == 0
  # Decoding: greedy, one sample, repetition penalty 1.05, 2048 new tokens, for every request.
  assert len(fed) == 15
  for f in fed:
    c = f["config"]
    assert (c.greedy, c.num_samples, c.repetition_penalty, c.max_new_tokens) == (
        True, 1, 1.05, 2048)
  # Frames: 16 by linspace (both clips are over 16 s), times index / native fps, 644x364 images.
  by_video = {pathlib.Path(p).name: fr for p, fr in decoded}
  for name, total, fps in (("5587257558.mp4", 540, 29.97), ("example.mp4", 491, 22.29)):
    fr = by_video[name]
    want = [int(i) for i in np.linspace(0, total - 1, 16)]
    assert fr.indices.tolist() == want and fr.total_frames == total
    assert fr.times == pytest.approx([i / fps for i in want], rel=1e-3)
    assert all(im.shape == (364, 644, 3) for im in fr.images)
  first = by_video["5587257558.mp4"]
  text = fed[1]["text"]  # item 1's "when" prompt
  assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
  assert "The video lasts 18.0 seconds. Frame 1 at 0.0s: <|vision_start|>" in text
  assert f"Frame 16 at {round(first.times[-1], 1)}s: <|vision_start|>" in text
  assert text.count("<|vision_start|>") == 16 and "When does he pick up the cup?" in text
  assert text.count("<|image_pad|>") == 16 * (26 * 46 // 4)
  assert "[3, 4, 5, 6]" in fed[2]["text"] and '{"3": [x1, y1, x2, y2],...}' in fed[2]["text"]
  assert "[[100, 50, 200, 250], [120, 60, 220, 260]]" in fed[4]["text"]
  # Per-item JSONL: raw completions, parsed fields, every score.
  rows = {r["id"]: r for r in map(json.loads, (out / "vstar.jsonl").read_text().splitlines())}
  r1 = rows["5587257558_0"]
  assert r1["outputs"]["when"] == COMPLETIONS[1] and r1["score"] == 3 and r1["correct"]
  assert r1["chains"]["chain1"]["segment"] == [2.0, 7.0]
  assert r1["chains"]["chain2"]["boxes"] == {"3": [100, 50, 150, 250], "4": [1, 2, 3, 4]}
  assert rows["example_2"]["skipped"] and rows["example_2"]["score"] is None
  # Metrics = the hand computation.
  summary = json.loads((out / "summary.json").read_text())
  assert summary["protocol"].startswith("vstar_reference")
  o = summary["vstar"]["overall"]
  acc, chains = _hand_metrics()
  assert o["n"] == 3 and o["acc"] == pytest.approx(acc)
  for chain, want in chains.items():
    for key, value in want.items():
      assert o[chain][key] == pytest.approx(value), (chain, key)
  assert o["mAM"] == pytest.approx((chains["chain1"]["AM"] + chains["chain2"]["AM"]) / 2)
  assert o["mLGM"] == pytest.approx((chains["chain1"]["LGM"] + chains["chain2"]["LGM"]) / 2)
  groups = summary["vstar"]
  assert set(groups["by_length"]) == {"Short", "Long"} and groups["by_length"]["Long"]["n"] == 1
  assert groups["by_domain"]["Sports"]["n"] == 1  # item 3 is skipped: out of its groups
  printed = capsys.readouterr().out
  assert "protocol: vstar_reference" in printed and "judge: exact" in printed
  # The same output folder under another protocol is refused (no mixing of results).
  assert cli.main(["eval", "--benchmark", "vstar", "--data", str(data), "--video-dir",
                   str(videos), "--out", str(out), "--judge", "exact", "--no-progress"]) == 2
  assert "under protocol 'vstar_reference', not 'training'" in capsys.readouterr().err


def test_charades_reference_counts_every_item():
  items = loaders.load("charades", DATA_DIR / "eval" / "charades_sta_test.txt")[:3]
  answers = iter(["<answer>From 0:01 to 0:05</answer>", "no idea", "<answer>2 - 4</answer>"])
  protocol = protocols.get("charades_reference", "charades")
  s = evaluate(items, lambda reqs: [next(answers) for _ in reqs], "charades",
               judge=ExactJudge(), batch_size=8, progress=False, protocol=protocol)
  want = [reference.span_iou(it.segment, span)
          for it, span in zip(items, ([1.0, 5.0], [], [2.0, 4.0]))]
  assert s["charades"]["n"] == 3 and s["charades"]["mIoU"] == pytest.approx(sum(want) / 3)
  assert s["protocol"].startswith("charades_reference")


def test_charades_reference_prompt_text():
  item = loaders.load("charades", DATA_DIR / "eval" / "charades_sta_test.txt")[0]
  prompts = reference_inputs.PromptSet.load(protocols.REFERENCE_PROMPTS)
  frames = reference_inputs.Frames([], np.array([0, 24]), [0.0, 1.04], 24.0, 48, (64, 48))
  (req,) = reference.requests_for(item)
  text = reference_inputs.user_text(prompts, req, frames, 2.0)
  image = reference_inputs.IMAGE
  assert text.startswith(f"The video lasts 2.0 seconds. Frame 1 at 0.0s: {image}\n"
                         f"Frame 2 at 1.0s: {image}\n")
  assert item.question.rstrip(". ") in text and "From <t>start_time</t>s" in text


def _answer_text_by_pattern(completion):
  """`answer_text` as the answer-block pattern decides it (the former implementation)."""
  if parsing.ANSWER_BLOCK_RE.search(completion or ""):
    return parsing.extract_answer(completion)
  return (completion or "").strip()


@pytest.mark.parametrize("completion,want", [
    ("<think>x</think><answer> B </answer>", "B"),
    ("<answer>\nfirst\n</answer><answer>second</answer>", "first"),
    ("<answer>a<answer>b</answer>", "a<answer>b"),
    ("<answer></answer>", ""),
    ("  <answer>unclosed B  ", "<answer>unclosed B"),
    ("</answer><answer>x", "</answer><answer>x"),
    ("plain C. ", "plain C."),
    ("", ""),
    (None, ""),
])
def test_answer_text_equals_the_answer_pattern(completion, want):
  assert answer_text(completion) == want == _answer_text_by_pattern(completion)


def test_answer_text_of_a_megabyte_of_unclosed_answer_tags_is_fast():
  """The answer-block pattern retries every `<answer>` when `</answer>` is missing (quadratic)."""
  small = "<answer>x" * 500
  assert answer_text(small) == small == _answer_text_by_pattern(small)
  text = "<answer>x" * 116_509  # 1 MB
  start = time.perf_counter()
  assert answer_text(text) == text
  assert answer_text(text + "</answer>") == text[len("<answer>"):]
  assert time.perf_counter() - start < 0.5
