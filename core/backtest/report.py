"""Statistics of a simulation: returns, risk, costs, activity, contributions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from perpcarry.money.yields import DAYS_PER_YEAR, HOURS_PER_DAY
from perpcarry.strategy.rules import rule_of

if TYPE_CHECKING:
    from perpcarry.backtest.engine import Simulation
    from perpcarry.backtest.run import BacktestSettings


def daily_equity(sim: Simulation) -> np.ndarray:
    """Equity at the last grid time of each UTC day, starting from the capital."""
    day = np.floor(sim.panel.hours / HOURS_PER_DAY).astype(np.int64)
    last_of_day = np.flatnonzero(np.append(day[1:] != day[:-1], True))
    return np.concatenate([[sim.capital], sim.equity[last_of_day]])


def max_drawdown(equity: np.ndarray) -> float:
    peak = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peak)) if equity.size else 0.0


def _contributions(sim: Simulation, labels: tuple[str, ...]) -> dict[str, dict[str, float]]:
    labels_arr = np.array(labels)
    out = {}
    held = sim.quantity > 0
    span = np.diff(sim.panel.hours, prepend=sim.panel.hours[0])
    for label in sorted(set(labels)):
        cols = labels_arr == label
        funding = float(sim.funding[:, cols].sum())
        fees = float(sim.fees[:, cols].sum())
        spread = float(sim.spread[:, cols].sum())
        marking = float(sim.marking[:, cols].sum())
        lost = float(sim.lost[:, cols].sum())
        if not (held[:, cols].any() or fees):
            continue
        out[label] = {
            # Fees and spread of every trade, the margin model's included; margin lost to
            # liquidations on its own.
            "funding_income": funding, "fees_paid": fees, "spread_paid": spread,
            "margin_lost": lost, "basis_pnl": marking,
            "net_pnl": funding + marking - fees - spread - lost,
            "entries": int(sim.entries[:, cols].sum()),
            "position_days": float((held[:, cols] * span[:, None]).sum() / HOURS_PER_DAY),
        }
    return out


def _exits_by_rule(sim: Simulation) -> dict[str, int]:
    from perpcarry.backtest.engine import LIQUIDATED, RULE_TRADE

    counts: dict[str, int] = {}
    for leaving, kind, why in zip(sim.trade_exit.tolist(), sim.trade_kind.tolist(),
                                  sim.trade_reason, strict=True):
        if leaving:
            rule = rule_of(why) if kind == RULE_TRADE else \
                "liquidation" if kind == LIQUIDATED else "margin_rebalance"
            counts[rule] = counts.get(rule, 0) + 1
    return dict(sorted(counts.items()))


def _margin(sim: Simulation) -> dict:
    """Top-ups (transfers from free cash, rebalances and their cost) and liquidations."""
    from perpcarry.backtest.engine import LIQUIDATED, TOPUP_TRADE
    from perpcarry.backtest.margin import LIQUIDATION, REBALANCE

    events, panel = sim.margin_events, sim.panel
    topup, liquidated = sim.trade_kind == TOPUP_TRADE, sim.trade_kind == LIQUIDATED
    sold: dict[str, float] = {}
    for e in events:
        if e.kind == REBALANCE:
            sold[panel.bases[e.series]] = sold.get(panel.bases[e.series], 0.0) + float(e.sold)
    first = [e.row for e in events if e.kind != LIQUIDATION]
    return {
        "topups": sum(e.kind != LIQUIDATION for e in events),
        "first_topup": str(panel.times[min(first)].astype("datetime64[s]")) + "Z"
        if first else None,
        "transfers": int(sum(e.transferred > 0 for e in events)),
        "transferred": float(sum(e.transferred for e in events)),
        "rebalances": sum(e.kind == REBALANCE for e in events),
        "rebalanced_quantity": sold,             # base units of spot sold, per asset
        "rebalanced_notional": float(sim.trade_notional[topup].sum()),
        "rebalance_cost": float(sim.trade_fee[topup].sum() + sim.trade_spread[topup].sum()),
        "liquidations": sum(e.kind == LIQUIDATION for e in events),
        "liquidation_loss": float(sim.trade_fee[liquidated].sum()
                                  + sim.trade_spread[liquidated].sum()
                                  + sim.trade_lost.sum()),
    }


def summarise(sim: Simulation, settings: BacktestSettings, *, notes=(), fee_sources=None) -> dict:
    """Everything ``perpcarry backtest`` prints, as plain data (``--json``)."""
    panel, capital = sim.panel, sim.capital
    hours = panel.hours
    days = max((hours[-1] - hours[0]) / HOURS_PER_DAY, 1e-9)
    final = float(sim.equity[-1])
    total_return = final / capital - 1.0
    daily = daily_equity(sim)
    returns = daily[1:] / daily[:-1] - 1.0
    vol = float(np.std(returns, ddof=1) * np.sqrt(DAYS_PER_YEAR)) if returns.size > 1 else 0.0
    mean_annual = float(np.mean(returns) * DAYS_PER_YEAR) if returns.size else 0.0
    span = np.diff(hours, prepend=hours[0])
    in_market = (sim.quantity > 0).any(axis=1)
    traded = float(sim.traded.sum())
    from perpcarry.backtest.engine import RULE_TRADE

    rules_traded = sim.trade_kind == RULE_TRADE
    return {
        "start": str(panel.times[0].astype("datetime64[s]")) + "Z",
        "end": str(panel.times[-1].astype("datetime64[s]")) + "Z",
        "days": days,
        "capital": capital,
        "final_equity": final,
        "total_return": total_return,
        # Simple annualisation, like funding APRs; CAGR compounds.
        "apr": total_return * DAYS_PER_YEAR / days,
        "cagr": (final / capital) ** (DAYS_PER_YEAR / days) - 1.0 if final > 0 else -1.0,
        "annual_volatility": vol,
        "sharpe": mean_annual / vol if vol > 0 else None,
        "max_drawdown": max_drawdown(np.concatenate([[capital], sim.equity])),
        "funding_income": float(sim.funding.sum()),
        # The rules' trades; the margin model's costs are under "margin".
        "fees_paid": float(sim.trade_fee[rules_traded].sum()),
        "spread_paid": float(sim.trade_spread[rules_traded].sum()),
        "basis_pnl": float(sim.marking.sum()),
        "traded_notional": traded,
        "turnover": traded / capital,
        "entries": int(sim.entries.sum()),
        "exits": int(sim.exits.sum()),
        # Which rule closed each position (docs/strategy.md).
        "exits_by_rule": _exits_by_rule(sim),
        "margin": _margin(sim),
        "time_in_market": float((span * in_market).sum() / max(span.sum(), 1e-9)),
        "rebalances": int(panel.rebalance.size),
        "allocator_runs": sim.allocator_runs,
        "settlements": panel.events,
        "series": len(panel.symbols),
        "cadence_hours": panel.cadence_hours,
        "settings": settings.model_dump(mode="json"),
        "fee_sources": fee_sources or {},
        "per_venue": _contributions(sim, panel.venues),
        "per_asset": _contributions(sim, panel.bases),
        "notes": list(notes),
    }
