"""Cold-start SFT's prompted examples: which examples get a visual prompt, and what they look
like (the prompt drawn on the key frames, its hint after the question, the same target)."""

import collections

import numpy as np

from vcoach_jax import config as config_lib
from vcoach_jax import experiment
from vcoach_jax.data import chat
from vcoach_jax.data import pipeline as data_pipeline
from vcoach_jax.sft import prompted as sft_prompted


def test_prompted_type_share_and_types():
  pick = sft_prompted.prompted_type
  ids = [f"syn-0-{i}" for i in range(2000)]
  got = collections.Counter(pick(i, 3, 0.25, ("darken", "circle")) for i in ids)
  assert abs(got[None] / 2000 - 0.75) < 0.03
  assert abs(got["darken"] - got["circle"]) < 0.1 * 2000 and set(got) == {None, "darken", "circle"}
  assert [pick(i, 3, 0.25, ("darken",)) for i in ids] == \
      [pick(i, 3, 0.25, ("darken",)) for i in ids]  # a function of (id, step): resume-safe
  assert [pick(i, 4, 0.25, ("darken",)) for i in ids] != [pick(i, 3, 0.25, ("darken",)) for i in ids]
  assert all(pick(i, 3, 0.0, ("darken",)) is None for i in ids[:50])
  assert all(pick(i, 3, 1.0, ()) is None for i in ids[:50])
  assert all(pick(i, 3, 1.0, ("darken",)) == "darken" for i in ids[:50])


def test_sft_encoder_draws_the_prompt_and_appends_its_hint(tmp_path):
  st = "temporal-spatial free-form QA"
  config = config_lib.load(None, ["synthetic.num_train=16", "synthetic.num_eval=4",
                                  f"synthetic.tasks=('{st}',)", "sft.prompted=1.0",
                                  "selector.types=('raw', 'darken')"])
  tok = experiment.tokenizer(config, tmp_path)
  pipe = experiment.pipeline(config, tok, tmp_path, shuffle_buffer=1)
  pipe.texts = pipe.texts.for_sft()
  example = pipe.next_example()
  assert sft_prompted.Plan.from_config(
      config_lib.with_overrides(config, ["sft.prompted=0.0"])) is None
  assert sft_prompted.encoder(None, pipe, 0) is None
  plan = sft_prompted.Plan.from_config(config)
  assert plan.share == 1.0 and plan.types == ("darken",)
  raw = data_pipeline.encode_example(example, pipe.processor, pipe.texts, pipe.shapes,
                                     pipe.step_percent)
  prompted = sft_prompted.encoder(plan, pipe, 0)(example)
  hint = tok(chat.PromptTexts.load().for_sft().hints["darken"], add_special_tokens=False)
  ids = prompted["input_ids"].tolist()
  n = len(hint["input_ids"])
  assert any(ids[i:i + n] == hint["input_ids"] for i in range(len(ids)))
  assert len(ids) > len(raw["input_ids"])
  np.testing.assert_array_equal(prompted["target_ids"], raw["target_ids"])
  # Only the key frames' patches change (darkened outside the asked object's box).
  changed = np.any(prompted["pixel_values"] != raw["pixel_values"], axis=-1)
  assert 0 < changed.sum() < len(changed)
