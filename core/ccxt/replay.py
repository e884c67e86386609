"""Replaying recorded HTTP sessions (vcrpy cassettes): ``--offline`` and the test kit."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from vcr import VCR
from vcr.cassette import Cassette
from vcr.persisters.filesystem import FilesystemPersister

# Signing parameters differ on every request; a recording stores them filtered out.
VOLATILE_QUERY = frozenset({"signature", "timestamp", "recvWindow"})
SECRET_HEADERS = ("X-MBX-APIKEY", "X-BAPI-API-KEY", "X-BAPI-SIGN", "X-BAPI-TIMESTAMP",
                  "OK-ACCESS-KEY", "OK-ACCESS-SIGN", "OK-ACCESS-PASSPHRASE",
                  "OK-ACCESS-TIMESTAMP", "cookie", "authorization")


def _canonical(request) -> tuple:
    """What identifies a request in a recording: method, scheme, host, port, path, the query
    as a set, and the body (JSON compared parsed, so key order does not matter; a GET's body
    is None on both sides). Computed once per request object: vcrpy compares every live
    request with every recorded one, and with its stock matchers that dominated a replay."""
    key = getattr(request, "_perpcarry_key", None)
    if key is None:
        body = request.body
        if body:
            with suppress(ValueError, TypeError):
                body = json.dumps(json.loads(body), sort_keys=True)
        query = tuple(sorted(p for p in request.query if p[0] not in VOLATILE_QUERY))
        key = (request.method, request.scheme, request.host, request.port, request.path,
               query, body or None)
        request._perpcarry_key = key
    return key


def _same_request(r1, r2) -> None:
    assert _canonical(r1) == _canonical(r2)


def cassette_vcr(record_mode: str = "none", **overrides) -> VCR:
    """The one vcrpy configuration perpcarry uses: JSON cassettes, replayed, never written,
    unless ``record_mode`` asks to record (see cassettes/README.md); then credentials and
    signing parameters are filtered out of what is written."""
    options = {
        "serializer": "json",
        "record_mode": record_mode,
        "match_on": ("perpcarry",),
        "decode_compressed_response": True,
    }
    if record_mode != "none":
        options["filter_headers"] = list(SECRET_HEADERS)
        options["filter_query_parameters"] = sorted(VOLATILE_QUERY)
    options.update(overrides)
    recorder = VCR(**options)
    recorder.register_matcher("perpcarry", _same_request)
    return recorder


class _ReplayCassette(Cassette):
    """A cassette that only replays (record mode "none", repeats allowed). vcrpy's cassette
    compares a request with every recorded one, twice per request, and deep-copies every
    request and response on the way; nothing is recorded here, so this one copies and
    filters nothing and looks each request up by its canonical key."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._by_key: dict[tuple, list[int]] = {}

    def append(self, request, response) -> None:
        self._by_key.setdefault(_canonical(request), []).append(len(self.data))
        self.data.append((request, response))

    def _responses(self, request):
        for index in self._by_key.get(_canonical(request), ()):
            yield index, self.data[index][1]

    def can_play_response_for(self, request) -> bool:
        return request in self


class _MergedPersister:
    """Loads several cassettes as one, so venues replay concurrently in one event loop
    (vcrpy patches HTTP globally: only one cassette can be active at a time)."""

    SEPARATOR = "\n"

    @classmethod
    def load_cassette(cls, cassette_path, serializer):
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
def replaying(*cassettes: Path) -> Iterator[Cassette]:
    """Serve every HTTP request from the cassettes; a request none of them holds fails.
    Yields the (merged) cassette: ``play_count`` is the number of requests it answered."""
    for cassette in cassettes:
        if not cassette.is_file():
            raise FileNotFoundError(f"cassette not found: {cassette}")
    recorder = cassette_vcr()
    recorder.register_persister(_MergedPersister)
    joined = _MergedPersister.SEPARATOR.join(str(c) for c in cassettes)
    config = recorder.get_merged_config(path=joined, allow_playback_repeats=True)
    with _ReplayCassette.use(**config) as cassette:
        yield cassette
