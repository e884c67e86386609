"""A venue's ccxt.pro client, built from its REST client, and what the hub reads of its
websocket connections."""

from __future__ import annotations

import contextlib
from typing import Any


async def drop_connections(exchange: Any) -> None:
    """Close the feed's websocket connections so the next watch dials and subscribes anew
    (ccxt.pro keeps a silent connection open, and a watch on it never resubscribes)."""
    for url, client in list((getattr(exchange, "clients", None) or {}).items()):
        with contextlib.suppress(Exception):
            await client.close()
        exchange.clients.pop(url, None)


def new_connection(exchange: Any) -> bool:
    """Whether ccxt.pro opened a connection since the last look (each one is marked)."""
    new = False
    for client in (getattr(exchange, "clients", None) or {}).values():
        if not getattr(client, "perpcarry_seen", False):
            client.perpcarry_seen = True
            new = True
    return new


def pro_exchange(venue: Any, *, credentials: bool = False) -> Any:
    """A ccxt.pro client for ``venue`` (a ``CcxtVenue`` whose markets are loaded): the same
    class, options, sandbox or demo environment and ``base_url`` as its REST client, and
    the REST client's markets (ccxt.pro never loads them itself). With ``credentials``
    (account feeds) it gets the venue's keys, read from their ``SecretStr`` here and nowhere
    logged."""
    import ccxt.pro as ccxt_pro

    from perpcarry.ccxt.transport import rebase

    options = {"fetchMarkets": {"types": list(venue.market_types)}, **venue.ccxt_options}
    params: dict[str, Any] = {"enableRateLimit": False, "options": options}
    if credentials:
        for field_name, ccxt_key in venue.credential_keys.items():
            params[ccxt_key] = getattr(venue.config, field_name).get_secret_value()
    exchange = getattr(ccxt_pro, venue.ccxt_id)(params)
    if venue.exchange.options.get("enableDemoTrading"):
        # The REST client trades on the venue's demo environment (a plugin's reading of
        # ``sandbox = true``): its streams are the demo ones too.
        exchange.enable_demo_trading(True)
    elif venue.config.sandbox:
        exchange.set_sandbox_mode(True)
    base_url = venue.config.base_url or venue.context.base_url
    if base_url:
        exchange.urls["api"] = rebase(exchange.urls["api"], base_url)
    exchange.set_markets(list(venue.raw_markets.values()))
    return exchange


def connected(exchange: Any) -> bool:
    """Whether ccxt.pro holds an open connection (it closes one whose keep-alive failed)."""
    for client in (getattr(exchange, "clients", None) or {}).values():
        connection = getattr(client, "connection", None)
        if connection is not None and not getattr(connection, "closed", True):
            return True
    return False
