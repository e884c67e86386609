"""Configuration: ``perpcarry.toml`` overridden by ``PERPCARRY_...`` env vars.

Core validates its own sections here; each ``[venues.<id>]`` section is validated later,
by the model the venue's plugin registers (see :func:`perpcarry.config.loader.load_config`).
"""

from __future__ import annotations

import re
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

from perpcarry.events import EventKind

ENV_PREFIX = "PERPCARRY_"
# Longest window, half-life or horizon in days: ten years spans every perp's history, and
# dates further back than the calendar holds overflow.
MAX_DAYS = 3650


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

    @model_validator(mode="before")
    @classmethod
    def _empty_credential_is_unset(cls, values: Any) -> Any:
        # `api_key = ""` in a config template, or an env var exported empty, means "not set".
        if isinstance(values, dict):
            return {k: None if k in cls.required_credentials and isinstance(v, str)
                    and not v.strip() else v for k, v in values.items()}
        return values

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
    """``[scan]``: defaults of ``scan`` and ``plan``. The ranges are checked in one place,
    :meth:`perpcarry.scan.engine.ScanOptions.validate`, whether a value comes from here or
    from a flag."""

    # A venue that has not answered everything within this many seconds fails with "no
    # answer within N s"; the other venues' rows are still shown.
    deadline_seconds: float = Field(default=60.0, gt=0)
    horizon_days: float = 30.0
    estimator: Estimator = "mean"
    window_days: float = 7.0
    ewma_halflife_days: float = 2.0
    min_net_apr: float | None = None
    min_volume: float | None = None


class AllocatorConfig(StrictModel):
    """``[allocator]``: how capital is split across carry positions. The ranges are checked in
    one place, :meth:`perpcarry.allocation.allocator.Limits.validate`, whichever of this
    section, ``plan``'s flags or a backtest supplies a value."""

    capital: float | None = None
    leverage: float = 2.0
    # Free margin kept against the perp leg's losses, as a share of its initial margin.
    margin_buffer: float = 0.5
    cash_reserve: float = 0.0
    max_venue_share: float = 0.5
    max_asset_share: float = 0.2
    max_pair_share: float = 0.2
    min_net_apr: float = 0.0
    min_positions: int = 1
    max_positions: int = 20


class StrategyConfig(StrictModel):
    """``[strategy]``: the carry rules ``backtest``, ``sweep`` and ``run`` share (one
    implementation, :mod:`perpcarry.strategy.rules`; docs/strategy.md describes each rule).

    Thresholds are net APRs (fractions a year, as ``scan`` shows them): a pair enters when its
    net APR is above ``enter_apr`` and leaves when it falls below ``exit_apr``, once held for
    ``min_hold_hours``; after leaving it may not re-enter for ``cooldown_hours``.
    """

    estimator: Estimator = "mean"
    window_days: float = Field(default=7.0, gt=0, le=MAX_DAYS)
    ewma_halflife_days: float = Field(default=2.0, gt=0, le=MAX_DAYS)
    horizon_days: float = Field(default=30.0, gt=0, le=MAX_DAYS)
    enter_apr: float = 0.10
    exit_apr: float = 0.02
    min_hold_hours: float = Field(default=72.0, ge=0)
    cooldown_hours: float = Field(default=24.0, ge=0)
    # Sum of the spot and perp half-spreads (fraction of price) paid on every trade.
    spread_cost: float = Field(default=0.0002, ge=0, lt=1)
    # A held position is resized only when its target moves by more than this share of it.
    # Past a million times the position no resize ever happens; beyond, band x quantity
    # overflows.
    resize_band: float = Field(default=0.25, ge=0, le=1e6)
    # Leave when the last settled rate (per period) is below this, even inside the minimum
    # hold, and never enter while it is; FMZ v0.2.8 closes below -0.2 % a period rather than
    # on any negative print. None: off.
    exit_funding_below: float | None = Field(default=-0.002, gt=-1, lt=1)
    # No new entry within this many minutes before the pair's next settlement (seed guide:
    # 15); a day or more would forbid every entry.
    entry_blackout_minutes: float = Field(default=15.0, ge=0, lt=1440)
    # Leave when the mark moved more than this fraction since entry, either way (FMZ's
    # price-spike exit); a risk exit, inside the minimum hold too. None: off.
    spike_exit: float | None = Field(default=None, gt=0, lt=100)
    # FMZ's open and close premium-rate options (premium = perp / spot - 1): enter only at or
    # above enter_premium, leave below exit_premium once held min_hold_hours. None: off.
    enter_premium: float | None = Field(default=None, gt=-1, lt=1)
    exit_premium: float | None = Field(default=None, gt=-1, lt=1)
    # The margin rule of the backtest and of run's margin monitor: a short's margin (run: a
    # margin pool's) is topped up (free quote moved, else spot sold and perp bought back)
    # when it falls below margin_floor x notional / [allocator] leverage, back to
    # (1 + margin_buffer) x notional / leverage. 1.25: at 80 % of the pool's margin used,
    # before [risk] utilisation_ceiling (85 %) closes positions. At most 1 + margin_buffer
    # (the target); see docs/strategy.md.
    margin_floor: float = Field(default=1.25, gt=0, le=6)

    @field_validator("exit_apr")
    @classmethod
    def _hysteresis(cls, exit_apr: float, info) -> float:
        enter_apr = info.data.get("enter_apr")
        if enter_apr is not None and exit_apr > enter_apr:
            raise ValueError(f"must not exceed enter_apr ({enter_apr:g}): a pair enters above "
                             "enter_apr and leaves below exit_apr")
        return exit_apr

    @field_validator("exit_premium")
    @classmethod
    def _premium_hysteresis(cls, exit_premium: float | None, info) -> float | None:
        enter_premium = info.data.get("enter_premium")
        if None not in (exit_premium, enter_premium) and exit_premium > enter_premium:
            raise ValueError(f"must not exceed enter_premium ({enter_premium:g}): a pair "
                             "enters at or above enter_premium and leaves below exit_premium")
        return exit_premium


class BacktestConfig(StrictModel):
    """``[backtest]``: what only a replay of the ``[strategy]`` rules on funding history has
    (see perpcarry.backtest)."""

    capital: float = Field(default=100_000.0, gt=0)
    # None: every settlement of the shortest funding interval in the data.
    cadence_hours: float | None = Field(default=None, gt=0)
    out_dir: Path = Path("backtest-out")

    @model_validator(mode="before")
    @classmethod
    def _rules_moved(cls, values: Any) -> Any:
        # Configs written before [strategy] existed put the rules here.
        if isinstance(values, dict):
            moved = [key for key in values if key in StrategyConfig.model_fields]
            if moved:
                raise ValueError(f"{moved[0]} moved to [strategy]: write it there "
                                 f"([strategy] {moved[0]} = {values[moved[0]]!r})")
        return values

    @field_validator("out_dir", mode="before")
    @classmethod
    def _named_folder(cls, out_dir: Any) -> Any:
        # An empty path would be the working directory, filled with charts unasked.
        if isinstance(out_dir, str) and not out_dir.strip():
            raise ValueError("empty path: name a folder for the charts")
        return out_dir


PAPER_DEFAULT_BALANCES = {"USDT": Decimal(100_000)}
# The lowest maintenance-margin tier of BTC perpetuals, the most traded carry pair: Bybit
# BTCUSDT risk-limit tier 1 is 0.5 %, Binance BTCUSDT tier 1 0.40 % (Binance announcement
# "Updates to Leverage and Margin Tiers of Binance Futures Contracts", 2021-03-18); smaller
# perps have higher rates, so set your own for them. Read 2026-12-06.
PAPER_DEFAULT_MAINTENANCE_MARGIN_RATE = Decimal("0.005")
CURRENCY_CODE = re.compile(r"^[A-Z0-9]{1,20}$")


class PaperVenueConfig(StrictModel):
    """``[paper.venues.<id>]``: what one venue's paper account differs in."""

    balances: dict[str, Decimal] | None = None

    @field_validator("balances")
    @classmethod
    def _balances(cls, balances: dict[str, Decimal] | None) -> dict[str, Decimal] | None:
        return None if balances is None else check_balances(balances)


class PaperConfig(StrictModel):
    """``[paper]``: the simulated accounts of ``--paper`` (see docs/orders.md).

    ``balances`` are the starting balances of every venue's paper account (in its spot wallet
    where spot and futures wallets are separate, else in the unified one), applied when the
    account is created or reset; ``[paper.venues.<id>] balances`` replaces them for one venue.
    """

    balances: dict[str, Decimal] = PAPER_DEFAULT_BALANCES
    venues: dict[str, PaperVenueConfig] = {}
    # Added to (buys) or taken off (sells) the mark price when no book is known, in bps.
    half_spread_bps: Decimal = Field(default=Decimal(2), ge=0, lt=10_000)
    maintenance_margin_rate: Decimal = Field(default=PAPER_DEFAULT_MAINTENANCE_MARGIN_RATE,
                                             gt=0, lt=1)
    # Market data younger than this is reused between calls instead of fetched again.
    quote_max_age_seconds: float = Field(default=5.0, ge=0)

    @field_validator("balances")
    @classmethod
    def _balances(cls, balances: dict[str, Decimal]) -> dict[str, Decimal]:
        return check_balances(balances)

    def starting_balances(self, venue_id: str) -> dict[str, Decimal]:
        """The balances ``venue_id``'s paper account starts with."""
        override = self.venues.get(venue_id)
        if override is not None and override.balances is not None:
            return override.balances
        return self.balances


def check_balances(balances: dict[str, Decimal]) -> dict[str, Decimal]:
    """Currency codes in capitals, amounts not negative."""
    for currency, amount in balances.items():
        if not CURRENCY_CODE.match(currency):
            raise ValueError(f"currency {currency!r}: capital letters and digits, e.g. USDT")
        if amount < 0:
            raise ValueError(f"{currency}: a starting balance cannot be negative ({amount})")
    return balances


class RiskConfig(StrictModel):
    """``[risk]``: the margin monitor, its alarms and the circuit breaker of ``perpcarry
    run`` (see docs/risk.md). Distances are fractions of the mark price (0.15: the mark may
    move 15 % before liquidation); the seed figures are cited there."""

    # Below the floor the monitor tops the margin up (a transfer, else a rebalance) to
    # ``top_up_target``; below ``warning_distance`` it only warns and checks more often.
    floor_distance: Decimal = Field(default=Decimal("0.15"), gt=0, lt=1)
    warning_distance: Decimal = Field(default=Decimal("0.25"), gt=0, lt=1)
    top_up_target: Decimal = Field(default=Decimal("0.35"), gt=0, lt=1)
    # Effective leverage (perp notional / margin equity) above which an alarm is raised.
    leverage_ceiling: Decimal = Field(default=Decimal(3), gt=0, le=125)
    # Margin used / margin equity above which pending orders are canceled and exposure
    # reduced, smallest position first (seed 003: 85 %).
    utilisation_ceiling: Decimal = Field(default=Decimal("0.85"), gt=0, le=1)
    # Seconds between checks, and between checks while a position is below the warning
    # distance (seed 003 monitors margin every 3 seconds).
    check_seconds: float = Field(default=60.0, gt=0, le=86_400)
    danger_check_seconds: float = Field(default=3.0, gt=0, le=86_400)
    # The circuit breaker trips on: a naked leg still open after this many cycles ...
    naked_leg_cycles: int = Field(default=1, ge=1, le=1000)
    # ... more than ``max_order_errors`` order errors on one venue within the window ...
    max_order_errors: int = Field(default=5, ge=1, le=10_000)
    order_error_window_seconds: float = Field(default=600.0, gt=0, le=86_400)
    # ... the carry's unrealised PnL falling by more than this share of its equity within
    # the window (seed 003: -8 % in 5 minutes) ...
    max_drawdown: Decimal = Field(default=Decimal("0.08"), gt=0, lt=1)
    drawdown_window_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # ... a venue unanswered for longer than this.
    venue_down_minutes: float = Field(default=10.0, gt=0, le=10_080)
    # Tripped, close every position through the executor (else only stop new entries).
    flatten: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> RiskConfig:
        if not self.floor_distance < self.warning_distance:
            raise ValueError(f"warning_distance ({self.warning_distance}) must be above "
                             f"floor_distance ({self.floor_distance})")
        if not self.floor_distance < self.top_up_target:
            raise ValueError(f"top_up_target ({self.top_up_target}) must be above "
                             f"floor_distance ({self.floor_distance})")
        return self


class ExecutionConfig(StrictModel):
    """``[execution]``: how ``open`` and ``close`` trade (see docs/execution.md)."""

    # The registered executor used when --executor is not given.
    executor: str = "perp-first"
    # Slices per open or close (more when a venue's per-order maximum demands it).
    slices: int = Field(default=1, ge=1, le=999)
    slice_pause_seconds: float = Field(default=2.0, ge=0, le=3600)
    # The sliced executor stops when the basis (perp bid / spot ask - 1) moved more than
    # this since the first slice, in basis points.
    max_basis_move_bps: Decimal = Field(default=Decimal(20), gt=0, le=10_000)
    # Largest unhedged difference between the legs left alone, in base units; default one
    # quantity step of the coarser leg.
    tolerance: Decimal | None = Field(default=None, gt=0)
    leverage: Decimal = Field(default=Decimal(1), gt=0, le=20)
    # Margin moved to the futures wallet for a short, as a multiple of notional / leverage.
    margin_buffer: Decimal = Field(default=Decimal("1.5"), ge=1, le=10)
    # Move that margin automatically where the venue separates wallets; default: on for
    # paper accounts, off for live ones.
    auto_transfer: bool | None = None
    # A new attempt under a new client id only after the previous one is proven absent.
    max_attempts: int = Field(default=2, ge=1, le=10)
    max_order_notional: Decimal | None = Field(default=None, gt=0)


class RunConfig(StrictModel):
    """``[run]``: when ``perpcarry run`` cycles and over which pairs (see docs/run.md).
    The rules are ``[strategy]``'s, the sizing ``[allocator]``'s, the orders
    ``[execution]``'s."""

    # A cycle every so often, and one just after each settlement of a pair in the universe
    # (the rates that decide entries and exits change then).
    cadence_minutes: float = Field(default=5.0, gt=0, le=24 * 60)
    after_settlement_seconds: float = Field(default=30.0, ge=0, le=3600)
    # The universe: every enabled venue (or --venues) and every carry pair on it, unless
    # narrowed here (or by --symbols).
    venues: list[str] | None = None
    symbols: list[str] | None = None


class StreamsConfig(StrictModel):
    """``[streams]``: websocket market data (see docs/streams.md). A stream with no message
    for ``stale_after_seconds`` of its kind is stale: its data stops driving decisions, the
    venue's REST client is polled instead, and it is resubscribed after a backoff of
    ``backoff_base_seconds`` doubled per failed attempt (capped at ``backoff_max_seconds``)
    with up to ``backoff_jitter`` of it added at random."""

    enabled: bool = True
    # Per stream kind (perpcarry.venues.streams.StreamKind); a kind not named uses ``default``.
    # Binance pushes marks every second and book tops on every change; 30 s of silence is a
    # dead connection, not a quiet market.
    stale_after_seconds: dict[str, float] = {"default": 30.0, "orders": 300.0,
                                             "positions": 300.0, "balances": 300.0}
    backoff_base_seconds: float = Field(default=1.0, gt=0, le=600)
    backoff_max_seconds: float = Field(default=60.0, gt=0, le=3600)
    backoff_jitter: float = Field(default=0.25, ge=0, le=1)
    # How old a streamed value may be and still drive a decision (a paper fill, a mark).
    max_age_seconds: float = Field(default=5.0, gt=0, le=3600)

    @model_validator(mode="before")
    @classmethod
    def _alarm_removed(cls, values: Any) -> Any:
        # Configs written before the stream risk had the mark alarm's threshold here.
        if isinstance(values, dict) and "wake_on_mark_move" in values:
            raise ValueError("wake_on_mark_move was removed: the stream risk decides on every "
                             "pushed mark of a held perp against [strategy] margin_floor, "
                             "[risk] floor_distance and [strategy] spike_exit; delete the line")
        return values

    @field_validator("stale_after_seconds")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not v > 0]
        if bad:
            raise ValueError(f"stale_after_seconds must be > 0 (got {', '.join(bad)})")
        return {"default": 30.0, **value}

    def stale_after(self, kind: str) -> float:
        """Seconds of silence after which a stream of ``kind`` is stale."""
        return self.stale_after_seconds.get(kind, self.stale_after_seconds["default"])


# What alerts by default: everything but funding payments, which arrive every few hours per
# position and are reported by the daily summary.
DEFAULT_ALERT_KINDS = tuple(kind for kind in EventKind if kind is not EventKind.FUNDING)


class AlertsConfig(StrictModel):
    """``[alerts]``: notifications through apprise (see docs/alerts.md).

    ``urls`` are apprise URLs (``tgram://``, ``ntfy://``, ``json://``...), secrets: shown
    only as their scheme. Within each window of ``window_minutes`` at most
    ``per_kind_limit`` alerts of one kind and ``max_per_window`` in all are sent (critical
    ones pass the overall cap); what is held back is counted and told in one message when
    the window ends.
    """

    urls: list[SecretStr] = []
    # Which event kinds alert (perpcarry.events.EventKind).
    kinds: list[EventKind] = list(DEFAULT_ALERT_KINDS)
    window_minutes: float = Field(default=10.0, gt=0, le=1440)
    per_kind_limit: int = Field(default=5, ge=1, le=1000)
    max_per_window: int = Field(default=20, ge=1, le=10_000)
    # A channel that has not answered by then counts as failed (trading never waits on it).
    send_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    # The hour (UTC) the ledger's daily summary is sent.
    daily_summary_hour: int = Field(default=8, ge=0, le=23)


class Settings(BaseSettings):
    """Core settings. ``venues`` stays raw here: plugins' models validate each section."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    cache_dir: Path | None = None
    # Where state that must outlive the process lives (the paper venue's accounts).
    data_dir: Path | None = None
    plugins: PluginsConfig = PluginsConfig()
    scan: ScanConfig = ScanConfig()
    allocator: AllocatorConfig = AllocatorConfig()
    backtest: BacktestConfig = BacktestConfig()
    strategy: StrategyConfig = StrategyConfig()
    paper: PaperConfig = PaperConfig()
    risk: RiskConfig = RiskConfig()
    execution: ExecutionConfig = ExecutionConfig()
    run: RunConfig = RunConfig()
    alerts: AlertsConfig = AlertsConfig()
    streams: StreamsConfig = StreamsConfig()
    venues: dict[str, dict[str, Any]] = {}

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, cache_dir: Any) -> Any:
        # `cache_dir = ""`, or the env var exported empty, means the default folder.
        return None if isinstance(cache_dir, str) and not cache_dir.strip() else cache_dir

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
