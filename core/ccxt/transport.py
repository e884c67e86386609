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
    """Point every ``https://host/path`` at ``{base_url}/host/path``."""
    if isinstance(urls, dict):
        return {k: rebase(v, base_url) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith("https://"):
        return f"{base_url.rstrip('/')}/{urls.removeprefix('https://')}"
    return urls


def unrebase(url: str, base_url: str) -> str:
    """The venue's own ``https://host/path`` of a URL :func:`rebase` pointed elsewhere."""
    prefix = base_url.rstrip("/") + "/"
    return "https://" + url.removeprefix(prefix) if url.startswith(prefix) else url
