"""SFT targets: boxes converted to the model's input scale as the released SFT does (known
values for both grounded tasks), and the synthetic world's stored traces round-trip."""

import pytest

from vcoach_jax.data import records
from vcoach_jax.data import sft_targets as st
from vcoach_jax.data import synthetic


def test_temporal_spatial_boxes_normalised_to_frame_pixels():
  text = ("<obj>man</obj><box>[0.1, 0.25, 0.5, 1.0004]</box>at<t>3.2</t>s and "
          "<obj>cup</obj><box>[0.125,0.375,0.6,0.9]</box>at<t>4</t>s")
  out = st.convert_boxes(records.TASK_ST, text, (420, 224))
  # 0.1 * 420 = 42, 0.25 * 224 = 56, 0.5 * 420 = 210, 1.0004 * 224 = 224.09 -> 224.
  assert "<box>[42,56,210,224]</box>at<t>3.2</t>s" in out
  # On an 84 x 56 frame: 0.125 * 84 = 10.5 -> 10 and 0.375 * 56 = 21; half to even, as Python.
  out = st.convert_boxes(records.TASK_ST, text, (84, 56))
  assert out.endswith("<obj>cup</obj><box>[10,21,50,50]</box>at<t>4</t>s")


def test_visual_qa_boxes_original_to_resized_pixels():
  text = "<think>It is <obj>dog</obj><box>[100, 50, 300, 400]</box>.</think>"
  # 640 x 480 -> 364 x 280: x * 0.56875, y * 0.58333: 56.9, 29.2, 170.6, 233.3.
  out = st.convert_boxes(records.TASK_VQA, text, (364, 280), (640, 480))
  assert out == "<think>It is <obj>dog</obj><box>[57,29,171,233]</box>.</think>"
  target = st.target_text(records.TASK_VQA, "It is <obj>dog</obj><box>[64,48,320,240]</box>.",
                          "<obj>dog</obj><box>[64,48,320,240]</box>", (320, 240), (640, 480))
  assert target == ("<think>It is <obj>dog</obj><box>[32,24,160,120]</box>.</think>\n"
                    "<answer><obj>dog</obj><box>[32,24,160,120]</box></answer>")


def test_other_tasks_unchanged_and_bad_boxes_named():
  text = "<obj>a</obj><box>[0.5,0.5,0.6,0.6]</box>at<t>1</t>s"
  for task in (records.TASK_TG, records.TASK_TG_MCQ, records.TASK_MCQ, records.TASK_FREE):
    assert st.convert_boxes(task, text, (100, 100)) == text
  with pytest.raises(ValueError, match=r"record id 'x': box '<box>\[1,2,3\]</box>'"):
    st.convert_boxes(records.TASK_ST, "<box>[1,2,3]</box>", (10, 10), where="record id 'x': ")
  with pytest.raises(ValueError, match="original image size"):
    st.convert_boxes(records.TASK_VQA, "<box>[1,2,3,4]</box>", (10, 10), None)


def test_synthetic_traces_are_stored_normalised_and_convert_back_to_the_completion():
  world = synthetic.SyntheticWorld(synthetic.WorldSpec(seed=1))
  seen = set()
  for i in range(24):
    s = world.sample(i)
    r = s.record
    task = r["task"]
    w, h = s.frames.shape[2], s.frames.shape[1]
    target = st.target_text(task, r["reasoning_process"], r["sft_answer"] or r["answer"], (w, h),
                            r["image_size"])
    assert target == s.completion, (i, task)
    if task == records.TASK_ST:
      assert "<box>[0." in r["reasoning_process"]  # STGR convention: 0..1
    seen.add(task)
  assert {records.TASK_ST, records.TASK_VQA} <= seen
