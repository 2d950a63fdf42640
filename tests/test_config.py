"""Configs: the paper's reward options by default; unknown keys and wrong types refused."""

import pathlib

import pytest

from vcoach_jax import config


def test_default_holds_the_paper_run_reward_options():
  c = config.load()
  assert config.reward_options(c) == {"spatial_iou_mode": "avg", "identity_match_mode": "soft",
                                      "spatial_norm_mode": "matched", "correct_tempgate": True}


def test_loaded_config_is_locked():
  c = config.load()
  with pytest.raises(AttributeError):
    c.rewards.new_field = 1


@pytest.mark.parametrize("override,message", [
    ("rewards.nope=1", "unknown config key 'rewards.nope'"),
    ("nope.x=1", "unknown config key 'nope'"),
    ("rewards.correct_tempgate=3", "'rewards.correct_tempgate' must be of type bool"),
    ("rewards.max_claims=2.5", "'rewards.max_claims' must be of type int"),
    ("rewards.spatial_iou_mode=mean", "must be one of ('max', 'avg')"),
    ("rewards.max_claims=0", "must be a positive integer"),
    ("rewards", "not of the form key=value"),
    ("optim.grad_accum=3", "'optim.grad_accum' = 3 must divide data.batch_size = 8"),
])
def test_bad_overrides_are_refused_naming_the_key(override, message):
  with pytest.raises(config.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config.load(None, [override])


def test_overrides_are_typed():
  c = config.load(None, ["rewards.correct_tempgate=False", "rewards.max_claims=16",
                         "rewards.identity_match_mode=none"])
  assert c.rewards.correct_tempgate is False and c.rewards.max_claims == 16
  assert c.rewards.identity_match_mode == "none"


def test_config_file_is_validated(tmp_path):
  good = tmp_path / "good.py"
  good.write_text(
      "from vcoach_jax.configs import default\n"
      "def get_config(arg=None):\n"
      "  c = default.get_config()\n"
      "  c.rewards.spatial_iou_mode = arg or 'max'\n"
      "  return c\n")
  assert config.load(f"{good}:avg").rewards.spatial_iou_mode == "avg"
  assert config.load(str(good)).rewards.spatial_iou_mode == "max"
  bad = tmp_path / "bad.py"
  bad.write_text(
      "from vcoach_jax.configs import default\n"
      "def get_config(arg=None):\n"
      "  c = default.get_config()\n"
      "  c.rewards.spatial_iou_mdoe = 'max'\n"
      "  return c\n")
  with pytest.raises(config.ConfigError, match="unknown config key 'rewards.spatial_iou_mdoe'"):
    config.load(str(bad))
  wrong_type = tmp_path / "wrong.py"
  wrong_type.write_text(
      "import ml_collections\n"
      "from vcoach_jax.configs import default\n"
      "def get_config(arg=None):\n"
      "  c = default.get_config().to_dict()\n"
      "  c['rewards']['max_times'] = '16'\n"
      "  return ml_collections.ConfigDict(c)\n")
  with pytest.raises(config.ConfigError, match="'rewards.max_times' must be of type int"):
    config.load(str(wrong_type))
  in_file = tmp_path / "in_file.py"
  in_file.write_text(
      "from vcoach_jax.configs import default\n"
      "def get_config(arg=None):\n"
      "  c = default.get_config()\n"
      "  c.rewards.max_times = 'many'\n"
      "  return c\n")
  with pytest.raises(config.ConfigError, match="max_times"):
    config.load(str(in_file))
  with pytest.raises(config.ConfigError, match="does not exist"):
    config.load(str(tmp_path / "missing.py"))


@pytest.mark.parametrize("name", ["visioncoach_7b", "sft_coldstart", "selector", "eval_vstar",
                                  "eval_charades"])
def test_shipped_configs_validate(name):
  path = pathlib.Path(__file__).parent.parent / "configs" / f"{name}.py"
  loaded = config.load(str(path))
  assert loaded.model.preset in ("qwen2_5_vl_3b", "qwen2_5_vl_7b")
  assert loaded.rl.k1 == 2.21 and loaded.sampling.num_samples == 4
