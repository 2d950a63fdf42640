"""The library does not depend on its command line: no module under vcoach_jax (outside cli.py
and commands/) imports vcoach_jax.commands, directly or inside a function."""

import ast
import pathlib
import re

import pytest

import vcoach_jax

PACKAGE = pathlib.Path(vcoach_jax.__file__).parent


def _imported_modules(tree: ast.AST, module: str) -> set[str]:
  """Every module an `import` / `from ... import` anywhere in `tree` names (relative imports
  resolved against `module`), and for `from X import a`, also X.a (a may be a submodule)."""
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = module.split(".")[:-node.level]
        base = ".".join(parent + ([base] if base else []))
      names.add(base)
      names.update(f"{base}.{alias.name}" for alias in node.names)
  return names


def _library_modules():
  for path in sorted(PACKAGE.rglob("*.py")):
    rel = path.relative_to(PACKAGE.parent)
    if rel.parts[1] == "commands" or rel.as_posix() == "vcoach_jax/cli.py":
      continue
    yield ".".join(rel.with_suffix("").parts), path


def test_imported_modules_sees_every_form_of_import():
  tree = ast.parse("import vcoach_jax.commands.select\n"
                   "def f():\n  from vcoach_jax.commands import evaluate\n"
                   "from ..commands import plan\n")
  names = _imported_modules(tree, "vcoach_jax.prompting.x")
  assert {"vcoach_jax.commands.select", "vcoach_jax.commands.evaluate",
          "vcoach_jax.commands.plan"} <= names


def test_no_library_module_imports_the_commands():
  modules = list(_library_modules())
  assert len(modules) > 50 and any(m == "vcoach_jax.demo" for m, _ in modules)
  offenders = []
  for module, path in modules:
    for name in _imported_modules(ast.parse(path.read_text(), str(path)), module):
      if name == "vcoach_jax.commands" or name.startswith("vcoach_jax.commands."):
        offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
  assert not offenders, "\n".join(offenders)


# One of each: the small pieces that had copies live in one module, which the others import.

def _sources():
  return {path.relative_to(PACKAGE.parent).as_posix(): path.read_text()
          for path in PACKAGE.rglob("*.py") if "configs" not in path.parts}


def _holders(needle: str) -> list[str]:
  return sorted(name for name, text in _sources().items() if needle in text)


def test_pow2_is_defined_once():
  from vcoach_jax import shapes  # pylint: disable=import-outside-toplevel
  assert [shapes.pow2(n) for n in (-3, 0, 1, 2, 3, 4, 5, 1000, 1024, 1025)] == [
      1, 1, 1, 2, 4, 4, 8, 1024, 1024, 2048]
  assert _holders(".bit_length()") == ["vcoach_jax/shapes.py"]


def test_dtype_table_and_patch_width_are_not_restated():
  assert _holders('"bfloat16": jnp.bfloat16') == ["vcoach_jax/model/build.py"]
  assert _holders("14 * 14") == [] and _holders("PATCH_DIM") == []


def test_judge_spec_is_parsed_in_one_place():
  from vcoach_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from vcoach_jax.evaluation import judge  # pylint: disable=import-outside-toplevel
  assert judge.parse_spec("rouge") == ("rouge", None)
  assert judge.parse_spec("exact") == ("exact", None)
  assert judge.parse_spec("model:/ckpt/q") == ("model", "/ckpt/q")
  for bad in ("model:", "llm", "Rouge", ""):
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
      judge.parse_spec(bad)
    with pytest.raises(config_lib.ConfigError, match="eval.judge"):
      config_lib.load(None, [f"eval.judge={bad}"])
  assert _holders('startswith("model:")') == ["vcoach_jax/evaluation/judge.py"]


def test_state_shardings_places_variables_by_axes_and_replicates_the_rest():
  """parallel/mesh.state_shardings serves model states and train states alike (the one kept)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec  # pylint: disable=import-outside-toplevel
  from vcoach_jax.parallel import mesh as mesh_lib  # pylint: disable=import-outside-toplevel
  mesh = mesh_lib.make_mesh({"fsdp": 1}, jax.devices()[:1])
  rules = (("embed", ("fsdp",)),)
  param = nnx.Param(np.zeros((4, 2), np.float32), logical_axes=("embed", None))
  tree = {"w": param, "step": np.zeros((), np.int32), "key": jax.random.key(0)}
  out = mesh_lib.state_shardings(tree, mesh, rules)
  assert out["w"] == mesh_lib.variable_sharding(param, mesh, rules)
  assert out["step"].spec == PartitionSpec() and out["key"].spec == PartitionSpec()
