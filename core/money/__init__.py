"""The money math: fees, funding estimators and yields. Pure functions."""
