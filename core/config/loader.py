"""Loading and validating configuration, with one-line errors that name their source."""

from __future__ import annotations

import difflib
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from loguru import logger
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import SettingsError

from perpcarry.config.settings import ENV_PREFIX, Settings, VenueConfig
from perpcarry.domain.errors import ConfigError
from perpcarry.execution.crash import HOOK_ENVS
from perpcarry.plugins.manager import (
    LOAD_PLUGINS_ENV,
    Registry,
    installed_plugins,
    load_registry,
)

CONFIG_ENV = "PERPCARRY_CONFIG"
CONFIG_NAME = "perpcarry.toml"


@dataclass(frozen=True)
class Config:
    path: Path | None
    settings: Settings
    registry: Registry
    venues: dict[str, VenueConfig]

    def enabled_venues(self) -> list[str]:
        return sorted(v for v, cfg in self.venues.items() if cfg.enabled)

    @property
    def cache_dir(self) -> Path:
        return self.settings.cache_dir or Path(platformdirs.user_cache_dir("perpcarry"))

    @property
    def data_dir(self) -> Path:
        """Where state that outlives the process lives: ``data_dir``
        (``PERPCARRY_DATA_DIR``), else the user data dir."""
        return self.settings.data_dir or Path(platformdirs.user_data_dir("perpcarry"))

    def redacted(self) -> dict[str, Any]:
        """The effective config as plain data, every secret replaced by ``"**********"``."""
        data = self.settings.model_dump(mode="json", exclude={"venues"})
        data["config_file"] = str(self.path) if self.path else None
        data["venues"] = {
            venue: _redact(cfg.model_dump()) for venue, cfg in sorted(self.venues.items())
        }
        return data


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    if hasattr(value, "__str__") and not isinstance(value, str | int | float | bool | None):
        return str(value)
    return value


def resolve_config_path(explicit: Path | None) -> Path | None:
    """--config, then $PERPCARRY_CONFIG, then ./perpcarry.toml, then the user config dir."""
    if explicit is None and os.environ.get(CONFIG_ENV):
        explicit = Path(os.environ[CONFIG_ENV])
    if explicit is not None:
        if explicit.is_dir():
            raise ConfigError(f"{explicit}: a folder, not a config file")
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: config file not found")
        return explicit
    for candidate in (
        Path.cwd() / CONFIG_NAME,
        Path(platformdirs.user_config_dir("perpcarry")) / CONFIG_NAME,
    ):
        if candidate.is_file():
            return candidate
    return None


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte "
                          f"0x{exc.object[exc.start]:02x} at offset {exc.start})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def _env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def source_of(loc: tuple[str | int, ...], path: Path | None) -> str:
    """Name the env var that set ``loc`` (or one of its parents), else the config file, else
    ``defaults``. Env var names match in any case, as pydantic-settings reads them."""
    environ = {name.upper(): name for name in os.environ}
    for end in range(len(loc), 0, -1):
        name = _env_name(loc[:end])
        if name in environ:
            return f"env {environ[name]}"
    if path is None:
        prefix = _env_name(loc) + "__"
        if any(k.startswith(prefix) for k in environ):
            return f"env {prefix}*"
    return str(path) if path else "defaults"


# PERPCARRY_ variables that are not settings.
_NOT_SETTINGS = frozenset({CONFIG_ENV, LOAD_PLUGINS_ENV, *HOOK_ENVS})


def _field_type(annotation: Any) -> Any:
    """``X`` of ``X | None``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _is_structured(annotation: Any) -> bool:
    """Whether pydantic-settings reads an env var for this type as JSON."""
    origin = typing.get_origin(annotation) or annotation
    return origin in (list, tuple, set, dict) or (
        isinstance(origin, type) and issubclass(origin, BaseModel))


def _check_env() -> None:
    """Warn about ``PERPCARRY_...`` variables that match no setting; refuse a list or table
    that is not JSON, naming the variable (pydantic-settings would only name the field)."""
    for name, value in sorted(os.environ.items()):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        if name.upper() in _NOT_SETTINGS:
            if name != name.upper():  # read by its exact name, unlike the settings
                logger.warning("env {} is ignored: the name is {}", name, name.upper())
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        fields = Settings.model_fields
        top = fields.get(parts[0])
        if top is None:
            close = difflib.get_close_matches(parts[0], fields, n=1)
            hint = f" (did you mean {ENV_PREFIX}{close[0].upper()}?)" if close else ""
            logger.warning("env {} matches no setting and is ignored{}", name, hint)
            continue
        annotation = _field_type(top.annotation)
        for part in parts[1:]:  # a nested key: a model's field or a dict's key
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                field = annotation.model_fields.get(part)
                if field is None:
                    break  # the model's own validation names the unknown key
                annotation = _field_type(field.annotation)
            elif typing.get_origin(annotation) is dict:
                annotation = _field_type(typing.get_args(annotation)[1])
            else:
                break
        else:
            if _is_structured(annotation):
                _check_json(name, value, annotation)


def _check_json(name: str, value: str, annotation: Any) -> None:
    try:
        json.loads(value)
    except ValueError as exc:
        origin = typing.get_origin(annotation) or annotation
        example = ('a list, e.g. ["a", "b"]' if origin in (list, tuple, set)
                   else f'a table, e.g. {{"key": 1}}, or set {name}__<KEY> instead')
        raise ConfigError(f"env {name}: not valid JSON ({exc.msg} at column {exc.colno}): "
                          f"write {example}") from None


def _first_error(exc: ValidationError, path: Path | None, prefix: tuple = ()) -> ConfigError:
    err = exc.errors()[0]
    loc = prefix + tuple(err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    field = ".".join(str(p) for p in loc) or "(top level)"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return ConfigError(f"{source_of(loc, path)}: {field}: {message}{suffix}")


def load_config(explicit_path: Path | None = None) -> Config:
    """Read, merge and validate the config; load the plugins it allows."""
    path = resolve_config_path(explicit_path)
    raw = _read_toml(path)
    _check_env()
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise _first_error(exc, path) from None
    except SettingsError as exc:  # any env value _check_env did not foresee
        raise ConfigError(f"environment: {exc}") from None

    plugin_names = installed_plugins()
    unknown = [name for name in settings.plugins.allow if name not in plugin_names]
    if unknown:  # a typo here would otherwise load nothing and say nothing
        raise ConfigError(f"{source_of(('plugins', 'allow'), path)}: plugins.allow: no "
                          f"installed plugin is named {', '.join(unknown)} (installed: "
                          f"{', '.join(plugin_names) or 'none'})")
    registry = load_registry(settings.plugins.allow, settings.plugins.deny)
    venues: dict[str, VenueConfig] = {}
    for venue_id, section in settings.venues.items():
        spec = registry.venues.get(venue_id)
        if spec is None:
            installed = ", ".join(sorted(registry.venues)) or "none"
            source = source_of(("venues", venue_id), path)
            if str(section.get("enabled", "false")).lower() in {"true", "1", "yes"}:
                raise ConfigError(
                    f"{source}: venues.{venue_id}: venue is enabled but no installed plugin "
                    f"provides it (installed venues: {installed})"
                )
            raise ConfigError(
                f"{source}: venues.{venue_id}: unknown venue (installed venues: {installed})"
            )
        try:
            venues[venue_id] = spec.config_model(**section)
        except ValidationError as exc:
            raise _first_error(exc, path, ("venues", venue_id)) from None
    for venue_id, spec in registry.venues.items():
        venues.setdefault(venue_id, spec.config_model())
    for venue_id in settings.paper.venues:
        if venue_id not in registry.venues:
            installed = ", ".join(sorted(registry.venues)) or "none"
            source = source_of(("paper", "venues", venue_id), path)
            raise ConfigError(f"{source}: paper.venues.{venue_id}: unknown venue (installed "
                              f"venues: {installed})")
    return Config(path=path, settings=settings, registry=registry, venues=venues)
