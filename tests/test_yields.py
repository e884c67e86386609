"""Invariants of the money math (hypothesis) and the estimators."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from fractions import Fraction

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from perpcarry.money import yields
from perpcarry.money.estimators import expected_hourly, latest_estimates

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


def _history(interval_h: int, n: int, rate_of) -> list[tuple[int, float]]:
    t0 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
    return [(t0 + i * interval_h * 3_600_000_000, rate_of(i)) for i in range(n)]


@pytest.mark.parametrize("interval_h", [1, 4, 8])
def test_mean_estimator_is_funding_paid_over_the_window(interval_h):
    rows = _history(interval_h, 400, lambda i: 0.0001 * (1 + i % 5))
    mean, _ = latest_estimates({"x": rows}, window_hours=168, halflife_hours=48)["x"]
    last_time = rows[-1][0]
    in_window = [r for t, r in rows if t > last_time - 168 * 3_600_000_000]
    assert len(in_window) == 168 // interval_h
    assert mean == pytest.approx(sum(in_window) / 168, rel=1e-12)


def test_mean_estimator_refuses_a_short_history():
    # 20 settlements at 8h span 152h < 168h: the window is not covered
    mean, ewma = latest_estimates({"x": _history(8, 20, lambda i: 0.0001)}, window_hours=168,
                                  halflife_hours=48)["x"]
    assert math.isnan(mean) and ewma == pytest.approx(0.0001 / 8)
    covered, _ = latest_estimates({"x": _history(8, 21, lambda i: 0.0001)}, window_hours=168,
                                  halflife_hours=48)["x"]
    assert covered == pytest.approx(0.0001 / 8)


def test_ewma_weighs_time_not_settlements():
    estimates = latest_estimates(
        {"hourly": _history(1, 24 * 20, lambda i: 0.00001),
         "eight": _history(8, 3 * 20, lambda i: 0.00008)},
        window_hours=168, halflife_hours=48)
    assert estimates["hourly"][1] == pytest.approx(0.00001)
    assert estimates["eight"][1] == pytest.approx(0.00001)


def test_estimates_match_the_independent_long_table_version():
    from reference_estimators import reference_settlement_estimates

    rows = _history(4, 300, lambda i: 0.0001 * ((i * 7) % 11 - 3))
    frame = pl.DataFrame(
        [("x", datetime.fromtimestamp(t / 1e6, UTC), r) for t, r in rows],
        schema=["key", "time", "rate"], orient="row")
    reference = reference_settlement_estimates(frame, window_hours=72, halflife_hours=30)
    mean, ewma = latest_estimates({"x": rows}, window_hours=72, halflife_hours=30)["x"]
    assert mean == pytest.approx(reference["hourly_mean"][-1], rel=1e-12)
    assert ewma == pytest.approx(reference["hourly_ewma"][-1], rel=1e-12)


@pytest.mark.parametrize(("estimator", "expected"), [
    ("current", 3.0), ("mean", 2.0), ("ewma", 1.0), ("conservative", 1.0)])
def test_expected_hourly_picks_the_estimator(estimator, expected):
    assert expected_hourly(3.0, 2.0, 1.0, estimator) == expected


def test_conservative_is_unavailable_when_any_estimate_is():
    assert math.isnan(expected_hourly(3.0, math.nan, 1.0, "conservative"))
