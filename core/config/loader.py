"""Loading and validating configuration, with one-line errors that name their source."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import SecretStr, ValidationError

from perpcarry.config.settings import ENV_PREFIX, Settings, VenueConfig
from perpcarry.domain.errors import ConfigError
from perpcarry.plugins.manager import Registry, load_registry

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
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def _env_name(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc)


def _source_of(loc: tuple[str | int, ...], path: Path | None) -> str:
    """Name the env var that set ``loc`` (or one of its parents), else the config file."""
    for end in range(len(loc), 0, -1):
        name = _env_name(loc[:end])
        if name in os.environ:
            return f"env {name}"
    if path is None:
        prefix = _env_name(loc) + "__"
        if any(k.startswith(prefix) for k in os.environ):
            return f"env {prefix}*"
    return str(path) if path else "defaults"


def _first_error(exc: ValidationError, path: Path | None, prefix: tuple = ()) -> ConfigError:
    err = exc.errors()[0]
    loc = prefix + tuple(err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    field = ".".join(str(p) for p in loc) or "(top level)"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return ConfigError(f"{_source_of(loc, path)}: {field}: {message}{suffix}")


def load_config(explicit_path: Path | None = None) -> Config:
    """Read, merge and validate the config; load the plugins it allows."""
    path = resolve_config_path(explicit_path)
    raw = _read_toml(path)
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise _first_error(exc, path) from None

    registry = load_registry(settings.plugins.allow, settings.plugins.deny)
    venues: dict[str, VenueConfig] = {}
    for venue_id, section in settings.venues.items():
        spec = registry.venues.get(venue_id)
        if spec is None:
            installed = ", ".join(sorted(registry.venues)) or "none"
            source = _source_of(("venues", venue_id), path)
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
            source = _source_of(("paper", "venues", venue_id), path)
            raise ConfigError(f"{source}: paper.venues.{venue_id}: unknown venue (installed "
                              f"venues: {installed})")
    return Config(path=path, settings=settings, registry=registry, venues=venues)
