"""Replaying recorded HTTP sessions (vcrpy cassettes): ``--offline`` and the test kit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# "body" lets POST-body APIs (Hyperliquid's one /info endpoint) replay; a GET's body is None
# on both sides, so GET-only venues match exactly as before. JSON bodies (Content-Type
# application/json) are compared parsed, so key order does not matter.
MATCH_ON = ("method", "scheme", "host", "port", "path", "query", "body")


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


class _MergedPersister:
    """Loads several cassettes as one, so venues replay concurrently in one event loop
    (vcrpy patches HTTP globally: only one cassette can be active at a time)."""

    SEPARATOR = "\n"

    @classmethod
    def load_cassette(cls, cassette_path, serializer):
        from vcr.persisters.filesystem import FilesystemPersister

        requests, responses = [], []
        for path in str(cassette_path).split(cls.SEPARATOR):
            loaded_requests, loaded_responses = FilesystemPersister.load_cassette(path, serializer)
            requests.extend(loaded_requests)
            responses.extend(loaded_responses)
        return requests, responses

    @staticmethod
    def save_cassette(cassette_path, cassette_dict, serializer):
        raise RuntimeError("perpcarry replays cassettes; it never writes them")


@contextmanager
def replaying(*cassettes: Path) -> Iterator[None]:
    """Serve every HTTP request from the cassettes; a request none of them holds fails."""
    for cassette in cassettes:
        if not cassette.is_file():
            raise FileNotFoundError(f"cassette not found: {cassette}")
    recorder = cassette_vcr()
    recorder.register_persister(_MergedPersister)
    joined = _MergedPersister.SEPARATOR.join(str(c) for c in cassettes)
    with recorder.use_cassette(joined, allow_playback_repeats=True):
        yield
