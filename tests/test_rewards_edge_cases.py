"""The edge-case table of docs/rewards.md, one test (or parametrised row) per line of the table.

RAISES rows: the reward is 0 and the event is counted in RewardStats.raised. Rows about unknown
task strings and option typos follow this project's deliberate difference: ValueError.
"""

import math

import numpy as np
import pytest

from vcoach_jax import rewards

PAPER = {"spatial_iou_mode": "avg", "identity_match_mode": "soft",
         "spatial_norm_mode": "matched", "correct_tempgate": True}
ST, TG, TG_MCQ = "temporal-spatial free-form QA", "temporal QA", "temporal QA (MCQ)"
MCQ, FREE, VQA = "General video QA MCQ", "General video QA Free-form", "visual QA"

# A temporal-spatial sample: 100x100 frames, two key frames with one object each.
KEY_FRAMES = [{"idx": 0, "time": 5.0, "path": "a.jpg"}, {"idx": 1, "time": 10.0, "path": "b.jpg"}]
KEY_ITEMS = {"0": {"man": [[0.1, 0.1, 0.5, 0.5]]}, "1": {"dog": [[0.5, 0.5, 0.9, 0.9]]}}
MAN_BOX = "<box>[10, 10, 50, 50]</box>"  # exactly the man's GT box in pixels


def sample(task=ST, answer="a man walks", **overrides):
  s = {"task": task, "answer": answer, "key_frames": KEY_FRAMES, "key_items": KEY_ITEMS,
       "image_size": [100, 100], "image_size_refine": None, "step_percent": 1.0}
  s.update(overrides)
  return s


def score(text, options=None, **sample_kwargs):
  out, stats = rewards.compute_with_stats([text], [sample(**sample_kwargs)], options or PAPER)
  return {k: float(v[0]) for k, v in out.items()}, stats


def one(name, text, options=None, **sample_kwargs):
  return score(text, options, **sample_kwargs)[0][name]


def think(body, answer="x"):
  return f"<think>{body}</think><answer>{answer}</answer>"


# --- Rows 1-5: empty completions; unknown task strings. ---
@pytest.mark.parametrize("task", rewards.TASKS)
def test_row01_empty_completion_scores_zero(task):
  got, stats = score("", task=task, answer="[1, 2]" if "temporal QA" in task else "A")
  assert all(v == 0.0 for v in got.values())
  assert not stats.raised


@pytest.mark.parametrize("task", ["foo", "Temporal QA", ""])
def test_rows02_05_unknown_task_is_refused(task):
  with pytest.raises(ValueError, match="unknown task"):
    score(think("<t>1</t>s"), task=task)


# --- Rows 6-14: ans_acc. ---
@pytest.mark.parametrize("pred,gt,expected", [
    ("yes", "yes", 2 / 3),  # row 6: no bigrams
    ("日本語", "日本語", 0.0),  # row 7: no tokens
    ("café", "café", 1.0 * 2 / 3),  # row 8: 'caf' one token -> 2/3
    ("the dogs running", "the dog runs", 1.0),  # row 9: stemming
    ("the big café", "the big café", 1.0),  # row 8 with context: accents are dropped alike
])
def test_rows06_09_rouge(pred, gt, expected):
  assert one("ans_acc", think("", pred), task=FREE, answer=gt) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("pred,expected", [
    ("a", 0.0), ("A)", 0.0), ("(A).", 0.0), ("A: yes", 0.0),  # row 10
    ("[A]", 1.0), ("\nA\n", 1.0), ("A", 1.0), ("A.", 1.0), ("(A)", 1.0),  # row 11
])
def test_rows10_11_mcq_letter_forms(pred, expected):
  assert one("ans_acc", f"<answer>{pred}</answer>", task=MCQ, answer="A") == expected


@pytest.mark.parametrize("pred,expected", [
    ("Correct Option: B Correct Option: A", 1.0),  # row 12: between the first two markers
    ("Correct Option: A Correct Option: B", 0.0),
    ("correct option: B", 0.0),  # row 13
    ("Correct Option:B", 1.0),  # row 14
    ("B", 0.0),  # no marker
])
def test_rows12_14_tg_mcq_marker(pred, expected):
  assert one("ans_acc", f"<answer>{pred}</answer>", task=TG_MCQ, answer="B\n[1, 2]") == expected


# --- Rows 15-21: ans_tiou. ---
@pytest.mark.parametrize("pred,gt,expected", [
    ("<t>5</t>s to <t>5</t>s", "[5, 5]", 0.0),  # row 15
    ("<t>4</t>s to <t>6</t>s", "[5, 5]", 0.0),  # row 16
    ("From <t>1</t>s  to <t>3</t>s", "[1, 3]", 0.0),  # row 17: double space
    ("<t>1</t>s to <t>3</t>s", "[1, 3]", 1.0),  # row 18: no 'From'
    ("From <t>-1</t>s to <t>3</t>s", "[1, 3]", 0.0),  # row 19
    ("From <t>5,0</t>s to <t>6</t>s", "[5, 6]", 0.0),  # row 20: comma
    ("From <t>5e0</t>s to <t>6</t>s", "[5, 6]", 0.0),  # row 20: exponent
    ("From <t>1.0</t>s to <t>3.0</t>s", "[1, 3]", 1.0),  # row 21: int GT
    ("From <t>2</t>s to <t>4</t>s", "[1, 3]", 1 / 3),
    ("From <t>4</t>s to <t>2</t>s", "[1, 3]", 0.0),  # inverted prediction
    ("From <t>1.2.3</t>s to <t>4</t>s", "[1, 3]", 0.0),
])
def test_rows15_21_answer_tiou(pred, gt, expected):
  assert one("ans_tiou", think("", pred), task=TG, answer=gt) == pytest.approx(expected, abs=1e-12)


# --- Rows 20, 22-24: thinking times. ---
@pytest.mark.parametrize("body,expected", [
    ("<t>5,0</t>s <t>2</t>s", 1.0),  # row 20: the comma time is absent
    ("<t>.5</t>s <t>2.</t>s <t>3</t>s", 2 / 3),  # row 22: parse, bounds inclusive
    ("<t>1</t>s <t>1.2.3</t>s", 0.0),  # row 23: one bad time empties the list
    ("<t>5</t> s <t>2</t>s", 1.0),  # row 24: space before s
])
def test_rows20_24_segment(body, expected):
  assert one("thk_temporal_segment", think(body), task=TG, answer="[0.5, 2.0]") == pytest.approx(
      expected)


def test_row23_point_bad_time_empties_list():
  assert one("thk_temporal_point", think("<t>5</t>s <t>1.2.3</t>s")) == 0.0
  assert one("thk_temporal_point", think("<t>5</t>s")) == 1.0


# --- Rows 25-26: thk_temporal_point curriculum and empty key frames. ---
@pytest.mark.parametrize("p,sigma", [(0.0, 4.0), (0.7499, 1.0004), (0.75, 1.0), (1.0, 1.0),
                                     (1.5, 1.0)])
def test_row25_sigma_curriculum(p, sigma):
  got = one("thk_temporal_point", think("<t>6</t>s"), step_percent=p)  # d = 1 to 5.0
  assert got == pytest.approx(math.exp(-1 / (2 * sigma ** 2)), abs=1e-12)


def test_row26_empty_key_frames_raises_counted():
  got, stats = score(think("<t>5</t>s"), key_frames=[])
  assert got["thk_temporal_point"] == 0.0
  assert stats.raised["thk_temporal_point"] == 1
  got, stats = score(think("no times"), key_frames=[])  # no times: the reference returns first
  assert not stats.raised


# --- Rows 27, 32, 38, 40-56: thk_spatial on the temporal-spatial path. ---
def claim(name="man", boxes=MAN_BOX, time="5"):
  return f"<obj>{name}</obj>{boxes}at<t>{time}</t>s"


def test_row27_missing_key_item_raises_counted():
  got, stats = score(think(claim()), key_items={"1": KEY_ITEMS["1"]})
  assert got["thk_spatial"] == 0.0 and stats.raised["thk_spatial"] == 1
  got, stats = score(think(claim(time="30")), key_items={"1": KEY_ITEMS["1"]})
  assert not stats.raised  # gated out before the lookup


def test_row32_nested_box_drops_claim():
  text = think(claim() + claim(boxes="<box>[[10, 10, 50, 50]]</box>"))
  assert one("thk_spatial", text, options={**PAPER, "spatial_norm_mode": "all"}) == 1.0


def test_row38_newline_box_keeps_claim_without_boxes():
  text = think(claim() + claim(boxes="<box>[10,\n10, 50, 50]</box>"))
  assert one("thk_spatial", text, options={**PAPER, "spatial_norm_mode": "all"}) == 0.5
  assert one("thk_spatial", text) == 1.0


@pytest.mark.parametrize("text", [
    think(f"<obj>man</obj> {MAN_BOX}at<t>5</t>s"),
    think(f"<obj>man</obj>{MAN_BOX} at<t>5</t>s"),
    think(f"<obj>man</obj>{MAN_BOX} at <t>5</t>s"),
])
def test_row40_whitespace_breaks_claim(text):
  assert one("thk_spatial", text) == 0.0


@pytest.mark.parametrize("time,expected", [
    ("5e0", 1.0), (" 5.0 ", 1.0), ("5.0", 1.0), ("١٠", 0.0), ("٥", 1.0),  # unicode digits
    ("nan", 0.0), ("inf", 0.0), ("-inf", 0.0), ("-4.5", 0.0), ("1.2.3", 0.0)])
def test_row41_claim_time_float_semantics(time, expected):
  text = think(claim(time=time))
  assert one("thk_spatial", text) == expected
  assert one("thk_spatial", text, options={**PAPER, "correct_tempgate": False}) == (
      1.0 if expected == 1.0 else 0.0)


def test_row41_underscore_time():
  assert one("thk_spatial", think(claim(name="dog", boxes="<box>[50, 50, 90, 90]</box>",
                                        time="1_0"))) == 1.0


def test_rows42_44_gate_boundaries():
  one_sided = {**PAPER, "correct_tempgate": False}
  assert one("thk_spatial", think(claim(time="4.0"))) == 1.0  # row 42: |g - t| = 1
  assert one("thk_spatial", think(claim(time="6.0"))) == 1.0
  assert one("thk_spatial", think(claim(time="4.0")), options=one_sided) == 0.0  # row 43
  assert one("thk_spatial", think(claim(time="3.9")), options=PAPER) == 0.0
  # Row 44: a key frame long before t passes the one-sided gate; the nearest (10 s) is chosen.
  far = think(claim(name="dog", boxes="<box>[50, 50, 90, 90]</box>", time="50"))
  assert one("thk_spatial", far, options=one_sided) == 1.0
  assert one("thk_spatial", far) == 0.0


def test_row45_equal_times_first_frame_wins():
  frames = [{"idx": 0, "time": 5.0}, {"idx": 1, "time": 5.0}]
  assert one("thk_spatial", think(claim()), key_frames=frames) == 1.0
  frames = [{"idx": 1, "time": 5.0}, {"idx": 0, "time": 5.0}]
  assert one("thk_spatial", think(claim()), key_frames=frames) == 0.0  # dog frame, no 'man'


def test_row46_equidistant_first_in_list_wins():
  frames = [{"idx": 0, "time": 5.0}, {"idx": 1, "time": 6.0}]
  assert one("thk_spatial", think(claim(time="5.5")), key_frames=frames) == 1.0
  frames = [{"idx": 1, "time": 6.0}, {"idx": 0, "time": 5.0}]
  assert one("thk_spatial", think(claim(time="5.5")), key_frames=frames) == 0.0


def test_rows47_48_identity_modes():
  strict = {**PAPER, "identity_match_mode": "strict"}
  assert one("thk_spatial", think(claim(name=""))) == 1.0  # row 47: soft matches every object
  assert one("thk_spatial", think(claim(name="")), options=strict) == 0.0
  assert one("thk_spatial", think(claim(name="MAN")), options=strict) == 1.0  # row 48
  assert one("thk_spatial", think(claim(name="old man"))) == 1.0  # soft: shared word
  assert one("thk_spatial", think(claim(name="old man")), options=strict) == 0.0
  assert one("thk_spatial", think(claim(name="woman"))) == 1.0  # soft: substring
  assert one("thk_spatial", think(claim(name="cat"))) == 0.0


@pytest.mark.parametrize("option,value", [
    ("identity_match_mode", "exact"), ("spatial_iou_mode", "mean"),
    ("spatial_norm_mode", "none"), ("correct_tempgate", "yes"), ("correct_tempgate", 1)])
def test_rows49_51_option_typos_are_refused(option, value):
  with pytest.raises(ValueError, match=option):
    score(think(claim()), options={**PAPER, option: value})


TWO_OBJECTS = {"0": {"man": [[0.1, 0.1, 0.5, 0.5]], "ball": [[0.6, 0.6, 0.8, 0.8]]}}


def test_rows52_53_none_mode_dilutes_avg():
  none_avg = {**PAPER, "identity_match_mode": "none"}
  none_max = {**none_avg, "spatial_iou_mode": "max"}
  assert one("thk_spatial", think(claim()), options=none_avg, key_items=TWO_OBJECTS) == 0.5
  assert one("thk_spatial", think(claim()), options=none_max, key_items=TWO_OBJECTS) == 1.0


def test_row54_gt_object_with_two_boxes():
  items = {"0": {"man": [[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]]}}
  assert one("thk_spatial", think(claim()), key_items=items) == 0.5


def test_rows55_56_norm_modes():
  text = think(claim() + claim(time="30"))  # the second claim is gated out
  assert one("thk_spatial", text, options={**PAPER, "spatial_norm_mode": "all"}) == 0.5
  assert one("thk_spatial", text) == 1.0
  assert one("thk_spatial", think(claim(time="30"))) == 0.0  # row 56


def test_rows57_58_missing_answer_close():
  text = f"<think>{claim()} <t>5</t>s</think><answer>x"
  assert one("thk_spatial", text) == 0.0  # row 57
  assert one("thk_temporal_point", text) == 1.0  # row 58
  assert one("thk_temporal_segment", "<think><t>1</t>s</think>", task=TG, answer="[0, 2]") == 1.0


def test_row59_only_first_think_block():
  text = f"<think>nothing</think><think>{claim()}</think><answer>x</answer>"
  got, _ = score(text)
  assert got["thk_spatial"] == 0.0 and got["thk_temporal_point"] == 0.0
  assert got["format"] == 0.5  # the first block has no grounding


# --- Rows 28-31, 33-37, 39: boxes and the visual-QA path. ---
VQA_GT = "<obj>car</obj><box>[10, 20, 30, 40]</box>"


def vqa(text, **kw):
  kw.setdefault("image_size", [100, 100])
  kw.setdefault("image_size_refine", [100, 100])
  got, stats = score(text, task=VQA, answer=VQA_GT, **kw)
  return got, stats


def test_rows28_29_missing_refine_size():
  text = think("<box>[10, 20, 30, 40]</box>", "<box>[10, 20, 30, 40]</box>")
  got, stats = vqa(text)
  assert got["ans_viou"] == 1.0 and got["thk_spatial"] == 1.0
  got, stats = vqa(text, image_size_refine=None)
  assert got["ans_viou"] == 0.0  # row 28: caught, not an event
  assert got["thk_spatial"] == 0.0 and stats.raised["thk_spatial"] == 1  # row 29


def test_rows30_31_nested_vqa_boxes():
  nested = "<box>[[1, 2], [3, 4], [5, 6], [7, 8]]</box>"
  got, stats = vqa(think(nested + "<box>[10, 20, 30, 40]</box>", nested))
  assert got["thk_spatial"] == 0.0 and stats.raised["thk_spatial"] == 1  # row 30
  assert got["ans_viou"] == 0.0  # row 31


@pytest.mark.parametrize("box,expected", [
    ('["10", "20", "30", "40"]', 1.0),  # row 33
    ("[null, 20, 30, 40]", 0.0), ('["a", 20, 30, 40]', 0.0),  # row 34
    ("[30, 20, 10, 40]", 0.0), ("[10, 40, 30, 20]", 0.0), ("[10, 20, 10, 40]", 0.0),  # row 35
    ("[0, 0, 40, 60]", 400 / 2400),  # row 36: no clipping (GT 400 inside a 2400 box)
    ("[-10, 0, 30, 40]", 400 / 1600),
    ("[10, 20, 30]", 0.0), ("[10, 20, 30, 40, 50]", 0.0),  # arity
])
def test_rows33_36_box_values(box, expected):
  got, _ = vqa(think(f"<box>{box}</box>", f"<box>{box}</box>"))
  assert got["ans_viou"] == pytest.approx(expected, abs=1e-12)
  assert got["thk_spatial"] == pytest.approx(expected, abs=1e-12)


def test_row37_refine_rescale_with_different_ratios():
  answer = "<obj>red car</obj><box>[266, 380, 336, 492]</box>"
  pred = [260, 370, 330, 480]
  gt = [266 * 336 / 336, 380 * 588 / 596, 336 * 336 / 336, 492 * 588 / 596]
  inter = (min(gt[2], pred[2]) - max(gt[0], pred[0])) * (min(gt[3], pred[3]) - max(gt[1], pred[1]))
  union = (gt[2] - gt[0]) * (gt[3] - gt[1]) + (pred[2] - pred[0]) * (pred[3] - pred[1]) - inter
  text = f"<think>x</think><answer><box>{pred}</box></answer>"
  got = one("ans_viou", text, task=VQA, answer=answer, image_size=[336, 596],
            image_size_refine=[336, 588])
  assert got == pytest.approx(inter / union, abs=1e-12)
  assert 0.7 < got < 0.8


def test_row39_newline_box_in_vqa_path():
  got, _ = vqa(think("<box>[10,\n20, 30, 40]</box>", "<box>[10,\n20, 30, 40]</box>"))
  assert got["ans_viou"] == 0.0 and got["thk_spatial"] == 0.0


def test_huge_integer_box_raises_counted_in_think_but_not_answer():
  big = "1" + "0" * 400  # an int no float can hold: numpy's conversion overflows
  got, stats = vqa(think(f"<box>[{big}, 20, 30, 40]</box>", f"<box>[{big}, 20, 30, 40]</box>"))
  assert got["thk_spatial"] == 0.0 and stats.raised["thk_spatial"] == 1
  assert got["ans_viou"] == 0.0


# --- Rows 60-66: format. ---
@pytest.mark.parametrize("text,task,expected", [
    (f"<think>{claim()}</think><answer>x</answer><think>", ST, 0.0),  # row 60
    (f"junk <answer>x</answer> junk <think>{claim()}</think> junk", ST, 1.0),  # row 61
    (f"<think>{claim()}</think><answer><t>x</answer>", ST, 1.0),  # row 62
    ("<think><obj>red car</obj><box>[1,2,3,4]</box></think><answer>x</answer>", VQA, 0.5),  # 63
    ("<think>x</think><answer><obj>voiture_é</obj><box>[1,2,3,4]</box></answer>", VQA, 1.0),  # 64
    ("<think><t>1</t>s</think><answer>x</answer>", TG, 0.5),  # row 65
    ("<think><t>1</t>s <t>2</t>s</think><answer>x</answer>", TG_MCQ, 1.0),
    ("<think>plain</think><answer>x</answer>", MCQ, 1.0),  # row 66
    ("<think>plain</think><answer>x</answer>", FREE, 1.0),
    ("<think>plain</think><answer>x</answer>", ST, 0.5),
    ("<think><obj>a</think><answer>x</answer>", FREE, 0.0),  # unbalanced obj in think
    ("<think>a</think>", FREE, 0.0),  # no answer
])
def test_rows60_66_format(text, task, expected):
  assert one("format", text, task=task, answer="[1, 2]") == expected


# --- Rows 67-70: batches and types. ---
def test_row67_per_sample_indexing_after_an_error():
  bad = sample(task=TG, answer="not a segment")
  good = sample(task=TG, answer="[1, 2]")
  text = "<think><t>1.5</t>s</think><answer><t>1</t>s to <t>2</t>s</answer>"
  out, stats = rewards.compute_with_stats([text, text], [bad, good], PAPER)
  assert out["ans_tiou"].tolist() == [0.0, 1.0]
  assert out["thk_temporal_segment"].tolist() == [0.0, 1.0]
  assert stats.raised["thk_temporal_segment"] == 1


def test_row68_mixed_tasks_use_their_own_task():
  text = "<think><t>1.5</t>s</think><answer>A</answer>"
  out = rewards.compute([text, text], [sample(task=TG, answer="[1, 2]"),
                                       sample(task=MCQ, answer="A")], PAPER)
  assert out["thk_temporal_segment"].tolist() == [1.0, 0.0]
  assert out["ans_acc"].tolist() == [0.0, 1.0]


def test_row69_gt_cut_at_answer_close():
  assert one("ans_acc", "<answer>cat</answer>", task=FREE, answer="cat</answer> dog") == (
      pytest.approx(2 / 3))


def test_row70_return_types():
  out = rewards.compute(["", "<answer>A</answer>"], [sample(task=MCQ, answer="A")] * 2, PAPER)
  assert set(out) == set(rewards.REWARD_NAMES)
  for value in out.values():
    assert value.dtype == np.float64 and value.shape == (2,)


def test_reference_message_form_is_accepted():
  out = rewards.compute([[{"content": "<answer>A</answer>"}]], [sample(task=MCQ, answer="A")],
                        PAPER)
  assert out["ans_acc"][0] == 1.0


def test_length_mismatch_is_refused():
  with pytest.raises(ValueError, match="completions"):
    rewards.compute(["a", "b"], [sample()], PAPER)
