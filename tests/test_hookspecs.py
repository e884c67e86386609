"""Meta-tests: every hook spec is documented, exercised through the registry, and shown with
its exact signature in the plugin guide. A new hook fails here until all three exist."""

from __future__ import annotations

import inspect
from decimal import Decimal
from pathlib import Path

import pytest
from test_events import FILL, PAYMENT, SNAPSHOT_TIME, Recording, alarm
from test_plugins import SemicolonFunding, SpotLast, _fake_plugin

from perpcarry.events import EventBus, EventKind
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
    "register_alert_channels": (
        lambda: Recording(), lambda registry: registry.alert_channels["recording"][1]),
}


# Gate hooks: their answers are collected. hook -> (arguments, how the registry asks)
GATES = {"pre_trade_check": ["order", "context"]}
# Event hooks, called by the event bus. hook -> (arguments, a listener appending what it
# is given to a list, how the bus is made to call it)
EVENT_HOOKS = {
    "on_fill": (["fill"], lambda seen: lambda fill: seen.append(fill),
                lambda bus: bus.fill(FILL)),
    "on_funding_payment": (["payment"], lambda seen: lambda payment: seen.append(payment),
                           lambda bus: bus.funding_payment(PAYMENT)),
    "on_risk_alarm": (["alarm"], lambda seen: lambda alarm: seen.append(alarm),
                      lambda bus: bus.emit(alarm(EventKind.NAKED_LEG, "naked leg"))),
    "on_event": (["event"], lambda seen: lambda event: seen.append(event),
                 lambda bus: bus.emit(alarm(EventKind.VENUE_DOWN, "venue down"))),
}


@pytest.mark.parametrize("name", sorted(_specs()))
def test_every_hook_spec_has_a_docstring_saying_when_args_and_return(name):
    caller = _specs()[name]
    doc = inspect.getdoc(caller.spec.function) or ""
    assert "Called" in doc and "Returns" in doc, name
    if name in GATES or name in EVENT_HOOKS:
        args = GATES[name] if name in GATES else EVENT_HOOKS[name][0]
        assert list(caller.spec.argnames) == args, name
        assert all(f"``{arg}``" in doc for arg in args), name
    else:
        assert "register(" in doc and list(caller.spec.argnames) == ["register"], name


@pytest.mark.parametrize("name", sorted(_specs()))
def test_every_hook_is_called_and_what_it_registers_is_stamped(name, monkeypatch):
    """Build a registry with a plugin implementing only this hook: core must call it and
    stamp what it registered (or answered) with the plugin's name."""
    if name == "pre_trade_check":
        from test_orders_interface import SPOT

        from perpcarry.execution.checks import TradeContext
        from perpcarry.venues.orders import OrderRequest, Side

        def veto(order, context):
            return f"no {order.market.base} during the news window"

        _fake_plugin(monkeypatch, "metatest_plugin", pre_trade_check=veto)
        registry = load_registry()
        order = OrderRequest(SPOT, Side.SELL, Decimal("0.001"), "pcmeta")
        context = TradeContext("binance", "close", Decimal(30000), None, None, Decimal(1),
                               True, None, None)
        assert registry.pre_trade_vetoes(order, context) == [
            "metatest_plugin: no BTC during the news window"]
        info = next(i for i in registry.plugin_infos() if i.name == "metatest_plugin")
        assert info.hooks == (name,)
        return
    if name in EVENT_HOOKS:
        _, listener, trigger = EVENT_HOOKS[name]
        seen: list = []
        _fake_plugin(monkeypatch, "metatest_plugin", **{name: listener(seen)})
        trigger(EventBus(load_registry().pm, None, None, lambda: SNAPSHOT_TIME))
        assert len(seen) == 1, f"the event bus did not call {name}"
        return
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
