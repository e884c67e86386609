"""The plugin manager: entry points, allow/deny, check_pending, clashes, overrides."""

from __future__ import annotations

import json
import sys
import types
from decimal import Decimal
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import ClassVar

import pytest

from perpcarry.domain.errors import PluginError
from perpcarry.money.fees import TableFeeModel
from perpcarry.plugins import manager as plugins
from perpcarry.plugins.hookspecs import hookimpl
from perpcarry.plugins.manager import BUILTIN_PLUGINS, load_registry


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
                                                               "executors", "checks"}
    for info in registry.plugin_infos():
        assert info.version
        if info.name in BUILTIN_PLUGINS:  # core's own: executors and pre-trade checks
            assert info.hooks in (("register_executors",), ("pre_trade_check",))
            assert not info.venues
            continue
        assert info.hooks == (
            "register_fee_models", "register_history_sources", "register_venues")
        assert info.venues == (info.name,)
        assert registry.venues[info.name].plugin == info.name


def test_plugins_json_lists_name_version_hooks_venues(run_cli):
    import json

    result = run_cli("plugins", "--json")
    assert result.exit_code == 0
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert set(listed) == {"binance", "bybit", "okx", "executors", "checks"}
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
    # Core's own plugins stay: no allow-list switches off the checks or the executors.
    assert {p["name"] for p in json.loads(run_cli("plugins", "--json").stdout)} == set(
        BUILTIN_PLUGINS)
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


class SemicolonFunding:
    """A third party's own funding file: ``venue;symbol;epoch_ms;rate`` rows."""

    name = "semicolon funding"

    def recognises(self, path):
        return path.read_text().startswith("venue;symbol;epoch_ms;rate\n")

    def load(self, path):
        import polars as pl

        from perpcarry.backtest.history import normalise

        frame = pl.read_csv(path, separator=";")
        return normalise(frame.select(
            "venue", "symbol", pl.col("symbol").str.split("/").list.first().alias("base"),
            pl.from_epoch("epoch_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("time"),
            "rate"), "semicolon")


def test_a_plugin_history_source_imports_its_files(monkeypatch, tmp_path):
    from perpcarry.backtest.history import load_path

    def register_history_sources(register):
        register(SemicolonFunding())

    _fake_plugin(monkeypatch, "semicolon_plugin",
                 register_history_sources=register_history_sources)
    registry = load_registry()
    assert registry.history_sources["semicolon funding"][1] == "semicolon_plugin"
    file = tmp_path / "funding.txt"
    file.write_text("venue;symbol;epoch_ms;rate\n"
                    "acme;BTC/USDT:USDT;1700000000000;0.0001\n"
                    "acme;BTC/USDT:USDT;1700028800000;-0.0002\n")
    history = load_path(file, [s for s, _ in registry.history_sources.values()])
    assert history["rate"].to_list() == [0.0001, -0.0002]
    assert history["interval_hours"].to_list() == [8.0, 8.0]  # from the spacing
    assert set(history["source"]) == {"semicolon"}


def test_a_file_two_history_sources_recognise_is_refused_naming_both(monkeypatch, tmp_path):
    from perpcarry.backtest.history import DataFormatError, load_path

    class Copycat(SemicolonFunding):
        name = "copycat funding"

    def register_history_sources(register):
        register(SemicolonFunding())
        register(Copycat())

    _fake_plugin(monkeypatch, "greedy_plugin", register_history_sources=register_history_sources)
    file = tmp_path / "funding.txt"
    file.write_text("venue;symbol;epoch_ms;rate\nacme;BTC/USDT:USDT;1700000000000;0.0001\n")
    sources = [s for s, _ in load_registry().history_sources.values()]
    with pytest.raises(DataFormatError, match="semicolon funding, copycat funding"):
        load_path(file, sources)


def test_one_history_source_name_from_two_plugins_is_refused(monkeypatch):
    def register_history_sources(register):
        register(SemicolonFunding())

    _fake_plugin(monkeypatch, "semi_a", register_history_sources=register_history_sources)
    _fake_plugin(monkeypatch, "semi_b", register_history_sources=register_history_sources)
    with pytest.raises(PluginError, match=r"'semicolon funding'.*semi_a.*semi_b"):
        load_registry()


def test_venue_history_formats_come_from_their_plugins():
    """Without the Binance plugin, its CSV export is an unknown format: core has no reader."""
    from perpcarry.backtest.history import DataFormatError, load_path

    dorian = Path(__file__).parents[2] / "shared" / "data" / "dorian-binance" / \
        "funding_BTCUSDT_20210101_20241231.csv"
    with_binance = [s for s, _ in load_registry().history_sources.values()]
    assert load_path(dorian, with_binance)["venue"].unique().to_list() == ["binance"]
    without = [s for s, _ in load_registry(deny=["binance"]).history_sources.values()]
    with pytest.raises(DataFormatError, match="unknown funding data format"):
        load_path(dorian, without)


def test_core_backtest_names_no_venue():
    """Venue-specific history formats live in the plugins: core's backtest and test kit name
    none of the installed venues, not even in a comment. (bundle.py is the maintainer's
    script that names the shared dataset folders the bundle is built from, "dorian-binance"
    among them: a dataset's name, not venue logic.)"""
    core = Path(__file__).parents[1] / "core"
    venues = set(load_registry().venues)
    modules = [*(core / "backtest").glob("*.py"), *(core / "testing").glob("*.py")]
    for module in sorted(m for m in modules if m.name != "bundle.py"):
        text = module.read_text().lower()
        assert not [v for v in venues if v in text], module


def test_an_offline_snapshot_without_its_instant_is_refused(monkeypatch, tmp_path):
    from perpcarry.config.settings import VenueConfig
    from perpcarry.venues.protocol import VenueCapabilities, VenueSpec

    def register_venues(register):
        register(VenueSpec("timeless", "Timeless", VenueConfig,
                           VenueCapabilities(True, True, True, False, True, (8,)),
                           factory=lambda config, context: None,
                           offline_snapshot=tmp_path / "snapshot.json"))

    _fake_plugin(monkeypatch, "timeless_plugin", register_venues=register_venues)
    with pytest.raises(PluginError, match="plugin timeless_plugin: venue 'timeless' ships an "
                                          "offline snapshot but no timezone-aware"):
        load_registry()


async def test_a_market_request_the_plugin_does_not_declare_fails_the_load(tmp_path):
    """ccxt sending a request the plugin never declared (a new ccxt version, a market type
    left unrestricted) is a named error, not a request charged at a made-up weight."""
    from perpcarry.ccxt.replay import replaying
    from perpcarry.domain.errors import VenueError
    from perpcarry.venues.protocol import offline_context
    from perpcarry_bybit.venue import BybitVenue

    class Undeclared(BybitVenue):
        market_requests: ClassVar[dict[str, tuple[int, str]]] = {}

    spec = load_registry().venues["bybit"]
    client = Undeclared(spec.config_model(), offline_context(spec, tmp_path))
    try:
        with replaying(spec.offline_snapshot), pytest.raises(
                VenueError, match=r"bybit: load_markets sent GET /v5/market/instruments-info, "
                                  r"which the plugin declares no weight for"):
            await client.load_markets()
    finally:
        await client.close()
