"""The prompt batch's pixels travel host -> device once per step and the same device array
feeds the sampler and the update, on 1 device and on 8 simulated devices (fsdp=4 x tensor=2);
the rollouts' tokens, mask and log-probs go from the sampler to the update on the devices (the
host reads a copy to decode and score, and uploads none of them back).

Every host -> device transfer is counted from JAX's transfer guard (`log_explicit` logs each
one with its shape); the same step with host pixels (the previous path) is the baseline. The
update's results are the same either way, and sampling the update's prompted layout (P rows,
padding rows not sampled) gives the rollouts of the h hard rows sampled on their own."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count={devices}")
    sys.path.insert(0, {tests!r})
    import dataclasses
    import jax, numpy as np
    import rl_testutil as ru
    from vcoach_jax.parallel import mesh as mesh_lib
    from vcoach_jax.rl import train_step as ts
    from vcoach_jax.sampling import Sampler, SamplingConfig

    # tests/test_rl_sharded_step.py's config and batches: on 8 devices the same update program
    # (one compilation for both tests through the suite's cache).
    cfg = ru.test_config(**{{"optim.lr": 2e-5, "data.batch_size": 4,
                            "sampling.batch_buckets": (4,)}})
    cfg.parallel.mesh = (("data", 1), ("fsdp", 4), ("tensor", 2))
    mesh = None if {devices} == 1 else mesh_lib.make_mesh(dict(cfg.parallel.mesh))
    model = ru.tiny_model()
    sampler = Sampler(model, None, mesh, end_ids=[7], pad_id=0, batch_buckets=(4,))
    sampling = SamplingConfig(num_samples=ru.G, max_new_tokens=ru.N, top_k=0)
    raw = ru.rollout_batch(model.config, 4, vision=True)
    prompted = ru.rollout_batch(model.config, 4, seed=7, prompted=True, vision=True)
    step, state0, ref = ts.setup(cfg, model, mesh, group_size=ru.G)
    key = jax.random.key(3)
    # The prompted layout's padding rows are not sampled: the 3 live rows sample as on their own.
    padded = ru.prompt_inputs(model.config, 3, True, 7, repeat_first=1)
    a = sampler.generate(sampler.place_pixels(padded), sampling, key, live_rows=3)
    b = sampler.generate(ru.prompt_inputs(model.config, 3, True, 7), sampling, key)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-6)
    print("LIVE_ROWS_OK", a.tokens.shape, flush=True)

    # Record the pixels each program receives.
    seen = []
    def spy(fn, where):
      def call(*args):
        for leaf in jax.tree.leaves(args):
          if getattr(leaf, "shape", ())[-1:] == (model.config.vision.patch_dim,):
            seen.append((where, leaf))
        return fn(*args)
      return call
    sampler._program = spy(sampler._program, "sampler")
    step.programs[4] = dataclasses.replace(step.programs[4], fn=spy(step.programs[4].fn, "update"))

    def one_step(state, place):
      prompts = [sampler.place_pixels(x.prompt) if place else x.prompt for x in (raw, prompted)]
      outs = [sampler.generate(p, sampling, key) for p in prompts]
      # placed: the sampler's device arrays of the rollouts (kept), else its host copies
      batches = [x._replace(prompt=p, **dict(zip(("tokens", "mask", "old_logprobs"),
                                                 o.placed if place else o[:3])))
                 for x, p, o in zip((raw, prompted), prompts, outs)]
      print("ROLLOUTS", outs[0].tokens.shape, flush=True)
      state, m = step(state, ref, batches[0], batches[1], key)
      return state, jax.device_get(m)

    def buffers(x):
      return sorted(s.data.unsafe_buffer_pointer() for s in x.addressable_shards)

    results = {{}}
    for place in (False, True):
      state = jax.tree.map(lambda x: x.copy(), state0)
      seen.clear()
      print(f"BEGIN {{place}}", file=sys.stderr, flush=True)
      with jax.transfer_guard_host_to_device("log_explicit"):
        state, m = one_step(state, place)
      print(f"END {{place}}", file=sys.stderr, flush=True)
      results[place] = (m, jax.tree.map(np.asarray, state.params))
      kinds = [(w, type(x).__name__) for w, x in seen]
      assert [w for w, _ in seen] == ["sampler", "sampler", "update", "update"], kinds
      (_, s_raw), (_, s_pr), (_, u_raw), (_, u_pr) = seen
      if place:  # device arrays only: the update's are the sampler's buffers when their
        # layouts agree, else made from them on the devices (the transfer count shows which)
        assert all(isinstance(x, jax.Array) for _, x in seen), kinds
        for s, u in ((s_raw, u_raw), (s_pr, u_pr)):
          assert u.sharding != s.sharding or buffers(u) == buffers(s)
        print("SAME_BUFFERS", buffers(s_raw) == buffers(u_raw), flush=True)
      else:  # the update gets pixels of its own (host arrays, or uploaded again)
        assert all(not isinstance(x, jax.Array) or buffers(x) != buffers(y)
                   for x, y in ((u_raw, s_raw), (u_pr, s_pr))), kinds
    (m0, p0), (m1, p1) = results[False], results[True]
    for k in ("loss", "gspo", "kl", "nll", "grad_norm"):
      np.testing.assert_allclose(m1[k], m0[k], rtol=1e-6, atol=1e-7, err_msg=k)
    diff = max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(x - y).max()), p0, p1)))
    assert diff <= 1e-6, diff
    placed = [sampler.place_pixels(x.prompt).pixels for x in (raw, prompted)]
    if mesh is not None:  # split over the batch axes (fsdp here), replicated over tensor
      assert all(x.sharding.spec == jax.P("fsdp", None) for x in placed), placed[0].sharding
    print("PLACED", sum(s.data.nbytes for x in placed for s in x.addressable_shards), flush=True)
    print("PIXELS", raw.prompt.pixels.shape, prompted.prompt.pixels.shape, flush=True)
    print("PLACEMENT_OK", diff, flush=True)
""")

_LINE = re.compile(r"host-to-device transfer: aval=ShapedArray\((\w+)\[([\d,]*)\]\), "
                   r"dst_sharding=(.*)")
_SIZES = {"float32": 4, "int32": 4, "bool": 1, "uint32": 4, "bfloat16": 2, "int64": 8}


def _shards(sharding: str) -> int:
  """Slices of the array one logged transfer (one device) receives 1 of: the product of the
  mesh axes its spec names."""
  if not sharding.startswith("NamedSharding"):
    return 1
  sizes = dict(re.findall(r"'(\w+)': (\d+)", sharding.split("axis_types")[0]))
  spec = sharding.split("spec=P(", 1)[1].split(")", 1)[0]
  return int(np.prod([int(sizes[a]) for a in re.findall(r"'(\w+)'", spec)] or [1]))


def uploads(log: str, marker) -> list[tuple[str, tuple[int, ...], int]]:
  """(dtype, global shape, bytes) of each host -> device transfer (one device each) logged
  between BEGIN/END `marker`."""
  body = log.split(f"BEGIN {marker}\n", 1)[1].split(f"END {marker}\n", 1)[0]
  out = []
  for d, s, sharding in _LINE.findall(body):
    shape = tuple(int(x) for x in s.split(",") if x)
    out.append((d, shape, _SIZES[d] * int(np.prod(shape)) // _shards(sharding)))
  return out


@pytest.mark.parametrize("devices", [1, 8])
def test_pixels_placed_once(devices, tmp_path):
  tests = pathlib.Path(__file__).parent
  env = dict(os.environ, USE_TF="0", TF_CPP_MIN_LOG_LEVEL="0",  # the transfer log is a warning
             PYTHONPATH=os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")]))
  script = tmp_path / "place.py"
  script.write_text(_SCRIPT.format(devices=devices, tests=str(tests)))
  with open(tmp_path / "stderr", "w") as err:  # a file keeps JAX's log lines in order
    out = subprocess.run([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                         stderr=err, text=True, timeout=600)
  out.stderr = (tmp_path / "stderr").read_text()
  assert out.returncode == 0 and "PLACEMENT_OK" in out.stdout, (out.stdout + out.stderr)[-4000:]
  shapes = re.search(r"PIXELS \((\d+), (\d+)\) \((\d+), (\d+)\)", out.stdout).groups()
  raw_px, prompted_px = (int(shapes[0]), int(shapes[1])), (int(shapes[2]), int(shapes[3]))
  once = 4 * (int(np.prod(raw_px)) + int(np.prod(prompted_px)))  # float32
  placed = int(re.search(r"PLACED (\d+)", out.stdout).group(1))
  logged = {place: sum(n for _, s, n in uploads(out.stderr, place) if s[-1:] == raw_px[1:])
            for place in (False, True)}
  if devices == 1:
    assert "SAME_BUFFERS True" in out.stdout
    assert placed == once and logged[True] == once, (logged, once)
  else:  # each device its rows' patches (fsdp=4 x tensor=2: a quarter each), once; before,
    # every device all of them, twice
    assert placed == once * devices // 4 and logged[True] == placed, (logged, placed)
    assert logged[False] == 2 * once * devices, (logged, once)
  # The rollouts' tokens, mask and log-probs: uploaded again for the update before, now the
  # sampler's device arrays feed it (nothing of their shape goes host -> device).
  rollout_shape = tuple(int(x) for x in re.search(r"ROLLOUTS \((\d+), (\d+)\)",
                                                   out.stdout).groups())
  back = {place: [u for u in uploads(out.stderr, place) if u[1][-2:] == rollout_shape]
          for place in (False, True)}
  assert len(back[False]) >= 4 and back[True] == [], back  # tokens, mask x 2 branches (each device)
  total = {place: sum(n for *_, n in uploads(out.stderr, place)) for place in (False, True)}
  print(f"{devices} devices: pixels uploaded per step {logged[False] if devices > 1 else '?'} -> "
        f"{logged[True]} bytes; "
        f"all uploads {total[False]} -> {total[True]} bytes")


def test_prompted_rollouts_padded_on_the_devices_as_on_the_host():
  """The prompted branch pads its h*G rollout rows to P*G: the sampler's device arrays are
  padded on the devices to exactly the host copies the update would otherwise upload."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vcoach_jax.rl import rollout as rollout_lib  # pylint: disable=g-import-not-at-top
  from vcoach_jax.sampling import Rollouts  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 50, (6, 5)).astype(np.int32)
  mask = (rng.random((6, 5)) < 0.7).astype(np.int32)
  logprobs = -rng.random((6, 5)).astype(np.float32)
  r = Rollouts(tokens, mask, logprobs, ["a"] * 6, tuple(map(jnp.asarray, (tokens, mask, logprobs))))
  scored = rollout_lib.Scored(r, {"ans_acc": np.ones(6, np.float32)}, np.ones(6, np.float32))
  got = rollout_lib._padded(scored, 8).rollouts  # pylint: disable=protected-access
  assert got.tokens.shape == (8, 5) and not got.mask[6:].any()
  for host, device in zip((got.tokens, got.mask, got.logprobs), got.placed):
    assert device.dtype == host.dtype
    np.testing.assert_array_equal(np.asarray(device), host)
