"""``perpcarry account``, ``perpcarry orders`` and ``perpcarry paper reset``: what a venue
account holds, its recent orders, and starting a paper account afresh.

Live accounts are read through each venue's :class:`OrderVenue`; ``--paper`` reads the
venue's paper twin (``perpcarry.paper``), ``--paper --offline`` over the bundled snapshots,
with no config and no network.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from perpcarry.cli.common import emit_json, load, percent, split_option
from perpcarry.domain.types import decimal_text

JSON_SCHEMA_VERSION = 1
DISPLAY_PLACES = Decimal("1e-8")

VenuesOption = Annotated[list[str] | None, typer.Option(
    "--venues", help="Venue ids, comma-separated (default: enabled venues; offline: all "
                     "bundled).")]
PaperOption = Annotated[bool, typer.Option(
    "--paper", help="The venue's paper account (simulated on real market data).")]
OfflineOption = Annotated[bool, typer.Option(
    "--offline", help="With --paper: replay the bundled snapshots; no network, no config.")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]

paper_app = typer.Typer(no_args_is_help=True, help="The simulated accounts of --paper.")


# -- opening the venues ----------------------------------------------------------------------


def _selected(config, venues: list[str] | None, offline: bool, paper: bool) -> list[str]:
    from perpcarry.domain.errors import UsageError
    from perpcarry.scan.engine import ScanOptions, select_venues

    if offline and not paper:
        raise UsageError("--offline: a live account cannot be replayed; add --paper")
    return select_venues(config, ScanOptions(venues=split_option(venues, "--venues"),
                                             offline=offline))


def _live_venue(config, venue_id: str, context):
    """The venue's client, refused in one line when it cannot read an account."""
    from perpcarry.config.settings import ENV_PREFIX
    from perpcarry.domain.errors import ConfigError, UsageError
    from perpcarry.venues.orders import OrderVenue

    spec, venue_config = config.registry.venues[venue_id], config.venues[venue_id]
    if not venue_config.has_credentials:
        names = venue_config.required_credentials
        env = " and ".join(f"{ENV_PREFIX}VENUES__{venue_id.upper()}__{n.upper()}"
                           for n in names)
        raise ConfigError(f"{venue_id}: no API credentials: set {env} (or {', '.join(names)} "
                          f"under [venues.{venue_id}]), or use --paper")
    client = spec.factory(venue_config, context)
    if not isinstance(client, OrderVenue):
        raise UsageError(f"{venue_id}: the {spec.plugin or 'installed'} plugin does not "
                         "implement the order half (OrderVenue), so its account cannot be "
                         "read; use --paper")
    return client


@dataclass(frozen=True)
class OpenedVenue:
    """A venue's order half and the market-data client it lists markets with."""

    orders: Any  # an OrderVenue
    market_data: Any  # a MarketDataVenue
    close: Callable[[], Awaitable[None]]


@asynccontextmanager
async def open_venues(config, venue_ids: list[str], paper: bool, offline: bool
                      ) -> AsyncIterator[dict[str, OpenedVenue]]:
    """The order venues of ``venue_ids``, closed afterwards; offline, every request is
    answered from the bundled snapshots."""
    from perpcarry.ccxt.replay import replaying
    from perpcarry.paper import open_paper_venue
    from perpcarry.venues.protocol import VenueContext

    with tempfile.TemporaryDirectory(prefix="perpcarry-account-") as scratch:
        context = VenueContext(cache_dir=Path(scratch) if offline else config.cache_dir,
                               offline=offline)
        opened: dict[str, OpenedVenue] = {}
        transport = (replaying(*(config.registry.venues[v].offline_snapshot
                                 for v in venue_ids)) if offline else nullcontext())
        try:
            for venue_id in venue_ids:
                if paper:
                    venue = open_paper_venue(config, venue_id, context)
                    opened[venue_id] = OpenedVenue(venue, venue.view.client, venue.close)
                else:
                    client = _live_venue(config, venue_id, context)
                    opened[venue_id] = OpenedVenue(client, client, client.close)
            with transport:
                yield opened
        finally:
            for venue in opened.values():
                await venue.close()


async def _each(venues: dict[str, OpenedVenue],
                read: Callable[[str, OpenedVenue], Awaitable[Any]]
                ) -> tuple[dict[str, Any], dict[str, str]]:
    """``read`` of every venue at once; a venue that fails is reported, not fatal."""
    from perpcarry.domain.errors import VenueError

    ids = list(venues)
    outcomes = await asyncio.gather(*(read(v, venues[v]) for v in ids),
                                    return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, VenueError):
            raise outcome
    results = {v: o for v, o in zip(ids, outcomes, strict=True)
               if not isinstance(o, BaseException)}
    failures = {v: str(o).removeprefix(f"{v}: ") for v, o in zip(ids, outcomes, strict=True)
                if isinstance(o, BaseException)}
    return results, failures


# -- account ---------------------------------------------------------------------------------


def account(venues: VenuesOption = None, paper: PaperOption = False,
            offline: OfflineOption = False, as_json: JsonOption = False) -> int:
    """Balances per wallet, perp positions with margin ratio and liquidation distance, and
    open orders."""
    config = load()
    venue_ids = _selected(config, venues, offline, paper)

    async def read(venue_id: str, venue: OpenedVenue) -> dict[str, Any]:
        return {"balances": await venue.orders.fetch_balances(),
                "positions": await venue.orders.fetch_positions(),
                "open_orders": await venue.orders.fetch_open_orders()}

    async def run():
        async with open_venues(config, venue_ids, paper, offline) as opened:
            return await _each(opened, read)

    results, failures = asyncio.run(run())
    if as_json:
        emit_json(account_json(results, failures, paper, offline))
    else:
        from perpcarry.cli.account_tables import render_account

        render_account(results, failures, paper, offline, config.data_dir)
    return 1 if failures and not results else 0


def account_json(results: dict[str, Any], failures: dict[str, str], paper: bool,
                 offline: bool) -> dict[str, Any]:
    """The ``account --json`` document; every amount a decimal string."""
    venues = []
    for venue_id, found in results.items():
        venues.append({
            "venue": venue_id,
            "balances": [{"wallet": wallet.value, "currency": b.currency,
                          "free": decimal_text(b.free), "used": decimal_text(b.used),
                          "total": decimal_text(b.total)}
                         for wallet, rows in found["balances"].items() for b in rows.values()],
            "wallets": [wallet.value for wallet in found["balances"]],
            "positions": [position_json(p) for p in found["positions"]],
            "open_orders": [order_json(o) for o in found["open_orders"]],
        })
    return {"schema_version": JSON_SCHEMA_VERSION, "paper": paper, "offline": offline,
            "venues": venues, "failures": failures}


def position_json(p) -> dict[str, Any]:
    return {"symbol": p.symbol, "side": "short" if p.side.value == "sell" else "long",
            "quantity": decimal_text(p.quantity), "entry_price": decimal_text(p.entry_price),
            "mark_price": decimal_text(p.mark_price),
            "unrealised_pnl": decimal_text(p.unrealised_pnl),
            "leverage": decimal_text(p.leverage),
            "margin_mode": p.margin_mode.value if p.margin_mode else None,
            "maintenance_margin": decimal_text(p.maintenance_margin),
            "margin_ratio": decimal_text(p.margin_ratio),
            "liquidation_price": decimal_text(p.liquidation_price),
            "liquidation_distance": decimal_text(p.liquidation_distance)}


def order_json(o) -> dict[str, Any]:
    return {"symbol": o.symbol, "client_order_id": o.client_order_id,
            "venue_order_id": o.venue_order_id, "side": o.side.value, "type": o.type.value,
            "status": o.status.value, "quantity": decimal_text(o.quantity),
            "filled_quantity": decimal_text(o.filled_quantity),
            "average_price": decimal_text(o.average_price),
            "fees": [{"amount": decimal_text(f.amount), "currency": f.currency} for f in o.fees],
            "reduce_only": o.reduce_only, "price_source": o.price_source,
            "created_at": o.created_at.isoformat() if o.created_at else None}


def number(value: Decimal | None) -> str:
    """A decimal for a table: at most 8 places, no exponent, no trailing zeros."""
    if value is None:
        return "n/a"
    shown = value.quantize(DISPLAY_PLACES) if value.as_tuple().exponent < -8 else value
    text = format(shown.normalize(), "f")
    return "0" if text in ("-0", "") else text


def fraction(value: Decimal | None) -> str:
    return percent(None if value is None else float(value))


# -- orders ----------------------------------------------------------------------------------


def orders(venues: VenuesOption = None, paper: PaperOption = False,
           offline: OfflineOption = False,
           symbols: Annotated[list[str] | None, typer.Option(
               "--symbols", help="Base assets, e.g. BTC,ETH (default: those the account "
                                 "holds, has positions or open orders in).")] = None,
           as_json: JsonOption = False) -> int:
    """The venue's recent orders with their client ids and fills."""
    config = load()
    venue_ids = _selected(config, venues, offline, paper)
    bases = {s.upper() for s in split_option(symbols, "--symbols") or ()}

    async def read(venue_id: str, venue: OpenedVenue) -> list:
        found = []
        for market in await _order_markets(venue, bases):
            found.extend(await venue.orders.fetch_recent_orders(market))
        return sorted(found, key=lambda o: (o.created_at is None, o.created_at))

    async def run():
        async with open_venues(config, venue_ids, paper, offline) as opened:
            return await _each(opened, read)

    results, failures = asyncio.run(run())
    if as_json:
        emit_json({"schema_version": JSON_SCHEMA_VERSION, "paper": paper, "offline": offline,
                   "orders": [{"venue": v, **order_json(o)} for v, found in results.items()
                              for o in found],
                   "failures": failures})
    else:
        from perpcarry.cli.account_tables import render_orders

        render_orders(results, failures)
    return 1 if failures and not results else 0


async def _order_markets(venue: OpenedVenue, bases: set[str]) -> list:
    """The markets whose orders are listed: of ``bases`` when given, else of every asset the
    account holds other than the settle currencies, every position and every open order."""
    from perpcarry.ccxt.markets import CARRY_QUOTES
    from perpcarry.domain.types import MarketKind

    markets = await venue.market_data.load_markets()
    if not bases:
        balances = await venue.orders.fetch_balances()
        bases = {c for rows in balances.values() for c, b in rows.items()
                 if b.total and c not in CARRY_QUOTES}
        symbols = {p.symbol for p in await venue.orders.fetch_positions()}
        symbols |= {o.symbol for o in await venue.orders.fetch_open_orders()}
        bases |= {m.base for m in markets if m.symbol in symbols}
    return sorted((m for m in markets if m.base in bases
                   and (m.kind is MarketKind.PERP or m.quote in CARRY_QUOTES)),
                  key=lambda m: m.symbol)


# -- paper reset -----------------------------------------------------------------------------


@paper_app.command("reset")
def paper_reset(
    venues: Annotated[list[str] | None, typer.Option(
        "--venues", help="Venue ids, comma-separated (default: every installed venue).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> int:
    """Delete the paper accounts and start them again with the configured balances."""
    from perpcarry.domain.errors import UsageError
    from perpcarry.paper import paper_wallets
    from perpcarry.paper.store import PaperStore, delete_state, state_path
    from perpcarry.venues.protocol import utc_now

    config = load()
    installed = config.registry.venues
    chosen = list(dict.fromkeys(split_option(venues, "--venues") or sorted(installed)))
    unknown = [v for v in chosen if v not in installed]
    if unknown:
        raise UsageError(f"--venues: unknown venue {', '.join(unknown)} (installed: "
                         f"{', '.join(sorted(installed)) or 'none'})")
    models = {v: paper_wallets(config, v) for v in chosen}
    if not yes:
        typer.confirm(f"Delete the paper accounts of {', '.join(chosen)} in "
                      f"{config.data_dir / 'paper'} (orders, positions, balances)?",
                      abort=True)
    for venue_id, model in models.items():
        path = state_path(config.data_dir, venue_id)
        delete_state(path)
        balances = config.settings.paper.starting_balances(venue_id)
        PaperStore(path, venue_id, model.spot, balances, utc_now()).close()
        start = ", ".join(f"{c} {number(a)}" for c, a in balances.items()) or "nothing"
        typer.echo(f"{venue_id}: paper account reset to {start} in the {model.spot.value} "
                   f"wallet ({path})")
    return 0
