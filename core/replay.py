"""Replaying recorded HTTP sessions (vcrpy cassettes): ``--offline`` and the test kit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MATCH_ON = ("method", "scheme", "host", "port", "path", "query")


def cassette_vcr(**overrides):
    """The one vcrpy configuration perpcarry uses: JSON cassettes, never recording."""
    import vcr

    options = {
        "serializer": "json",
        "record_mode": "none",
        "match_on": MATCH_ON,
        "decode_compressed_response": True,
        "filter_headers": ["X-MBX-APIKEY", "X-BAPI-API-KEY", "X-BAPI-SIGN", "OK-ACCESS-KEY",
                           "OK-ACCESS-SIGN", "OK-ACCESS-PASSPHRASE", "OK-ACCESS-TIMESTAMP",
                           "X-BAPI-TIMESTAMP", "cookie", "authorization"],
        "filter_query_parameters": ["signature", "timestamp", "recvWindow"],
    }
    options.update(overrides)
    return vcr.VCR(**options)


@contextmanager
def replaying(cassette: Path) -> Iterator[None]:
    """Serve every HTTP request from ``cassette``; a request it does not hold fails."""
    if not cassette.is_file():
        raise FileNotFoundError(f"cassette not found: {cassette}")
    with cassette_vcr().use_cassette(str(cassette), allow_playback_repeats=True):
        yield
