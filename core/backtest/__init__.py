"""Backtesting carry strategies on funding history."""
