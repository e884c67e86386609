"""Websocket market data with REST as the truth: :class:`perpcarry.streams.hub.StreamHub`
(one per venue), the limits it keeps, and its consumers (docs/streams.md)."""
