"""Shared by the execution fault matrix and the property test: a two-leg execution over a
paper venue (offline, the Binance snapshot) or over the live ccxt path against the fake
Binance, and the invariants read from the venue's side.

The venue is wrapped (:class:`Watched`) to see every order as it leaves: the journal must
already hold its client id, marked sent (write-ahead), and no id may leave twice. Paper
faults are queued for a leg (``Watched.fault``) so both legs of a concurrent slice cannot
take each other's fault; the fake Binance keys its faults by route, which names the leg.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from fake_binance import FakeBinance
from pydantic import SecretStr
from support import no_sleep

from perpcarry.ccxt.replay import replaying
from perpcarry.config.loader import load_config
from perpcarry.config.settings import VenueConfig
from perpcarry.domain.types import CarryPair
from perpcarry.execution.engine import TwoLegExecution
from perpcarry.execution.journal import Journal, OrderEvent, Purpose
from perpcarry.execution.recovery import Reconciliation, recover_intents
from perpcarry.paper import PaperFaults, open_paper_venue
from perpcarry.venues.orders import Leg, OrderRequest, Side, Wallet
from perpcarry.venues.protocol import VenueContext, carry_pairs
from perpcarry_binance.venue import BinanceVenue

# The Binance snapshot's BTCUSDT perp mark at 2025-09-09 00:00 UTC (as tests/test_paper.py).
SNAPSHOT_TIME = datetime(2025, 9, 9, tzinfo=UTC)
BTC_MARK = Decimal("112015.09961957")
# The real ETHUSDT fill of 2024-12-12 the fake Binance fills at (tests/test_fake_binance_faults).
ETH_PRICE = Decimal("3925.56")


class Killed(BaseException):
    """The process dying between two sends: nothing below it runs, nothing is cleaned up."""


def leg_of(request: OrderRequest) -> Leg:
    return Leg.PERP if request.market.kind.value == "perp" else Leg.SPOT


class Watched:
    """An order venue seen from outside: every placement checked for write-ahead and
    counted; paper faults applied to the leg they were queued for; optionally dying
    (:class:`Killed`) at the n-th placement."""

    def __init__(self, inner, journal_of: Callable[[], Journal],
                 faults: PaperFaults | None = None) -> None:
        self.inner = inner
        self.venue_id = inner.venue_id
        self._journal_of = journal_of
        self._faults = faults
        self._pending: dict[Leg, list[Callable[[PaperFaults], None]]] = defaultdict(list)
        self._lock = asyncio.Lock()
        self.sent: list[str] = []
        self.unjournalled: list[str] = []
        self.kill_at: int | None = None

    def fault(self, leg: Leg, apply: Callable[[PaperFaults], None]) -> None:
        """The next placement on ``leg`` meets the paper fault ``apply`` queues."""
        self._pending[leg].append(apply)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def place_order(self, request: OrderRequest):
        # One placement at a time: the paper fault queue is first in, first out.
        async with self._lock:
            if self.kill_at is not None and len(self.sent) + 1 == self.kill_at:
                raise Killed
            check_written_ahead(self._journal_of(), request.client_order_id,
                                self.unjournalled)
            self.sent.append(request.client_order_id)
            pending = self._pending[leg_of(request)]
            if pending and self._faults is not None:
                pending.pop(0)(self._faults)
            return await self.inner.place_order(request)


def check_written_ahead(journal: Journal, client_id: str, violations: list[str]) -> None:
    order = journal.order(client_id)
    if order is None or order.state is not OrderEvent.SENT:
        violations.append(f"{client_id}: {'not journalled' if order is None else order.state}")


class WriteAheadRequests(list):
    """The fake Binance's request log, checking every order POST against the journal the
    moment it arrives."""

    def __init__(self, journal_of: Callable[[], Journal]) -> None:
        super().__init__()
        self.journal_of = journal_of
        self.unjournalled: list[str] = []

    def append(self, recorded) -> None:
        if recorded.method == "POST" and recorded.path in ("/fapi/v1/order", "/api/v3/order"):
            check_written_ahead(self.journal_of(), recorded.params["newClientOrderId"],
                                self.unjournalled)
        super().append(recorded)


@dataclass
class Harness:
    """One venue, one journal, one carry pair: what every fault case runs on."""

    kind: str  # paper | fake
    journal: Journal
    journal_path: Path
    venue: Watched
    pair: CarryPair
    price: Decimal
    fake: FakeBinance | None = None
    faults: PaperFaults | None = None
    spot_start: Decimal = Decimal(0)

    def execution(self, **options) -> TwoLegExecution:
        return TwoLegExecution(self.journal, self.venue, self.pair,
                               reference_price=self.price, sleep=no_sleep, **options)

    def reopen(self) -> None:
        """A fresh process: the journal closed (its lock released) and opened again."""
        self.journal.close()
        self.journal = Journal.open(self.journal_path, trading=True)

    async def recover(self) -> Reconciliation:
        """What the next trading command does first, in a fresh engine."""
        report = Reconciliation()
        await recover_intents(self.journal, {self.venue.venue_id: self.venue},
                              _HarnessMarkets(self), report)
        return report

    async def venue_legs(self) -> tuple[Decimal, Decimal]:
        """(base held on spot since the start, perp short), as the venue has them."""
        base = self.pair.base
        if self.fake is not None:
            symbol = self.pair.perp.venue_symbol
            short = -self.fake.positions.get(symbol, {"amt": Decimal(0)})["amt"]
            return self.fake.spot_balances.get(base, Decimal(0)) - self.spot_start, short
        balances = await self.venue.inner.fetch_balances()
        held = balances[Wallet.SPOT].get(base)
        positions = await self.venue.inner.fetch_positions()
        short = sum((p.quantity if p.side is Side.SELL else -p.quantity
                     for p in positions if p.symbol == self.pair.perp.symbol), Decimal(0))
        return (held.total if held else Decimal(0)) - self.spot_start, short

    def sends(self) -> Counter:
        """How many times each client order id reached the venue."""
        if self.fake is not None:
            return Counter(r.params["newClientOrderId"] for r in self.fake.requests
                           if r.method == "POST"
                           and r.path in ("/fapi/v1/order", "/api/v3/order"))
        return Counter(self.venue.sent)

    def unjournalled(self) -> list[str]:
        if self.fake is not None:
            return self.fake.requests.unjournalled + self.venue.unjournalled
        return self.venue.unjournalled

    async def assert_invariants(self) -> None:
        """After the run (and recovery): hedged within the tolerance on the venue, no id
        sent twice, a new attempt only after the earlier one was absent, the journal's
        position equal to the venue's, every order journalled before it was sent."""
        tolerance = self.execution().tolerance
        spot, short = await self.venue_legs()
        assert abs(spot - short) <= tolerance, f"naked: spot {spot}, perp short {short}"
        sends = self.sends()
        assert all(n == 1 for n in sends.values()), f"sent twice: {sends}"
        assert self.unjournalled() == [], "sent before journalled"
        journalled = {}
        for intent_id in self._intent_ids():
            for order in self.journal.orders(intent_id):
                journalled[order.client_order_id] = order
        assert set(sends) <= set(journalled), "an order the journal does not know was sent"
        by_slot = defaultdict(list)
        for order in journalled.values():
            by_slot[order.intent_id, order.leg, order.slice, order.purpose].append(order)
        for (_, leg, _, purpose), orders in by_slot.items():
            orders.sort(key=lambda o: o.attempt)
            market = self.pair.perp if leg is Leg.PERP else self.pair.spot
            for earlier in orders[:-1]:
                if earlier.client_order_id not in sends:
                    continue
                on_venue = await self.venue.inner.fetch_order(market, earlier.client_order_id)
                if purpose is Purpose.ENTRY:
                    # A new attempt only once the earlier was refused or proven absent.
                    assert earlier.state in (OrderEvent.ABSENT, OrderEvent.REJECTED), earlier
                    assert on_venue is None, on_venue
                else:
                    # A further unwind only once the earlier could fill no more.
                    assert earlier.state.is_final, earlier
                    assert on_venue is None or on_venue.status.is_final, on_venue
        assert not self.journal.unfinished_intents(), "an intent is still pending"
        held_spot = sum((p.spot_quantity for p in self.journal.positions(include_closed=True)),
                        Decimal(0))
        held_perp = sum((p.perp_quantity for p in self.journal.positions(include_closed=True)),
                        Decimal(0))
        assert (held_spot, held_perp) == (spot, short), "journal differs from the venue"

    def _intent_ids(self) -> list[str]:
        rows = self.journal._db.execute("SELECT intent_id FROM intents").fetchall()
        return [r[0] for r in rows]

    def orders(self, purpose: Purpose | None = None):
        return [o for i in self._intent_ids() for o in self.journal.orders(i)
                if purpose is None or o.purpose is purpose]


@dataclass
class Clock:
    now: datetime = SNAPSHOT_TIME

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def env(name: str, value: str):
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


async def open_paper(stack: AsyncExitStack, data_dir: Path, *, margin: Decimal = Decimal(20_000)
                     ) -> Harness:
    """A Binance paper account over the offline snapshot in ``data_dir``, ``margin`` USDT
    moved to the futures wallet, and a trading journal beside it. Closed by ``stack``."""
    with env("PERPCARRY_DATA_DIR", str(data_dir)):
        config = load_config(None)
    stack.enter_context(replaying(config.registry.venues["binance"].offline_snapshot))
    faults = PaperFaults()
    inner = open_paper_venue(config, "binance", VenueContext(
        cache_dir=data_dir / "cache", offline=True, clock=Clock()), faults)
    stack.push_async_callback(inner.close)
    path = data_dir / "journal.sqlite"
    harness_box: list[Harness] = []
    venue = Watched(inner, lambda: harness_box[0].journal, faults)
    markets = list((await inner.view.markets()).values())
    pair = next(p for p in carry_pairs(markets) if p.base == "BTC")
    await inner.transfer("USDT", margin, Wallet.SPOT, Wallet.FUTURES)
    harness = Harness("paper", Journal.open(path, trading=True), path, venue, pair, BTC_MARK,
                      faults=faults)
    harness_box.append(harness)
    stack.callback(lambda: harness.journal.close())
    return harness


def credentials() -> VenueConfig:
    return VenueConfig(enabled=True, api_key=SecretStr("fake-test-key-not-real"),
                       secret=SecretStr("fake-test-secret-not-real"))


async def open_fake(fake: FakeBinance, data_dir: Path) -> tuple[Harness, BinanceVenue]:
    """The live ccxt path (``BinanceVenue``, fake credentials) pointed at ``fake``, on its
    ETH pair, with a trading journal in ``data_dir``. The caller closes the client."""
    path = data_dir / "journal.sqlite"
    harness_box: list[Harness] = []
    fake.requests = WriteAheadRequests(lambda: harness_box[0].journal)
    client = BinanceVenue(credentials(), VenueContext(cache_dir=data_dir / "cache",
                                                      sleep=no_sleep, base_url=fake.url))
    client.exchange.timeout = 300  # ms: a timed-out request fails fast
    pair = next(p for p in carry_pairs(await client.load_markets()) if p.base == "ETH")
    venue = Watched(client, lambda: harness_box[0].journal)
    harness = Harness("fake", Journal.open(path, trading=True), path, venue, pair, ETH_PRICE,
                      fake=fake, spot_start=fake.spot_balances.get("ETH", Decimal(0)))
    harness_box.append(harness)
    return harness, client


class _HarnessMarkets:
    """What recovery asks of a trading session (``recovery.Markets``), for one harness: its
    pair, its price and executions on the harness's journal and venue."""

    def __init__(self, harness) -> None:
        self.harness = harness

    async def pair(self, venue_id: str, base: str):
        return self.harness.pair

    async def reference_price(self, pair) -> Decimal:
        return self.harness.price

    def tolerance(self, pair) -> Decimal:
        return self.harness.execution().tolerance

    def execution(self, pair, price) -> TwoLegExecution:
        return self.harness.execution()
