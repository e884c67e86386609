"""The plugin manager: loads plugins from the ``perpcarry`` entry-point group.

Built-in venues are plugins like any other: core never imports one by name.
``PERPCARRY_LOAD_PLUGINS`` (comma-separated entry-point names; empty for none) turns
autoloading off and loads only the named plugins.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

import pluggy
from loguru import logger

from perpcarry.alerts.channels import AlertChannel
from perpcarry.domain.errors import PluginError
from perpcarry.execution.engine import Executor
from perpcarry.plugins import hookspecs
from perpcarry.venues.protocol import FeeModel, HistorySource, VenueSpec

LOAD_PLUGINS_ENV = "PERPCARRY_LOAD_PLUGINS"
ENTRY_POINT_GROUP = "perpcarry"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str | None
    hooks: tuple[str, ...]
    venues: tuple[str, ...]
    fee_models: tuple[str, ...]
    executors: tuple[str, ...]
    history_sources: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "hooks": list(self.hooks),
            "venues": list(self.venues),
            "fee_models": list(self.fee_models),
            "executors": list(self.executors),
            "history_sources": list(self.history_sources),
        }


@dataclass
class Registry:
    """What the loaded plugins registered, each object stamped with its plugin."""

    pm: pluggy.PluginManager
    versions: dict[str, str | None]
    venues: dict[str, VenueSpec] = field(default_factory=dict)
    # venue id -> (model, plugin); overrides win over defaults
    fee_models: dict[str, tuple[FeeModel, str]] = field(default_factory=dict)
    executors: dict[str, tuple[Executor, str]] = field(default_factory=dict)
    # source name -> (source, plugin), in plugin registration order
    history_sources: dict[str, tuple[HistorySource, str]] = field(default_factory=dict)
    # channel name -> (channel, plugin), in plugin registration order
    alert_channels: dict[str, tuple[AlertChannel, str]] = field(default_factory=dict)

    def plugin_infos(self) -> list[PluginInfo]:
        infos = []
        for name, plugin in sorted(self.pm.list_name_plugin()):
            hooks = sorted(
                caller.name for caller in self.pm.get_hookcallers(plugin) or []
            )
            infos.append(
                PluginInfo(
                    name=name,
                    version=self.versions.get(name),
                    hooks=tuple(hooks),
                    venues=tuple(v for v, s in self.venues.items() if s.plugin == name),
                    fee_models=tuple(
                        v for v, (_, owner) in self.fee_models.items() if owner == name
                    ),
                    executors=tuple(n for n, (_, o) in self.executors.items() if o == name),
                    history_sources=tuple(
                        n for n, (_, o) in self.history_sources.items() if o == name),
                )
            )
        return infos

    def pre_trade_vetoes(self, order: Any, context: Any) -> list[str]:
        """Every ``pre_trade_check`` implementation's reason to refuse ``order``, each
        prefixed with the plugin that gave it; empty: allowed."""
        vetoes = []
        for impl in self.pm.hook.pre_trade_check.get_hookimpls():
            reason = impl.function(order=order, context=context)
            if reason:
                vetoes.append(f"{impl.plugin_name}: {reason}")
        return vetoes

    def fee_model(self, venue_id: str) -> FeeModel:
        try:
            return self.fee_models[venue_id][0]
        except KeyError:
            raise PluginError(f"no installed plugin registers a fee model for {venue_id}") from None


# Core's own plugins: the first-party executors and pre-trade checks. They implement the
# same hooks a third party would, but are always loaded: an allow-list naming only venue
# plugins must not switch off the safety checks or leave no executor.
BUILTIN_PLUGINS = {
    "executors": "perpcarry.execution.executors",
    "checks": "perpcarry.execution.checks",
}


def installed_plugins() -> list[str]:
    """The names of the installed plugins (entry points), loaded or not: what ``[plugins]
    allow`` and ``deny`` may name."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _selected(name: str, allow: list[str], deny: list[str]) -> bool:
    env = os.environ.get(LOAD_PLUGINS_ENV)
    if env is not None:
        return name in {n.strip() for n in env.split(",") if n.strip()}
    if allow and name not in allow:
        return False
    return name not in deny


def create_plugin_manager(
    allow: list[str] = (), deny: list[str] = ()
) -> tuple[pluggy.PluginManager, dict[str, str | None]]:
    """Load the selected entry-point plugins into a fresh manager and validate them.

    Returns the manager and each plugin's distribution version."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    versions: dict[str, str | None] = {}
    pm.add_hookspecs(hookspecs)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not _selected(ep.name, list(allow), list(deny)) or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # whatever third-party code raises, named after its plugin
            raise PluginError(f"plugin {ep.name} failed to import: {exc}") from exc
        pm.register(plugin, name=ep.name)
        versions[ep.name] = ep.dist.version if ep.dist else None
        logger.debug("loaded plugin {} from {}", ep.name, ep.value)
    from perpcarry import __version__

    for name, module in BUILTIN_PLUGINS.items():
        pm.register(importlib.import_module(module), name=name)
        versions[name] = __version__
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {pm.get_name(exc.plugin)}: {exc}") from None
    return pm, versions


def build_registry(pm: pluggy.PluginManager, versions: dict[str, str | None]) -> Registry:
    """Call each registration hook plugin by plugin, stamping owners and refusing clashes."""
    registry = Registry(pm=pm, versions=versions)

    for impl in pm.hook.register_venues.get_hookimpls():
        owner = impl.plugin_name

        def register_venue(spec: VenueSpec, owner: str = owner) -> None:
            _check(spec, VenueSpec, "a VenueSpec", owner)
            if spec.offline_snapshot is not None and (
                    spec.offline_instant is None or spec.offline_instant.tzinfo is None):
                raise PluginError(
                    f"plugin {owner}: venue {spec.venue_id!r} ships an offline snapshot but "
                    "no timezone-aware offline_instant (the instant the session stands for)")
            if spec.venue_id in registry.venues:
                other = registry.venues[spec.venue_id].plugin
                raise PluginError(
                    f"venue {spec.venue_id!r} is registered by both plugin {other} "
                    f"and plugin {owner}; deny one of them in [plugins]"
                )
            registry.venues[spec.venue_id] = replace(spec, plugin=owner)

        impl.function(register=register_venue)

    fee_defaults: dict[str, tuple[FeeModel, str]] = {}
    fee_overrides: dict[str, tuple[FeeModel, str]] = {}
    for impl in pm.hook.register_fee_models.get_hookimpls():
        owner = impl.plugin_name

        def register_fee_model(model: FeeModel, override: bool = False, owner: str = owner):
            _check(model, FeeModel, "a fee model (perpcarry.venues.protocol.FeeModel)", owner)
            table = fee_overrides if override else fee_defaults
            if model.venue_id in table:
                kind = "override" if override else "default"
                raise PluginError(
                    f"fee model {kind} for {model.venue_id!r} is registered by both plugin "
                    f"{table[model.venue_id][1]} and plugin {owner}"
                )
            table[model.venue_id] = (model, owner)

        impl.function(register=register_fee_model)
    registry.fee_models = {**fee_defaults, **fee_overrides}

    _register_named(pm.hook.register_executors, registry.executors, Executor,
                    "an executor (perpcarry.execution.engine.Executor)", "executor")
    _register_named(pm.hook.register_history_sources, registry.history_sources,
                    HistorySource, "a history source (perpcarry.venues.protocol.HistorySource)",
                    "history source")
    _register_named(pm.hook.register_alert_channels, registry.alert_channels, AlertChannel,
                    "an alert channel (perpcarry.alerts.channels.AlertChannel)",
                    "alert channel")
    return registry


def _register_named(hook, table: dict[str, tuple[Any, str]], kind: type, what: str,
                    label: str) -> None:
    """Call ``hook``'s implementations plugin by plugin with a ``register`` callback that
    takes objects of ``kind`` keyed by their ``name``, stamped with their plugin; a name two
    plugins register is an error naming both."""
    for impl in hook.get_hookimpls():
        owner = impl.plugin_name

        def register(obj: Any, owner: str = owner) -> None:
            _check(obj, kind, what, owner)
            if obj.name in table:
                raise PluginError(f"{label} {obj.name!r} is registered by both plugin "
                                  f"{table[obj.name][1]} and plugin {owner}")
            table[obj.name] = (obj, owner)

        impl.function(register=register)


def _check(obj: Any, kind: type, what: str, owner: str) -> None:
    if not isinstance(obj, kind):
        raise PluginError(f"plugin {owner} registered {type(obj).__name__}, which is not {what}")


def load_registry(allow: list[str] = (), deny: list[str] = ()) -> Registry:
    return build_registry(*create_plugin_manager(allow, deny))
