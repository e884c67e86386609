"""Meta-tests: every hook spec is documented, exercised through the registry, and shown with
its exact signature in the plugin guide. A new hook fails here until all three exist."""

from __future__ import annotations

import inspect
from decimal import Decimal
from pathlib import Path

import pytest
from test_plugins import SemicolonFunding, SpotLast, _fake_plugin

from perpcarry.money.fees import TableFeeModel
from perpcarry.plugins.manager import load_registry
from perpcarry.venues.protocol import VenueCapabilities, VenueSpec

ROOT = Path(__file__).parents[1]
GUIDE = ROOT / "docs" / "writing-a-plugin.md"


def _specs():
    pm = load_registry().pm
    return {name: getattr(pm.hook, name) for name in dir(pm.hook) if not name.startswith("_")}


def _venue_spec() -> VenueSpec:
    from perpcarry.config.settings import VenueConfig

    return VenueSpec("metatest", "Meta test", VenueConfig,
                     VenueCapabilities(True, True, True, False, False, (8,)),
                     factory=lambda config, context: None)


# hook -> (what a plugin registers through it, where the registry then shows its owner)
REGISTERED = {
    "register_venues": (_venue_spec, lambda registry: registry.venues["metatest"].plugin),
    "register_fee_models": (
        lambda: TableFeeModel("metatest", *(Decimal("0.001"),) * 4, detail="meta"),
        lambda registry: registry.fee_models["metatest"][1]),
    "register_executors": (SpotLast, lambda registry: registry.executors["spot-last"][1]),
    "register_history_sources": (
        SemicolonFunding, lambda registry: registry.history_sources["semicolon funding"][1]),
}


@pytest.mark.parametrize("name", sorted(_specs()))
def test_every_hook_spec_has_a_docstring_saying_when_args_and_return(name):
    caller = _specs()[name]
    doc = inspect.getdoc(caller.spec.function) or ""
    assert "Called" in doc and "register(" in doc and "Returns" in doc, name
    assert list(caller.spec.argnames) == ["register"], name


@pytest.mark.parametrize("name", sorted(_specs()))
def test_every_hook_is_called_and_what_it_registers_is_stamped(name, monkeypatch):
    """Build a registry with a plugin implementing only this hook: core must call it and
    stamp what it registered with the plugin's name."""
    assert name in REGISTERED, f"no test registers anything through hook {name}"
    make, owner_of = REGISTERED[name]
    registered = make()

    def implementation(register):
        register(registered)

    _fake_plugin(monkeypatch, "metatest_plugin", **{name: implementation})
    registry = load_registry()
    assert owner_of(registry) == "metatest_plugin"
    info = next(i for i in registry.plugin_infos() if i.name == "metatest_plugin")
    assert info.hooks == (name,)


@pytest.mark.parametrize("name", sorted(_specs()))
def test_every_hook_signature_is_a_heading_of_the_plugin_guide(name):
    caller = _specs()[name]
    signature = f"{name}({', '.join(caller.spec.argnames)})"
    assert f"### `{signature}`" in GUIDE.read_text(), \
        f"docs/writing-a-plugin.md has no section headed {signature}"
