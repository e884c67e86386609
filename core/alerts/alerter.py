"""The alerter: turns the events ``[alerts]`` selects into messages on every channel.

:meth:`Alerter.submit` is called by the event bus on the event loop and returns at once:
the rate limiter decides, and an admitted alert is queued for a task that sends the alerts
in order, to every channel at once, each channel bounded by ``send_timeout_seconds``. A
channel that fails is logged once per rate-limit window, never raised into the caller:
trading does not wait on, or stop for, a notification. Each alert sent, and each window's
suppressed count, is appended to the journal (kind ``alert``) for the dashboard's alert
log. The loop calls :meth:`tick` every cycle so a window's "N more suppressed" notice goes
out when the window ends even if no further event arrives, and :meth:`aclose` on stop to
send what is left.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger

from perpcarry.alerts.channels import AlertChannel, apprise_channels
from perpcarry.alerts.format import alert_text, suppressed_text
from perpcarry.alerts.limits import RateLimiter, Window
from perpcarry.events import Event, EventKind

if TYPE_CHECKING:
    from perpcarry.config.settings import AlertsConfig
    from perpcarry.execution.journal import Journal
    from perpcarry.plugins.manager import Registry

JOURNAL_KIND = "alert"
# The journal flag holding the UTC date of the last daily summary, so a restart the same
# day does not send it again.
SUMMARY_FLAG = "alerts.daily_summary"


class Alerter:
    def __init__(self, config: AlertsConfig, channels: list[AlertChannel],
                 journal: Journal | None, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.channels = channels
        self.journal = journal
        self.clock = clock
        self.kinds = frozenset(config.kinds)
        self.limiter = RateLimiter(config.per_kind_limit, config.max_per_window,
                                   timedelta(minutes=config.window_minutes))
        # Channels whose failure was logged in the current window.
        self._failure_logged: set[str] = set()
        # Alerts go out one after another, in the order they were admitted.
        self._queue: deque[tuple[str, str, Event | None]] = deque()
        self._worker: asyncio.Task | None = None

    def submit(self, event: Event) -> None:
        """Send ``event`` if its kind alerts and the rate limits allow; returns at once.
        Called on the event loop."""
        if event.kind not in self.kinds or not self.channels:
            return
        now = self.clock()
        self.tick(now)
        if self.limiter.admit(event, now):
            title, body = alert_text(event)
            self._start(title, body, event)

    def tick(self, now: datetime | None = None) -> None:
        """Close the rate-limit window if it is over, sending its "N more suppressed"
        notice. Called by the loop each cycle."""
        closed = self.limiter.close_if_over(self.clock() if now is None else now)
        if closed is not None:
            self._window_closed(closed)

    def summary_due(self, now: datetime) -> bool:
        """Whether today's daily summary (at ``daily_summary_hour`` UTC) is yet to be
        sent."""
        now = now.astimezone(UTC)
        if now.hour < self.config.daily_summary_hour:
            return False
        return self.journal is None or self.journal.flag(SUMMARY_FLAG) != now.date().isoformat()

    async def drain(self) -> None:
        """Wait until every admitted alert has been sent (or has failed)."""
        while self._worker is not None and not self._worker.done():
            await self._worker

    async def aclose(self) -> None:
        """On stop: report what the open window held back, and wait for every send."""
        if self.limiter.current is not None:
            closed, self.limiter.current = self.limiter.current, None
            self._window_closed(closed)
        await self.drain()

    def _window_closed(self, window: Window) -> None:
        self._failure_logged.clear()
        if window.suppressed:
            title, body = suppressed_text(window.suppressed, window.start, window.end)
            self._record({"status": "suppressed", "suppressed": dict(window.suppressed),
                          "window_start": window.start.isoformat(),
                          "window_end": window.end.isoformat()})
            self._start(title, body, None)

    def _start(self, title: str, body: str, event: Event | None) -> None:
        self._queue.append((title, body, event))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        while self._queue:
            await self._send(*self._queue.popleft())

    async def _send(self, title: str, body: str, event: Event | None) -> None:
        results = await asyncio.gather(*(self._send_one(channel, title, body, event)
                                         for channel in self.channels))
        delivered = [c.name for c, ok in zip(self.channels, results, strict=True) if ok]
        failed = [c.name for c, ok in zip(self.channels, results, strict=True) if not ok]
        self._record({"status": "sent" if delivered else "failed", "title": title,
                      "kind": None if event is None else event.kind.value,
                      "event_time": None if event is None else event.time.isoformat(),
                      "delivered": delivered, "failed": failed})
        if event is not None and event.kind is EventKind.DAILY_SUMMARY and delivered \
                and self.journal is not None:
            self.journal.set_flag(SUMMARY_FLAG, event.time.astimezone(UTC).date().isoformat())

    async def _send_one(self, channel: AlertChannel, title: str, body: str,
                        event: Event | None) -> bool:
        try:
            await asyncio.wait_for(channel.send(title, body, event),
                                   self.config.send_timeout_seconds)
        except Exception as exc:  # whatever a channel raises; never into trading
            if channel.name not in self._failure_logged:
                self._failure_logged.add(channel.name)
                reason = (f"no answer within {self.config.send_timeout_seconds:g} s"
                          if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__)
                logger.warning("alert channel {}: not delivered: {} (further failures of "
                               "this channel are not logged until the rate-limit window "
                               "ends)", channel.name, reason)
            return False
        return True

    def _record(self, detail: dict[str, Any]) -> None:
        if self.journal is not None:
            self.journal.append_event(JOURNAL_KIND, detail)


def build_alerter(config: AlertsConfig, registry: Registry, journal: Journal | None,
                  clock: Callable[[], datetime]) -> Alerter:
    """The alerter for ``[alerts]``: its apprise URLs (checked; a bad one is a
    ``ConfigError``), then the channels plugins registered."""
    channels: list[AlertChannel] = [
        *apprise_channels([url.get_secret_value() for url in config.urls]),
        *(channel for channel, _ in registry.alert_channels.values())]
    return Alerter(config, channels, journal, clock)
