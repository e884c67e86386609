"""Invariants of the money math (hypothesis) and the estimators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpcarry import yields
from perpcarry.estimators import settlement_estimates

rates = st.fractions(min_value=Fraction(-3, 100), max_value=Fraction(3, 100), max_denominator=10**8)
intervals = st.sampled_from([1, 2, 4, 8])
fees = st.floats(min_value=0, max_value=0.005, allow_nan=False)
basis_values = st.floats(min_value=-0.02, max_value=0.02, allow_nan=False)
hourly = st.floats(min_value=1e-7, max_value=1e-3, allow_nan=False)
horizons = st.floats(min_value=0.5, max_value=365, allow_nan=False)


@given(rates, intervals)
def test_apr_scales_exactly_with_the_interval(rate, interval):
    assert yields.funding_apr(rate, interval) * interval == yields.funding_apr(rate, 1)
    assert yields.funding_apr(rate, interval) == rate * Fraction(24, interval) * 365


def test_apr_of_one_basis_point():
    assert yields.funding_apr(Fraction(1, 10_000), 8) == Fraction(1095, 10_000)  # 10.95 %
    assert yields.funding_apr(Fraction(1, 10_000), 1) == Fraction(8760, 10_000)


@given(fees, fees, fees, basis_values, hourly, horizons)
def test_a_fee_increase_never_raises_net_apr(spot_fee, perp_fee, extra, entry_basis, expected,
                                             horizon):
    apr = yields.apr_from_hourly(expected)
    cheap = yields.net_apr(apr, entry_basis, yields.round_trip_cost(spot_fee, perp_fee), horizon)
    dear_spot = yields.net_apr(apr, entry_basis,
                               yields.round_trip_cost(spot_fee + extra, perp_fee), horizon)
    dear_perp = yields.net_apr(apr, entry_basis,
                               yields.round_trip_cost(spot_fee, perp_fee + extra), horizon)
    assert dear_spot <= cheap and dear_perp <= cheap


@given(fees, fees, basis_values, hourly, horizons)
def test_break_even_and_net_apr_agree_in_sign(spot_fee, perp_fee, entry_basis, expected, horizon):
    cost = yields.round_trip_cost(spot_fee, perp_fee)
    net = yields.net_apr(yields.apr_from_hourly(expected), entry_basis, cost, horizon)
    break_even = yields.break_even_hours(expected, entry_basis, cost)
    if abs(net) > 1e-9:  # away from the exact tie
        assert (net > 0) == (break_even < horizon * 24)


def test_break_even_is_infinite_without_positive_funding():
    assert yields.break_even_hours(0.0, 0.0, 0.003) == float("inf")
    assert yields.break_even_hours(-1e-5, 0.0, 0.003) == float("inf")


def _history(key: str, interval_h: int, n: int, rate_of):
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    return [(key, t0 + timedelta(hours=interval_h * i), rate_of(i)) for i in range(n)]


@pytest.mark.parametrize("interval_h", [1, 4, 8])
def test_mean_estimator_is_funding_paid_over_the_window(interval_h):
    rows = _history("x", interval_h, 400, lambda i: 0.0001 * (1 + i % 5))
    frame = pl.DataFrame(rows, schema=["key", "time", "rate"], orient="row")
    out = settlement_estimates(frame, window_hours=168, halflife_hours=48)
    last = out.row(-1, named=True)
    in_window = [r for _, t, r in rows if t > last["time"] - timedelta(hours=168)]
    assert len(in_window) == 168 // interval_h
    assert last["hourly_mean"] == pytest.approx(sum(in_window) / 168, rel=1e-12)


def test_mean_estimator_refuses_a_short_history():
    frame = pl.DataFrame(_history("x", 8, 20, lambda i: 0.0001), schema=["key", "time", "rate"],
                         orient="row")
    out = settlement_estimates(frame, window_hours=168, halflife_hours=48)
    assert out["hourly_mean"].null_count() == 20  # 20 settlements span 152h < 168h


def test_ewma_weighs_time_not_settlements():
    hourly_rows = _history("h", 1, 24 * 20, lambda i: 0.00001)
    eight_rows = _history("e", 8, 3 * 20, lambda i: 0.00008)
    frame = pl.DataFrame(hourly_rows + eight_rows, schema=["key", "time", "rate"], orient="row")
    out = settlement_estimates(frame, window_hours=168, halflife_hours=48)
    last = out.group_by("key").agg(pl.col("hourly_ewma").last())
    values = dict(last.iter_rows())
    assert values["h"] == pytest.approx(0.00001) and values["e"] == pytest.approx(0.00001)
