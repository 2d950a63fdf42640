"""setup.py: runtime dependencies are ranges (installing vcoach_jax must not move a user's
environment), the test extra is pinned exactly, and this environment satisfies both
(docs/dependencies.md)."""

import ast
import importlib.metadata
import pathlib

import pytest

packaging_requirements = pytest.importorskip("packaging.requirements")

SETUP = pathlib.Path(__file__).parent.parent / "setup.py"


def _lists() -> dict[str, list]:
  tree = ast.parse(SETUP.read_text(encoding="utf-8"))
  out = {}
  for node in tree.body:
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "").endswith("_REQUIRES"):
      out[node.targets[0].id] = [packaging_requirements.Requirement(r)
                                 for r in ast.literal_eval(node.value)]
  return out


def test_runtime_requirements_are_ranges_and_test_extra_is_pinned():
  lists = _lists()
  assert set(lists) == {"INSTALL_REQUIRES", "TEST_REQUIRES"}
  for req in lists["INSTALL_REQUIRES"]:
    ops = {spec.operator for spec in req.specifier}
    assert "==" not in ops, f"{req}: runtime requirements are ranges, not pins"
    assert ">=" in ops, f"{req}: no lower bound"
  for req in lists["TEST_REQUIRES"]:
    assert [spec.operator for spec in req.specifier] == ["=="], f"{req}: test extra is pinned"
  test = {req.name: str(req.specifier) for req in lists["TEST_REQUIRES"]}
  assert test["transformers"] == "==4.51.3"  # the release the parity tests are written against
  runtime = {req.name: req for req in lists["INSTALL_REQUIRES"]}
  for name, pin in test.items():  # the test pins lie inside the runtime ranges
    if name in runtime:
      assert runtime[name].specifier.contains(pin[2:], prereleases=True), (name, pin)


def test_this_environment_satisfies_the_runtime_ranges():
  for req in _lists()["INSTALL_REQUIRES"]:
    version = importlib.metadata.version(req.name)
    assert req.specifier.contains(version, prereleases=True), f"{req.name} {version} not in {req}"
