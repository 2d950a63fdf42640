"""A short VisionCoach run compiles a bounded set of programs: the sampler's and the update's
are compiled once per bucket, so once the first step has compiled them later steps compile
nothing (`vcoach_jax.compile_count` listens to every backend compilation)."""

from vcoach_jax import compile_count
from vcoach_jax import config as config_lib
from vcoach_jax.rl import train as rl_train

# Two prompts of the tiny world per step, 2 rollouts each, short completions, one prompt-length
# bucket (raw and prompted prompts fit it); k1 above any reachable total, so every prompt is
# hard and each step also samples and trains the prompted (coached) branch.
OVERRIDES = ["data.batch_size=2", "data.prompt_buckets=(1024,)", "sampling.num_samples=2",
             "sampling.max_new_tokens=6", "sampling.batch_buckets=(1,2)", "optim.total_steps=3",
             "rl.method=full", "rl.k1=100.0", "checkpoint.every_steps=100"]


def test_warm_steps_compile_nothing(tiny_world, tmp_path):
  config = config_lib.load(None, OVERRIDES + tiny_world)
  with compile_count.Counter() as c:
    run = rl_train.setup(config, str(tmp_path / "rl"), progress=False)
    first = rl_train.step(run, 0)
    warm = c.count
    later = [rl_train.step(run, i) for i in (1, 2)]
  assert all(m["frac_hard"] == 1.0 for m in [first] + later)  # the prompted branch ran each step
  assert c.since(warm) == []  # no new program once the buckets are warm
  names = c.names
  assert names["jit(update)"] == 1  # one update program (P = 2 prompted rows)
  assert names["jit(_generate)"] == 1  # raw and prompted batches share the sampler's program
  # The whole run, the small eager ops included (and the programs that cut and pad the
  # rollouts on the devices for the update: once per shape).
  assert c.count < 88
