"""Configuration: ``perpcarry.toml`` overridden by ``PERPCARRY_...`` env vars.

Core validates its own sections here; each ``[venues.<id>]`` section is validated later,
by the model the venue's plugin registers (see :func:`perpcarry.config.loader.load_config`).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "PERPCARRY_"


class StrictModel(BaseModel):
    # No unknown keys; no inf or nan, which no setting means.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FeeOverride(StrictModel):
    """``[venues.<id>.fees]``: one of the venue's published fee tiers, and/or explicit rates
    (fractions, 0.001 = 0.1 %); an explicit rate replaces that field of the tier (or of the
    default schedule, or of the account's rates)."""

    # The tier names the venue publishes; a venue plugin's subclass lists them.
    tiers: ClassVar[tuple[str, ...]] = ()

    tier: str | None = None
    spot_maker: Decimal | None = Field(default=None, ge=0, lt=1)
    spot_taker: Decimal | None = Field(default=None, ge=0, lt=1)
    perp_maker: Decimal | None = Field(default=None, ge=-1, lt=1)
    perp_taker: Decimal | None = Field(default=None, ge=0, lt=1)

    @field_validator("tier")
    @classmethod
    def _published_tier(cls, tier: str | None) -> str | None:
        if tier is not None and tier not in cls.tiers:
            valid = ", ".join(cls.tiers) or "none, the venue's plugin ships no tier table"
            raise ValueError(f"unknown tier {tier!r} (valid tiers: {valid})")
        return tier


class VenueConfig(StrictModel):
    """The ``[venues.<id>]`` section every venue shares; plugins subclass it."""

    # Credentials a venue needs together; a plugin whose venue also needs a passphrase
    # adds the field and names it here.
    required_credentials: ClassVar[tuple[str, ...]] = ("api_key", "secret")

    enabled: bool = False
    api_key: SecretStr | None = None
    secret: SecretStr | None = None
    sandbox: bool = False
    market_cache_hours: float = Field(default=24.0, ge=0)
    # Share of the venue's published request-weight budget perpcarry may use.
    weight_budget_share: float = Field(default=0.6, gt=0, le=1)
    fees: FeeOverride = FeeOverride()
    # Send every REST request of the venue to this address instead of the venue's hosts:
    # https://fapi.binance.com/fapi/v1/x becomes {base_url}/fapi.binance.com/fapi/v1/x
    # (a local replay, a fake exchange, a relay).
    base_url: str | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
                raise ValueError(f"must be an http:// or https:// URL without a query, "
                                 f"got {url!r}")
        return url

    @model_validator(mode="after")
    def _credentials_together(self) -> VenueConfig:
        given = [name for name in self.required_credentials if getattr(self, name) is not None]
        if given and len(given) != len(self.required_credentials):
            missing = [n for n in self.required_credentials if n not in given]
            raise ValueError(
                f"missing credential {', '.join(missing)} (given: {', '.join(given)})"
            )
        return self

    @property
    def has_credentials(self) -> bool:
        return all(getattr(self, n) is not None for n in self.required_credentials)


class PluginsConfig(StrictModel):
    """Which installed plugins load. ``allow`` empty means all that are not denied."""

    allow: list[str] = []
    deny: list[str] = []


Estimator = Literal["current", "mean", "ewma", "conservative"]


class ScanConfig(StrictModel):
    # A venue that has not answered everything within this many seconds fails with "no
    # answer within N s"; the other venues' rows are still shown.
    deadline_seconds: float = Field(default=60.0, gt=0)
    horizon_days: float = Field(default=30.0, gt=0)
    estimator: Estimator = "mean"
    window_days: float = Field(default=7.0, gt=0)
    ewma_halflife_days: float = Field(default=2.0, gt=0)
    min_net_apr: float | None = None
    min_volume: float | None = Field(default=None, ge=0)


class AllocatorConfig(StrictModel):
    """``[allocator]``: how capital is split across carry positions (see
    perpcarry.allocation.allocator)."""

    capital: float | None = Field(default=None, gt=0)
    leverage: float = Field(default=2.0, ge=1, le=5)
    # Free margin kept against the perp leg's losses, as a share of its initial margin.
    margin_buffer: float = Field(default=0.5, ge=0, le=5)
    cash_reserve: float = Field(default=0.0, ge=0, lt=1)
    max_venue_share: float = Field(default=0.5, gt=0, le=1)
    max_asset_share: float = Field(default=0.2, gt=0, le=1)
    max_pair_share: float = Field(default=0.2, gt=0, le=1)
    min_net_apr: float = 0.0
    min_positions: int = Field(default=1, ge=0)
    max_positions: int = Field(default=20, ge=1)


class BacktestConfig(StrictModel):
    """``[backtest]``: replay of carry strategies on funding history (see perpcarry.backtest).

    Thresholds are net APRs (fractions a year, as ``scan`` shows them): a pair enters when its
    net APR is above ``enter_apr`` and leaves when it falls below ``exit_apr``, once held for
    ``min_hold_hours``; after leaving it may not re-enter for ``cooldown_hours``.
    """

    capital: float = Field(default=100_000.0, gt=0)
    # None: every settlement of the shortest funding interval in the data.
    cadence_hours: float | None = Field(default=None, gt=0)
    estimator: Estimator = "mean"
    window_days: float = Field(default=7.0, gt=0)
    ewma_halflife_days: float = Field(default=2.0, gt=0)
    horizon_days: float = Field(default=30.0, gt=0)
    enter_apr: float = 0.10
    exit_apr: float = 0.02
    min_hold_hours: float = Field(default=72.0, ge=0)
    cooldown_hours: float = Field(default=24.0, ge=0)
    # Sum of the spot and perp half-spreads (fraction of price) paid on every trade.
    spread_cost: float = Field(default=0.0002, ge=0, lt=1)
    # A held position is resized only when its target moves by more than this share of it.
    resize_band: float = Field(default=0.25, ge=0)
    out_dir: Path = Path("backtest-out")


class Settings(BaseSettings):
    """Core settings. ``venues`` stays raw here: plugins' models validate each section."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    cache_dir: Path | None = None
    plugins: PluginsConfig = PluginsConfig()
    scan: ScanConfig = ScanConfig()
    allocator: AllocatorConfig = AllocatorConfig()
    backtest: BacktestConfig = BacktestConfig()
    venues: dict[str, dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Env vars win over the TOML file, which arrives as init kwargs.
        return (env_settings, init_settings)
