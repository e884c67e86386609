"""The scan: gather every enabled venue's market data and rank carry yields."""
