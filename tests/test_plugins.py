"""The plugin manager: entry points, allow/deny, check_pending, clashes, overrides."""

from __future__ import annotations

import sys
import types
from decimal import Decimal
from importlib.metadata import EntryPoint

import pytest

from perpcarry.domain.errors import PluginError
from perpcarry.money.fees import TableFeeModel
from perpcarry.plugins import manager as plugins
from perpcarry.plugins.hookspecs import hookimpl
from perpcarry.plugins.manager import load_registry


def _fake_plugin(monkeypatch, name: str, **hooks) -> None:
    """Make an importable module ``name`` with the given hook functions and add it to the
    ``perpcarry`` entry-point group next to the real ones."""
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn) if not hook_name.startswith("_") else fn)
    monkeypatch.setitem(sys.modules, name, module)
    real = plugins.entry_points

    def entry_points(group: str):
        return [*real(group=group), EntryPoint(name=name, value=name, group=group)]

    monkeypatch.setattr(plugins, "entry_points", entry_points)


def test_first_party_plugins_load_through_entry_points():
    registry = load_registry()
    assert set(registry.venues) == {"binance", "bybit", "okx"}
    assert {info.name for info in registry.plugin_infos()} == {"binance", "bybit", "okx",
                                                               "executors"}
    for info in registry.plugin_infos():
        assert info.version
        if info.name == "executors":
            assert info.hooks == ("register_executors",) and not info.venues
            continue
        assert info.hooks == ("register_fee_models", "register_venues")
        assert info.venues == (info.name,)
        assert registry.venues[info.name].plugin == info.name


def test_plugins_json_lists_name_version_hooks_venues(run_cli):
    import json

    result = run_cli("plugins", "--json")
    assert result.exit_code == 0
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert set(listed) == {"binance", "bybit", "okx", "executors"}
    assert listed["okx"]["venues"] == ["okx"]
    assert listed["executors"]["executors"] == ["perp-first", "concurrent", "sliced"]
    assert "register_venues" in listed["okx"]["hooks"]


def test_allow_and_deny_lists():
    assert set(load_registry(allow=["okx"]).venues) == {"okx"}
    assert set(load_registry(deny=["okx"]).venues) == {"binance", "bybit"}


def test_config_deny_list_and_env_var_disable_autoloading(run_cli, write_config, monkeypatch):
    path = write_config('[plugins]\ndeny = ["bybit"]\n')
    assert '"bybit"' not in run_cli("--config", str(path), "plugins", "--json").stdout
    monkeypatch.setenv("PERPCARRY_LOAD_PLUGINS", "")
    assert run_cli("plugins", "--json").stdout.strip() == "[]"
    monkeypatch.setenv("PERPCARRY_LOAD_PLUGINS", "binance, okx")
    assert set(load_registry().venues) == {"binance", "okx"}


def test_misspelled_hook_fails_at_load_naming_the_plugin(monkeypatch):
    def register_venue(register):  # missing the trailing "s"
        pass

    _fake_plugin(monkeypatch, "sloppy_plugin", register_venue=register_venue)
    with pytest.raises(PluginError, match=r"plugin sloppy_plugin: .*register_venue"):
        load_registry()


def test_two_plugins_registering_one_venue_id_are_refused(monkeypatch):
    from perpcarry.venues.protocol import VenueCapabilities, VenueSpec
    from perpcarry_binance import BinanceConfig

    def register_venues(register):
        register(VenueSpec("binance", "Impostor", BinanceConfig,
                           VenueCapabilities(True, True, True, True, True, (8,)),
                           factory=lambda config, context: None))

    _fake_plugin(monkeypatch, "impostor_plugin", register_venues=register_venues)
    with pytest.raises(PluginError) as caught:
        load_registry()
    assert "binance" in str(caught.value) and "impostor_plugin" in str(caught.value)


async def test_third_party_fee_model_overrides_the_venue_default(monkeypatch):
    custom = TableFeeModel("bybit", Decimal("0.0001"), Decimal("0.0002"), Decimal("0"),
                           Decimal("0.0003"), detail="negotiated desk rates")

    def register_fee_models(register):
        register(custom, override=True)

    _fake_plugin(monkeypatch, "desk_fees", register_fee_models=register_fee_models)
    registry = load_registry()
    assert registry.fee_model("bybit") is custom
    assert registry.fee_models["bybit"][1] == "desk_fees"
    schedule = await registry.fee_model("bybit").fee_schedule(
        registry.venues["bybit"].config_model(), None)
    assert schedule.perp_taker == Decimal("0.0003") and "negotiated" in schedule.describe()
    # the default of an untouched venue is still the venue plugin's own
    assert registry.fee_models["okx"][1] == "okx"


def test_two_fee_model_defaults_for_one_venue_are_refused(monkeypatch):
    def register_fee_models(register):
        register(TableFeeModel("okx", *(Decimal("0.001"),) * 4, detail="copy"))

    _fake_plugin(monkeypatch, "copycat_fees", register_fee_models=register_fee_models)
    with pytest.raises(PluginError, match=r"okx.*plugin okx and plugin copycat_fees"):
        load_registry()


class SpotLast:
    """A third-party executor as docs/execution.md shows one: one slice per order maximum,
    the perp leg first, spot for what the perp filled."""

    name = "spot-last"
    description = "perp, then spot for the perp's fill"

    def slices(self, target, limits):
        return (target,)

    async def run_slice(self, legs, quantity):
        perp = await legs.perp(quantity)
        await legs.spot(perp.filled)

    async def between_slices(self, slice_index, pacing):
        return None


def test_first_party_executors_are_registered_like_a_third_partys():
    registry = load_registry()
    assert {name: owner for name, (_, owner) in registry.executors.items()} == {
        "perp-first": "executors", "concurrent": "executors", "sliced": "executors"}


def test_executors_register_and_clash(monkeypatch):
    executor = SpotLast()

    def register_executors(register):
        register(executor)

    _fake_plugin(monkeypatch, "exec_a", register_executors=register_executors)
    registry = load_registry()
    assert registry.executors["spot-last"] == (executor, "exec_a")
    assert [i.executors for i in registry.plugin_infos() if i.name == "exec_a"] == [
        ("spot-last",)]

    _fake_plugin(monkeypatch, "exec_b", register_executors=register_executors)
    with pytest.raises(PluginError, match=r"spot-last.*exec_a.*exec_b"):
        load_registry()


def test_an_object_that_is_not_an_executor_is_refused(monkeypatch):
    def register_executors(register):
        register(types.SimpleNamespace(name="half-done", description="no methods"))

    _fake_plugin(monkeypatch, "half_plugin", register_executors=register_executors)
    with pytest.raises(PluginError, match="plugin half_plugin registered SimpleNamespace, "
                                          "which is not an executor"):
        load_registry()


def test_a_protocol_only_fee_model_prices_the_backtest(monkeypatch):
    """The backtest resolves fees through the FeeModel protocol, so an override that is not
    a TableFeeModel (no default table at all) is what it charges."""
    from perpcarry.backtest.run import taker_fees
    from perpcarry.config.loader import load_config
    from perpcarry.domain.types import FeeSchedule, FeeSource

    class DeskRates:
        venue_id = "bybit"

        async def fee_schedule(self, config, venue):
            return FeeSchedule("bybit", Decimal("0.0001"), Decimal("0.0002"), Decimal("0"),
                               Decimal("0.0003"), FeeSource.CONFIG, "desk agreement")

    def register_fee_models(register):
        register(DeskRates(), override=True)

    _fake_plugin(monkeypatch, "desk_only", register_fee_models=register_fee_models)
    fees, sources = taker_fees(load_config(None), ["bybit", "okx"])
    assert fees["bybit"] == (0.0002, 0.0003) and "desk agreement" in sources["bybit"]
    assert fees["okx"] == (0.0010, 0.0005)  # okx keeps its own default table
