"""Meta-tests: every hook spec is documented, tested and in the plugin guide."""

from __future__ import annotations

import inspect
from pathlib import Path

from perpcarry.plugins.manager import load_registry

ROOT = Path(__file__).parents[1]


def _specs():
    pm = load_registry().pm
    return {name: getattr(pm.hook, name) for name in dir(pm.hook) if not name.startswith("_")}


def test_every_hook_spec_has_a_docstring_saying_when_args_and_return():
    specs = _specs()
    assert set(specs) == {"register_venues", "register_fee_models", "register_executors"}
    for name, caller in specs.items():
        doc = inspect.getdoc(caller.spec.function) or ""
        assert "Called" in doc and "register(" in doc and "Returns" in doc, name
        assert list(caller.spec.argnames) == ["register"], name


def test_every_hook_spec_has_a_test():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py")
                      if p.name != "test_hookspecs.py")
    for name in _specs():
        assert f"def {name}(" in tests, f"no test implements hook {name}"


def test_every_hook_signature_is_in_the_plugin_guide():
    guide = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    for name, caller in _specs().items():
        signature = f"{name}({', '.join(caller.spec.argnames)})"
        assert signature in guide, f"docs/writing-a-plugin.md does not show {signature}"
