"""Replay market data speed: the paper venues over the bundled history, without the loop.

    python bench/replay_data.py [--start 2023-01-01] [--end 2024-07-01] [--notional 10000]

1. **Setup**: ``replay_venues`` (history index, each venue's snapshot markets, fresh paper
   accounts in a temporary data dir).
2. **Reads**: the funding snapshot of every venue at every step, from the indexed
   ``HistoryMarketData``, against a baseline answering the same question from the polars
   frame at each step (the newest row at or before ``now`` per symbol); per-step cost and
   the ratio.
3. **Driver**: one BTC and one ETH carry position per venue (spot buy + perp sell on the
   paper venues) opened at the first step; at every step, for every venue, the funding
   snapshot, positions and balances, as the run loop reads them; funding is credited by
   the paper venue at each settlement. Total and per-step time.
4. **Check**: funding each paper account credited, per symbol, against
   sum(-quantity x history rate x history mark) over the settlements after the open; the
   difference must be 0.

Target (issue 14): the 18 months replay in at most 60 s with the loop; this part (2 + 3)
in a small fraction of that (aim: under 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl


def _date(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def open_carries(handles, notional: Decimal) -> dict[tuple[str, str], Decimal]:
    """A BTC and an ETH carry of ``notional`` on every venue: perp short quantities."""
    from perpcarry.venues.orders import OrderRequest, Side, Wallet, floor_to_step
    from perpcarry.venues.protocol import carry_pairs

    shorts = {}
    for venue_id, handle in handles.items():
        venue = handle.orders
        quotes = (await handle.market_data.fetch_funding_snapshot()).quotes
        if venue.model.margin is not venue.model.spot:  # separate wallets: margin first
            await venue.transfer("USDT", 3 * notional, Wallet.SPOT, Wallet.FUTURES)
        for n, pair in enumerate(carry_pairs(await handle.market_data.load_markets())):
            mark = quotes[pair.perp.symbol].mark_price
            quantity = floor_to_step(pair.perp, floor_to_step(pair.spot, notional / mark))
            await venue.place_order(OrderRequest(pair.spot, Side.BUY, quantity, f"pcB{n}s0000"))
            await venue.place_order(OrderRequest(pair.perp, Side.SELL, quantity,
                                                 f"pcB{n}p0000"))
            shorts[(venue_id, pair.perp.symbol)] = quantity
    return shorts


def baseline_reads(history: pl.DataFrame, steps: list[datetime]) -> int:
    """The newest row at or before each step per (venue, symbol), from the frame."""
    found = 0
    for now in steps:
        rows = history.filter(pl.col("time") <= now).group_by("venue", "symbol").agg(
            pl.col("rate").last(), pl.col("mark_price").last(), pl.col("spot_price").last())
        found += rows.height
    return found


async def main(start: datetime, end: datetime, notional: Decimal) -> None:
    from perpcarry.backtest.history import load_bundled
    from perpcarry.config.loader import load_config
    from perpcarry.replay import replay_venues

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as scratch:
        os.environ["PERPCARRY_DATA_DIR"] = scratch
        config = load_config(None)
        history = load_bundled()
        began = time.perf_counter()
        clock, handles = await replay_venues(config, history, start, end, Path(scratch))
        setup = time.perf_counter() - began
        steps = list(clock.steps)
        venues = ", ".join(handles)
        print(f"setup: {setup:.2f} s ({len(steps)} steps, venues {venues})")
        try:
            await _reads(history, handles, steps)
            shorts = await open_carries(handles, notional)
            began, cpu = time.perf_counter(), time.process_time()
            for _ in clock.run():
                for handle in handles.values():
                    await handle.market_data.fetch_funding_snapshot()
                    await handle.orders.fetch_positions()
                    await handle.orders.fetch_balances()
            driven, cpu = time.perf_counter() - began, time.process_time() - cpu
            # CPU time as well: on a shared machine the wall time varies with the load.
            print(f"driver: {driven:.2f} s (cpu {cpu:.2f} s) for {len(steps)} steps x "
                  f"{len(handles)} venues ({len(shorts)} positions): "
                  f"{driven / len(steps) * 1e3:.3f} ms per step")
            await _check(history, handles, shorts, steps)
        finally:
            for handle in handles.values():
                await handle.orders.close()


async def _reads(history, handles, steps) -> None:
    from perpcarry.replay import HistoryMarketData, ReplayClock

    # Their own clock: the driver's starts at the first step afterwards.
    clock = ReplayClock(steps)
    readers = [HistoryMarketData(venue_id, history, await handle.market_data.load_markets(),
                                 clock.now) for venue_id, handle in handles.items()]
    began = time.perf_counter()
    for _ in clock.run():
        for reader in readers:
            await reader.fetch_funding_snapshot()
    indexed = time.perf_counter() - began
    window = history.filter(pl.col("venue").is_in(list(handles))
                            & pl.col("time").is_between(steps[0], steps[-1]))
    sample = steps[:: max(1, len(steps) // 100)]  # the baseline is slow: 1 % of the steps
    began = time.perf_counter()
    baseline_reads(window, sample)
    naive = (time.perf_counter() - began) / len(sample)
    per_step = indexed / len(steps)
    print(f"reads: {per_step * 1e6:.1f} us per step (all venues' funding snapshots), "
          f"frame baseline {naive * 1e6:.1f} us per step: {naive / per_step:.0f}x")


async def _check(history, handles, shorts, steps) -> None:
    first = steps[0]
    worst = Decimal(0)
    for (venue_id, symbol), quantity in shorts.items():
        payments = [p for p in await handles[venue_id].orders.fetch_funding_payments(first)
                    if p.symbol == symbol]
        credited = sum((p.amount for p in payments), Decimal(0))
        rows = history.filter((pl.col("venue") == venue_id) & (pl.col("symbol") == symbol)
                              & (pl.col("time") > first) & (pl.col("time") <= steps[-1]))
        expected = sum((quantity * Decimal(str(rate)) * Decimal(str(mark))
                        for rate, mark in rows.select("rate", "mark_price").iter_rows()),
                       Decimal(0))
        worst = max(worst, abs(credited - expected))
        print(f"  {venue_id:8} {symbol:14} short {quantity}: {len(payments):5} "
              f"settlements, funding {credited:12.2f} (history {expected:12.2f})")
    print(f"check: largest difference {worst}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=_date, default=_date("2023-01-01"))
    parser.add_argument("--end", type=_date, default=_date("2024-07-01"))
    parser.add_argument("--notional", type=Decimal, default=Decimal(10_000))
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.start, args.end, args.notional)))
