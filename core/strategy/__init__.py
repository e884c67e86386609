"""The carry strategy's rules, shared by ``backtest``, ``sweep`` and ``run``."""
