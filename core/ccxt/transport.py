"""How a ccxt client reaches its venue: one TLS context per process, and every REST host
rebased onto another address (a local replay, a fake exchange, a relay)."""

from __future__ import annotations

import functools
import ssl
from typing import Any


@functools.cache
def tls_context(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


def rebase(urls: Any, base_url: str) -> Any:
    """Point every ``https://host/path`` at ``{base_url}/host/path``, and every websocket
    ``wss://host/path`` at the same address over ``ws://`` (``wss://`` when ``base_url`` is
    https): one local server answers both."""
    if isinstance(urls, dict):
        return {k: rebase(v, base_url) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith("https://"):
        return f"{base_url.rstrip('/')}/{urls.removeprefix('https://')}"
    if isinstance(urls, str) and urls.startswith("wss://"):
        ws_base = base_url.rstrip("/").replace("http", "ws", 1)
        return f"{ws_base}/{urls.removeprefix('wss://')}"
    return urls


def venue_url(url: str, base_url: str) -> str:
    """The venue's own URL of a rebased one: ``{base_url}/host/path`` back to
    ``https://host/path`` (ccxt picks some venues' error tables by the URL's host)."""
    prefix = f"{base_url.rstrip('/')}/"
    return f"https://{url.removeprefix(prefix)}" if base_url and url.startswith(prefix) else url
