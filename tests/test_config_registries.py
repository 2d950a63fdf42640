"""Config choices are the registries of the modules that implement them: validation reads them
(a new choice is one edit, in its module), and the code dispatches through them."""

from __future__ import annotations

import numpy as np
import pytest

from vcoach_jax import config as config_lib
from vcoach_jax.data import frame_times
from vcoach_jax.evaluation import items, protocols
from vcoach_jax.evaluation.evaluate import REFERENCE_SUMMARIES, SUMMARIES, summarize
from vcoach_jax.model import layers
from vcoach_jax.prompting import visual_prompts as vp
from vcoach_jax.rl import methods, optim


@pytest.mark.parametrize("key", sorted(config_lib.CHOICES))
def test_an_unknown_choice_names_the_key_and_the_registry(key):
  names = config_lib.choices(key)
  assert names and all(isinstance(n, str) for n in names), names
  default = config_lib.flatten(config_lib.default_config())[key]
  assert default in names  # the embedded default is one of them
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.load(None, [f"{key}=no_such_choice"])
  assert str(e.value) == (f"config key {key!r} must be one of {names}, got 'no_such_choice'")


def test_the_choices_are_the_registries_keys():
  assert config_lib.choices("model.attention_impl") == tuple(layers.ATTENTION)
  assert config_lib.choices("model.remat_policy") == tuple(layers.REMAT_POLICIES)
  assert config_lib.choices("optim.schedule") == ("cosine", "constant")
  assert config_lib.choices("rl.method") == ("gspo", "coach", "full")
  assert config_lib.choices("eval.protocol") == protocols.NAMES
  assert config_lib.choices("rewards.identity_match_mode") == ("none", "soft", "strict")
  assert vp.PROMPT_TYPES == tuple(vp.RENDERERS) and vp.PROMPT_TYPES[0] == "raw"
  # Every benchmark has a summary, every reference summary a benchmark.
  assert set(SUMMARIES) == set(items.BENCHMARKS)
  assert set(REFERENCE_SUMMARIES) <= set(items.BENCHMARKS)


def test_a_name_added_to_a_registry_is_accepted_without_touching_config_py(monkeypatch):
  with pytest.raises(config_lib.ConfigError, match="model.attention_impl"):
    config_lib.load(None, ["model.attention_impl=twice"])
  calls = []

  def twice(q, k, v, mask, chunk):
    calls.append(chunk)
    return 2 * layers.xla_attention(q, k, v, mask)

  monkeypatch.setitem(layers.ATTENTION, "twice", twice)
  monkeypatch.setitem(methods.METHODS, "coach_twice", methods.METHODS["coach"])
  monkeypatch.setattr(frame_times, "TIMESTAMPS", frame_times.TIMESTAMPS + ("rounded",))
  c = config_lib.load(None, ["model.attention_impl=twice", "rl.method=coach_twice",
                             "video.timestamps=rounded", "model.attention_chunk=7"])
  assert (c.model.attention_impl, c.rl.method, c.video.timestamps) == (
      "twice", "coach_twice", "rounded")
  # ... and the code dispatches through the same registry.
  rng = np.random.default_rng(0)
  q, k, v = (rng.normal(size=(1, 3, 2, 4)).astype(np.float32) for _ in range(3))
  mask = np.tril(np.ones((1, 3, 3), bool))
  out = layers.attention(q, k, v, mask, c.model.attention_impl, c.model.attention_chunk)
  np.testing.assert_allclose(out, 2 * layers.attention(q, k, v, mask, "xla"), rtol=1e-6)
  assert calls == [7]


def test_schedules_registry_values():
  class Optim:  # the fields of config.optim a schedule reads
    lr, warmup_steps, total_steps = 1.0, 2, 6
    schedule = "constant"
  assert [float(optim.learning_rate_schedule(Optim)(s)) for s in (0, 1, 2, 5)] == [
      0.0, 0.5, 1.0, 1.0]
  Optim.schedule, Optim.warmup_steps = "cosine", 0
  lr = optim.learning_rate_schedule(Optim)
  assert float(lr(0)) == 1.0 and float(lr(3)) == pytest.approx(0.5) and float(lr(6)) == 0.0
  Optim.schedule = "linear"
  with pytest.raises(ValueError, match=r"'optim.schedule' must be one of \('cosine', "
                                       r"'constant'\), got 'linear'"):
    optim.learning_rate_schedule(Optim)


def test_code_refuses_a_name_outside_its_registry_naming_the_key():
  with pytest.raises(ValueError, match="'model.attention_impl' must be one of"):
    layers.attention(*(np.zeros((1, 1, 1, 2), np.float32),) * 3, np.ones((1, 1, 1), bool), "flash")
  with pytest.raises(ValueError, match="'model.remat_policy' must be one of"):
    layers.remat_policy("some")
  with pytest.raises(ValueError, match="no summary for benchmark 'nope'"):
    summarize("nope", [])
