"""Alerts: the events ``[alerts]`` selects, rate-limited, sent through apprise URLs and the
channels plugins register (see docs/alerts.md)."""
