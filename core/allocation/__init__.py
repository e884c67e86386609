"""Splitting capital across venues and pairs under caps: the LP, rounding to lot sizes."""
