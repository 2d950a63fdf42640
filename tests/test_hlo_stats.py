"""`hlo_stats` on programs with known counts: a scanned matmul chain counts its body trip-count
times (equal to the unrolled program, where cost_analysis counts it once), a decode-style loop
with an early exit is bounded by its induction compare, and on 8 simulated devices the
collectives of a sharded matmul have the sizes the sharding implies (bf16 ones at bf16 width,
though the CPU backend runs them in f32). The 8-device part runs in a
subprocess so the test session keeps one device."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp

from vcoach_jax.parallel import hlo_stats

_ROOT = pathlib.Path(__file__).parent.parent


def _hlo(fn, *args) -> str:
  return jax.jit(fn).lower(*args).compile().as_text()


def test_scanned_flops_equal_unrolled():
  x, ws = jnp.ones((8, 32)), jnp.ones((5, 32, 32))
  scanned = lambda x, ws: jax.lax.scan(lambda c, w: (jnp.tanh(c @ w), None), x, ws)[0]  # noqa: E731

  def unrolled(x, ws):
    for i in range(ws.shape[0]):
      x = jnp.tanh(x @ ws[i])
    return x
  want = 5 * 2 * 8 * 32 * 32
  s_hlo = _hlo(scanned, x, ws)
  assert hlo_stats.program_stats(s_hlo).flops == want
  assert hlo_stats.program_stats(_hlo(unrolled, x, ws)).flops == want
  (_, trips, exact), = hlo_stats.entry_loops(s_hlo)
  assert (trips, exact) == (5, True)
  # XLA's own cost analysis counts the scanned body once.
  assert jax.jit(scanned).lower(x, ws).compile().cost_analysis()["flops"] < want / 2


def test_nested_loops_multiply_and_early_exit_is_bounded():
  def nested(x):
    inner = lambda c, _: (c @ c, None)  # noqa: E731
    outer = lambda c, _: (jax.lax.scan(inner, c, None, length=3)[0], None)  # noqa: E731
    return jax.lax.scan(outer, x, None, length=4)[0]
  x = jnp.eye(16)
  assert hlo_stats.program_stats(_hlo(nested, x)).flops == 12 * 2 * 16 ** 3

  def decode(x):  # stops at 7 steps or earlier
    cond = lambda s: (s[0] < 7) & (jnp.sum(s[1]) < 1e30)  # noqa: E731
    return jax.lax.while_loop(cond, lambda s: (s[0] + 1, s[1] @ s[1]), (0, x))[1]
  hlo = _hlo(decode, x)
  (_, trips, exact), = hlo_stats.entry_loops(hlo)
  assert (trips, exact) == (7, False)
  assert hlo_stats.program_stats(hlo).flops == 7 * 2 * 16 ** 3


_SHARDED = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8")
    import jax, jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    from vcoach_jax.parallel import hlo_stats, mesh as mesh_lib
    mesh = mesh_lib.make_mesh({"fsdp": 8})
    rows = NamedSharding(mesh, P("fsdp", None))
    x = jax.ShapeDtypeStruct((64, 256), jnp.float32, sharding=rows)
    # FSDP: weights split by their input width, gathered whole before the matmul.
    w = jax.ShapeDtypeStruct((256, 512), jnp.float32, sharding=NamedSharding(mesh, P("fsdp")))
    f = jax.jit(lambda x, w: x @ w, out_shardings=rows)
    s = hlo_stats.program_stats(f.lower(x, w).compile().as_text())
    assert s.collectives["all-gather"] == 256 * 512 * 4, s
    assert s.collectives["all-reduce"] == 0, s
    assert s.flops == 2 * 8 * 256 * 512, s  # 1/8 of the rows per device
    # Width-split activations: the contraction over a split width ends in an all-reduce of the
    # [rows, 512] product (or a reduce-scatter of it).
    xw = jax.ShapeDtypeStruct((64, 256), jnp.float32, sharding=NamedSharding(mesh, P(None, "fsdp")))
    g = jax.jit(lambda x, w: x @ w, out_shardings=NamedSharding(mesh, P()))
    s = hlo_stats.program_stats(g.lower(xw, w).compile().as_text())
    assert s.collectives["all-reduce"] == 64 * 512 * 4, s
    assert s.flops == 2 * 64 * 32 * 512, s
    # bf16 compute from fp32 masters: the partitioned program gathers the cast (bf16) weights;
    # the CPU backend runs that all-gather in f32, and the bf16 gradient's all-reduce too:
    # counted at the data's width, the f32 excess kept apart.
    def loss(w, x):
      return jnp.sum(jnp.square(x.astype(jnp.bfloat16) @ w.astype(jnp.bfloat16)))
    h = jax.jit(jax.grad(loss), out_shardings=NamedSharding(mesh, P("fsdp")))
    s = hlo_stats.program_stats(h.lower(w, x).compile().as_text())
    assert s.collectives["all-gather"] == 256 * 512 * 2, s
    assert s.collectives["all-reduce"] == 256 * 512 * 2, s
    assert s.widened == 2 * 256 * 512 * 2, s
    print("SHARDED_OK")
""")


def test_sharded_matmul_collectives():
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]))
  proc = subprocess.run([sys.executable, "-c", _SHARDED], capture_output=True, text=True,
                        env=env, timeout=300, check=False)
  assert "SHARDED_OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


_FUSED = """\
HloModule m

%fused_dot (p0: f32[4,8], p1: f32[8,16]) -> f32[4,16] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = f32[8,16]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,16]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

ENTRY %main (a: f32[4,8], b: f32[8,16]) -> f32[4,16] {
  %a = f32[4,8]{1,0} parameter(0)
  %b = f32[8,16]{1,0} parameter(1)
  %t = f32[4,8]{1,0} tanh(%a), metadata={op_name="jit(f)/vision_tower/tanh"}
  %c = f32[4,8]{1,0} copy(%t)
  ROOT %f = f32[4,16]{1,0} fusion(%c, %b), kind=kCustom, calls=%fused_dot
}
"""


def test_a_fused_dot_without_metadata_takes_its_inputs_scope():
  """A library fusion of XLA's CPU backend keeps no op_name (nor do the copies before it): its
  dot counts in the scope of the nearest named instruction feeding it."""
  program = hlo_stats.Program(_FUSED, ("vision_tower", "decoder"))
  assert program.stats.flops == 2 * 4 * 16 * 8
  assert program.stats.scoped == {"vision_tower": 2 * 4 * 16 * 8, "decoder": 0}
  assert program.stats.unnamed == 0
