"""Where alerts go: apprise URLs from ``[alerts] urls`` and channels plugins register.

An apprise URL carries its secret in the URL itself, often where a host would be
(``tgram://{bot_token}/{chat_id}``, ``ntfy://{topic}``, ``discord://{id}/{token}``), so a
URL is only ever shown as its scheme (``tgram://…``), and whatever apprise reports about a
failed send is stripped of every part of the URL before it is logged. Apprise is
synchronous: each send runs in a worker thread so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import quote, unquote, urlsplit

from perpcarry.domain.errors import ConfigError, PerpcarryError
from perpcarry.events import Event, Severity

if TYPE_CHECKING:
    import apprise


class AlertDeliveryError(PerpcarryError):
    """A channel could not deliver an alert; the message names the channel, never a
    secret."""


@runtime_checkable
class AlertChannel(Protocol):
    """A place alerts are sent. ``send`` raises (any exception) when it could not deliver;
    ``event`` is None for the rate limiter's "N more suppressed" notice."""

    name: str

    async def send(self, title: str, body: str, event: Event | None) -> None: ...


def redacted_url(url: str) -> str:
    """``url`` as it may be shown: its scheme only (``tgram://…``)."""
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://…" if sep and scheme.isascii() and scheme.isalnum() else "(not a URL)"


def strip_url_parts(text: str, url: str) -> str:
    """``text`` with every part of ``url`` (host, user, password, path segments, query
    values, fragment) replaced by "…", quoted or not, so no token survives."""
    parts = urlsplit(url)
    pieces = {parts.netloc, parts.hostname or "", parts.username or "", parts.password or "",
              parts.fragment, *parts.path.split("/"),
              *(value for pair in parts.query.split("&") for value in pair.split("="))}
    for piece in sorted(pieces, key=len, reverse=True):  # longest first: no half-left token
        for form in {piece, unquote(piece), quote(piece, safe="")}:
            if len(form) >= 3:
                text = text.replace(form, "…")
    return text


class _AppriseNotes(logging.Handler):
    """Collects apprise's warnings for the send running in the current thread, instead of
    letting Python's last-resort handler print them (with hosts that may be tokens) to
    stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        notes = getattr(self._local, "notes", None)
        if notes is not None:
            notes.append(record.getMessage())

    @contextmanager
    def collect(self) -> Iterator[list[str]]:
        self._local.notes = notes = []
        try:
            yield notes
        finally:
            self._local.notes = None


_NOTES = _AppriseNotes()
_SEVERITY_TYPE = {Severity.INFO: "info", Severity.WARNING: "warning",
                  Severity.CRITICAL: "failure"}


class AppriseChannel:
    """One apprise URL. Built by :func:`apprise_channels`, which checks the URL."""

    def __init__(self, name: str, url: str, service: apprise.NotifyBase) -> None:
        self.name = name
        self._url = url
        self._service = service

    def __repr__(self) -> str:
        return f"AppriseChannel({self.name})"

    async def send(self, title: str, body: str, event: Event | None) -> None:
        severity = Severity.WARNING if event is None else event.severity
        delivered, notes = await asyncio.to_thread(self._notify, title, body,
                                                   _SEVERITY_TYPE[severity])
        if not delivered:
            said = "; ".join(strip_url_parts(note, self._url) for note in notes)
            raise AlertDeliveryError(f"{said or 'apprise reported a failure'}")

    def _notify(self, title: str, body: str, notify_type: str) -> tuple[bool, list[str]]:
        with _NOTES.collect() as notes:
            delivered = bool(self._service.notify(title=title, body=body,
                                                  notify_type=notify_type))
        return delivered, notes


def apprise_channels(urls: list[str]) -> list[AppriseChannel]:
    """A channel per URL, in order. A URL apprise does not accept is a ``ConfigError``
    naming its position in ``[alerts] urls`` and its scheme."""
    import apprise

    logger = logging.getLogger("apprise")
    if _NOTES not in logger.handlers:
        logger.addHandler(_NOTES)
        logger.propagate = False  # its records are ours to report, redacted
    channels: list[AppriseChannel] = []
    for number, url in enumerate(urls, 1):
        shown = redacted_url(url)
        # The service itself, not an Apprise() around it, whose dispatch may send from a
        # pool thread: sent from our worker thread, its warnings reach the thread's notes.
        with _NOTES.collect():
            service = apprise.Apprise.instantiate(url)
        if service is None:
            raise ConfigError(f"[alerts] urls #{number} ({shown}): apprise does not accept "
                              "this URL (unknown service or malformed); see docs/alerts.md")
        taken = {channel.name for channel in channels}
        name = shown if shown not in taken else f"{shown} (#{number})"
        channels.append(AppriseChannel(name, url, service))
    return channels
