"""The money math of a cash-and-carry position: pure functions, no I/O.

Every function works on floats and on numpy arrays alike, so ``scan`` (one row at a time)
and ``backtest`` (whole arrays) run the same formulas. Rates are fractions per funding
interval; APRs are fractions per year (0.1 = 10 %); costs and basis are fractions of the
hedged notional.

Conventions for one hedged position (long spot, short perp, same base quantity):

- Funding APR = rate x (24 / interval_hours) x 365. Positive funding pays the short perp.
- Basis = (perp bid - spot ask) / spot ask: what entering at the touch locks in. It
  converges to zero at exit, so a positive basis is a gain. Crossing the spread at entry is
  already inside it.
- Round-trip cost = taker fees on both legs at entry and at exit, plus half the spread on
  both legs at exit (from today's books).
- Net APR over a horizon of H days = expected funding APR + (basis - cost) x 365 / H.
- Break-even hours = (cost - basis) / expected hourly funding: the holding time after which
  funding has paid for the round trip. Net APR at H is positive exactly when break-even
  comes before H (for positive expected funding).
"""

from __future__ import annotations

import numpy as np

# Integers, so exact inputs (Fraction, Decimal) stay exact.
HOURS_PER_DAY = 24
DAYS_PER_YEAR = 365
HOURS_PER_YEAR = HOURS_PER_DAY * DAYS_PER_YEAR


def funding_apr(rate, interval_hours):
    """Annualise a per-interval funding rate with its own interval."""
    return rate * HOURS_PER_DAY * DAYS_PER_YEAR / interval_hours


def hourly_rate(rate, interval_hours):
    return rate / interval_hours


def apr_from_hourly(hourly):
    return hourly * HOURS_PER_YEAR


def basis(perp_bid, spot_ask):
    """Executable entry basis: selling the perp at its bid against buying spot at its ask."""
    return (perp_bid - spot_ask) / spot_ask


def half_spread(bid, ask):
    """Half the quoted spread as a fraction of the mid price."""
    return (ask - bid) / (bid + ask)


def round_trip_cost(spot_taker, perp_taker, exit_half_spreads=0.0):
    """Taker fees on both legs in and out, plus the half spreads paid when leaving."""
    return 2 * (spot_taker + perp_taker) + exit_half_spreads


def net_apr(expected_apr, entry_basis, cost, horizon_days):
    """Expected net yield per year of holding for ``horizon_days``."""
    return expected_apr + (entry_basis - cost) * DAYS_PER_YEAR / horizon_days


def break_even_hours(expected_hourly, entry_basis, cost):
    """Hours until funding pays for the round trip net of basis; inf when funding does not."""
    expected_hourly = np.asarray(expected_hourly, dtype=float)
    owed = np.asarray(cost - entry_basis, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        hours = np.where(expected_hourly > 0, owed / expected_hourly, np.inf)
    return hours if hours.ndim else float(hours)


def conservative(*estimates):
    """The lowest of several hourly funding estimates; NaN when any is unavailable."""
    return np.minimum.reduce([np.asarray(e, dtype=float) for e in estimates])
