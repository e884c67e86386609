"""``perpcarry run``: the carry strategy as a service (see docs/run.md)."""
