"""The sampler: greedy parity with transformers `generate`, log-probs equal to a teacher-forced
forward, top-k/top-p kept sets, determinism, early stop, bucketed compilation."""

from __future__ import annotations

import os

os.environ.setdefault("USE_TF", "0")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

import qwen_testutil as qt  # noqa: E402
from vcoach_jax import model as vm  # noqa: E402
from vcoach_jax.sampling import Sampler, SamplingConfig  # noqa: E402
from vcoach_jax.model import batching  # noqa: E402
from vcoach_jax.sampling import buckets  # noqa: E402

PAD, EOS = 0, 505
N = 10
GRIDS = [(2, 4, 4), (2, 4, 6)]
SECONDS = [1.0, 0.5]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  hf = qt.hf_model(seed=11)
  path = tmp_path_factory.mktemp("ckpt")
  hf.save_pretrained(path)
  return hf, vm.load_hf(path)


def _prompts(seed=0, lengths=(3, 9, 5)):
  """Three left-padded prompts of different lengths: two with a video, one text only."""
  rng = np.random.default_rng(seed)
  rows = [qt.text_row(rng, lengths[0]) + qt.vision_run(qt.VIDEO, GRIDS[0]) + qt.text_row(rng, 2),
          qt.text_row(rng, lengths[1]),
          qt.text_row(rng, lengths[2]) + qt.vision_run(qt.VIDEO, GRIDS[1]) + qt.text_row(rng, 1)]
  return qt.make_inputs(rows, videos=GRIDS, seconds=SECONDS, seed=seed)


def _sampler(jm, end_ids=(EOS,)):
  return Sampler(jm, None, end_ids=end_ids, pad_id=PAD)


def _hf_generate(hf, raw, end_ids, n):
  kw = {k: torch.from_numpy(np.asarray(v)) for k, v in raw.items()}
  kw["second_per_grid_ts"] = list(SECONDS)
  with torch.no_grad():
    out = hf.generate(**kw, do_sample=False, max_new_tokens=n, eos_token_id=list(end_ids),
                      pad_token_id=PAD)
  new = out[:, raw["input_ids"].shape[1]:].numpy()
  return np.pad(new, ((0, 0), (0, n - new.shape[1])), constant_values=PAD)


def _teacher_forced(jm, raw, rollouts, g):
  """Log-softmax of the full forward over prompt + completion, per completion token, and the
  logits that predicted each completion token ([R, N, V])."""
  r = len(rollouts.tokens)
  rep = lambda x: np.repeat(np.asarray(x), g, axis=0)  # noqa: E731
  full = {
      "input_ids": np.concatenate([rep(raw["input_ids"]), rollouts.tokens], 1),
      "attention_mask": np.concatenate([rep(raw["attention_mask"]), rollouts.mask], 1),
      "video_grid_thw": rep(raw["video_grid_thw"]),
      "second_per_grid_ts": rep(raw["second_per_grid_ts"]),
  }
  # The videos of rows 0 and 2, each repeated for the row's g copies.
  sizes = np.prod(raw["video_grid_thw"], -1)
  vids = np.split(raw["pixel_values_videos"], np.cumsum(sizes)[:-1])
  full["pixel_values_videos"] = np.concatenate([v for v in vids for _ in range(g)])
  t = raw["input_ids"].shape[1]
  logits = np.asarray(vm.logits(jm, full))[:, t - 1:t - 1 + rollouts.tokens.shape[1]]
  lp = jax.nn.log_softmax(logits, axis=-1)
  picked = np.take_along_axis(np.asarray(lp), rollouts.tokens[..., None], -1)[..., 0]
  assert picked.shape == (r, rollouts.tokens.shape[1])
  return picked, logits


def _check_end_invariants(out, end_ids):
  for tok, m, lp in zip(out.tokens, out.mask, out.logprobs):
    ends = np.nonzero(np.isin(tok, end_ids))[0]
    stop = ends[0] + 1 if len(ends) else len(tok)
    np.testing.assert_array_equal(m, np.arange(len(tok)) < stop)
    assert (tok[stop:] == PAD).all() and (lp[stop:] == 0).all()
    assert (lp[:stop] < 0).all()


def test_greedy_matches_transformers_generate(models):
  hf, jm = models
  raw = _prompts()
  free = _hf_generate(hf, raw, [EOS], N)  # the unconstrained greedy continuations
  # End ids that occur in every row (at step 3, 6 or 5 at the latest; earlier if the token
  # came before): rows stop at different steps and are padded after their end.
  end_ids = [int(free[1, 3]), int(free[0, 6]), int(free[2, 5])]
  sampler = _sampler(jm, end_ids)
  out = sampler.generate(vm.prepare_inputs(jm.config, raw),
                         SamplingConfig(greedy=True, max_new_tokens=N), jax.random.key(0))
  np.testing.assert_array_equal(out.tokens, _hf_generate(hf, raw, end_ids, N))
  _check_end_invariants(out, end_ids)
  assert out.mask[1].sum() <= 4 and out.mask[0].sum() <= 7 and out.mask[2].sum() <= 6
  # Every row ended, so the loop stopped at the latest end, not at N.
  assert sampler.last_num_steps == out.mask.sum(1).max() < N
  # Before its end each row is the unconstrained greedy continuation.
  np.testing.assert_array_equal(np.where(out.mask == 1, free, PAD), out.tokens)


def _hf_generate_alone(hf, raw, end_ids, n, penalty):
  """transformers `generate` on each prompt alone (its padding removed): the rows' greedy
  continuations with the repetition penalty, [B, n] padded with PAD after the end."""
  sizes = np.prod(raw["video_grid_thw"], -1)
  vids = np.split(raw["pixel_values_videos"], np.cumsum(sizes)[:-1])
  video_of = {0: 0, 2: 1}  # rows 0 and 2 carry the two videos
  out = []
  for i in range(len(raw["input_ids"])):
    keep = raw["attention_mask"][i] == 1
    kw = {"input_ids": torch.from_numpy(raw["input_ids"][i][keep][None]),
          "attention_mask": torch.ones((1, int(keep.sum())), dtype=torch.long)}
    if i in video_of:
      v = video_of[i]
      kw.update(pixel_values_videos=torch.from_numpy(vids[v]),
                video_grid_thw=torch.from_numpy(raw["video_grid_thw"][v:v + 1]),
                second_per_grid_ts=[SECONDS[v]])
    with torch.no_grad():
      got = hf.generate(**kw, do_sample=False, max_new_tokens=n, eos_token_id=list(end_ids),
                        pad_token_id=PAD, repetition_penalty=penalty)
    new = got[0, kw["input_ids"].shape[1]:].numpy()
    out.append(np.pad(new, (0, n - len(new)), constant_values=PAD))
  return np.stack(out)


def test_repetition_penalty_matches_transformers_generate(models):
  """Greedy with a repetition penalty = transformers `generate(repetition_penalty=p)` on each
  prompt; the batch is left padded (three lengths, two with a video) and the padding is not
  part of a row's seen set. Both penalties change the completions (the test can fail)."""
  hf, jm = models
  raw = _prompts(seed=5)
  n = 16
  sampler = _sampler(jm, (EOS,))
  inputs = vm.prepare_inputs(jm.config, raw)
  plain = sampler.generate(inputs, SamplingConfig(greedy=True, max_new_tokens=n),
                           jax.random.key(0)).tokens
  for penalty in (1.05, 3.0):
    out = sampler.generate(inputs, SamplingConfig(greedy=True, max_new_tokens=n,
                                                  repetition_penalty=penalty), jax.random.key(0))
    np.testing.assert_array_equal(out.tokens, _hf_generate_alone(hf, raw, [EOS], n, penalty))
    assert (out.tokens != plain).any()  # the penalty changes these completions
  # The penalty is off at 1.0 (no seen-set carry): the plain greedy program.
  np.testing.assert_array_equal(plain, _hf_generate(hf, raw, [EOS], n))


def test_repetition_penalty_rule():
  """Known values: seen positive logits divided, seen negative ones multiplied, others kept;
  the prompt's padding is not seen."""
  from vcoach_jax.sampling import select  # pylint: disable=g-import-not-at-top
  ids = jnp.array([[0, 0, 3, 1], [2, 3, 3, 1]])
  mask = jnp.array([[0, 0, 1, 1], [1, 1, 1, 1]])
  seen = select.prompt_seen(ids, mask, 5)
  np.testing.assert_array_equal(seen, [[0, 1, 0, 1, 0], [0, 1, 1, 1, 0]])
  seen = select.mark_seen(seen, jnp.array([4, 2]))
  logits = jnp.array([[2.0, -1.0, 0.5, -4.0, 1.0], [2.0, -1.0, 0.5, -4.0, 1.0]])
  got = select.repetition_penalty(logits, seen, jnp.float32(2.0))
  np.testing.assert_allclose(got, [[2.0, -2.0, 0.5, -8.0, 0.5], [2.0, -2.0, 0.25, -8.0, 1.0]])


def test_logprobs_and_kept_sets_match_teacher_forced_forward(models):
  _, jm = models
  raw = _prompts(seed=1)
  g, top_k, top_p, temp = 3, 6, 0.6, 0.8
  cfg = SamplingConfig(temperature=temp, top_k=top_k, top_p=top_p, max_new_tokens=N,
                       num_samples=g)
  out = _sampler(jm).generate(vm.prepare_inputs(jm.config, raw), cfg, jax.random.key(3))
  assert out.tokens.shape == (3 * g, N) and len(out.texts) == 3 * g
  want, logits = _teacher_forced(jm, raw, out, g)
  valid = out.mask == 1
  assert np.abs(out.logprobs - want)[valid].max() <= 1e-4
  assert (out.logprobs[~valid] == 0).all()
  # Kept set from the logits: rank < top_k among the tempered logits, and the mass of the
  # (renormalised top-k) tokens ranked above it < top_p.
  scaled = logits / temp
  order = np.argsort(-scaled, axis=-1)[..., :top_k]
  top = np.take_along_axis(scaled, order, -1)
  probs = np.exp(top - top.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  before = np.cumsum(probs, -1) - probs
  for i, j in zip(*np.nonzero(valid)):
    rank = np.nonzero(order[i, j] == out.tokens[i, j])[0]
    assert len(rank) == 1, (i, j, "outside the top-k")
    assert before[i, j, rank[0]] < top_p + 1e-5, (i, j, "outside the top-p set")
  # Samples of one prompt differ from each other (G independent draws).
  assert len({tuple(t) for t in out.tokens[:g]}) > 1


def test_keys_temperature_and_compile_count(models):
  _, jm = models
  sampler = _sampler(jm)
  inputs = vm.prepare_inputs(jm.config, _prompts(seed=2))
  cfg = SamplingConfig(max_new_tokens=N, num_samples=2, top_k=0, top_p=1.0)
  a = sampler.generate(inputs, cfg, jax.random.key(5))
  b = sampler.generate(inputs, cfg, jax.random.key(5))
  c = sampler.generate(inputs, cfg, jax.random.key(6))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.logprobs, b.logprobs)
  assert (a.tokens != c.tokens).any()
  # Temperature is traced: no new program; near 0 it is greedy.
  cold = sampler.generate(inputs, SamplingConfig(temperature=1e-5, top_k=0, top_p=1.0,
                                                 max_new_tokens=N, num_samples=2),
                          jax.random.key(7))
  assert sampler.num_compilations == 1
  greedy = sampler.generate(inputs, SamplingConfig(greedy=True, max_new_tokens=N,
                                                   num_samples=2), jax.random.key(7))
  np.testing.assert_array_equal(cold.tokens, greedy.tokens)
  assert sampler.num_compilations == 2
  # Another batch in the same buckets (4 rows, prompt length <= 32, same vision sizes) reuses
  # the greedy program.
  other = _prompts(seed=3, lengths=(1, 4, 2))
  more = dict(other)
  for k in ("input_ids", "attention_mask"):
    more[k] = np.concatenate([other[k], other[k][1:2]])
  assert other["input_ids"].shape[1] != inputs.input_ids.shape[1]
  assert buckets.prompt_bucket(other["input_ids"].shape[1]) == buckets.prompt_bucket(
      inputs.input_ids.shape[1])
  out4 = sampler.generate(vm.prepare_inputs(jm.config, more), greedy_cfg(), jax.random.key(0))
  assert sampler.num_compilations == 2 and out4.tokens.shape == (4 * 2, N)


def greedy_cfg():
  return SamplingConfig(greedy=True, max_new_tokens=N, num_samples=2)


def test_buckets_pad_a_pipeline_batch(models):
  """A fixed-shape pipeline batch (`batching.batch_inputs`: padding patches with out-of-range
  slots, one block of patches per row) padded to 4 rows x 64 tokens keeps its per-row patch
  blocks (their count is the config's) and the real rows' logits."""
  _, jm = models
  rng = np.random.default_rng(4)
  grids = [[(1, 4, 4)], [], [(1, 4, 6), (1, 2, 4)]]
  rows = []
  for gs in grids:
    rows.append(qt.text_row(rng, 2) + sum((qt.vision_run(qt.IMAGE, g) + qt.text_row(rng, 1)
                                           for g in gs), []))
  raw = qt.make_inputs(rows, images=[g for gs in grids for g in gs])
  b, max_patches = len(rows), 48
  arrays = {"input_ids": raw["input_ids"], "attention_mask": raw["attention_mask"],
            "pixel_values": np.zeros((b, max_patches, qt.PATCH_DIM), np.float32),
            "image_grid_thw": np.zeros((b, 2, 3), np.int32),
            "num_images": np.array([len(gs) for gs in grids], np.int32),
            "num_patches": np.array([sum(int(np.prod(g)) for g in gs) for gs in grids])}
  at = 0
  for i, gs in enumerate(grids):
    n = arrays["num_patches"][i]
    arrays["pixel_values"][i, :n] = raw["pixel_values"][at:at + n]
    arrays["image_grid_thw"][i, :len(gs)] = np.asarray(gs).reshape(-1, 3)
    at += n
  inputs = batching.batch_inputs(jm.config, arrays)
  padded = buckets.pad_inputs(inputs, 4, 64, PAD)
  assert padded.input_ids.shape == (4, 64) and padded.pixels.shape[0] == b * max_patches
  assert padded.windows.gather.shape[0] == padded.frames.gather.shape[0] == b  # blocks kept
  assert not padded.attention_mask[3].any()
  logits = np.asarray(nnx.jit(lambda m, x: m(x)[0])(jm, jax.tree.map(jnp.asarray, padded)))
  want = np.asarray(vm.logits(jm, raw))
  t = inputs.input_ids.shape[1]
  valid = raw["attention_mask"].astype(bool)
  assert np.abs(logits[:3, 64 - t:] - want)[valid].max() <= 1e-5


def test_sampling_config_from_config_and_validation():
  from vcoach_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = SamplingConfig.from_config(config_lib.load().sampling)
  assert cfg == SamplingConfig(num_samples=4)  # reference 8.1: G=4, 1.0 / 0.95 / 50, 768
  for bad in ("sampling.top_p=1.5", "sampling.temperature=-1", "sampling.top_k=-2",
              "sampling.num_samples=0", "sampling.batch_buckets=()",
              "sampling.repetition_penalty=0"):
    with pytest.raises(config_lib.ConfigError, match=bad.split("=")[0]):
      config_lib.load(overrides=[bad])
  with pytest.raises(ValueError, match="top_p"):
    SamplingConfig(top_p=0.0)
  with pytest.raises(ValueError, match="repetition_penalty"):
    SamplingConfig(repetition_penalty=-1.0)
