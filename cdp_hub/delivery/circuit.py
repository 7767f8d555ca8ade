"""A circuit breaker per channel instance: a provider that hangs or fails is not hammered by every message.

    closed ── ``failures`` transient failures in a row ──▶ open ── ``reset`` seconds ──▶ half-open
      ▲                                                     │ sends fail at once            │ one trial send
      └──────────────── the trial succeeds ─────────────────┴─── the trial fails ─▶ open ◀──┘

A send refused by an open circuit raises :class:`CircuitOpen` (a ``RetriableError``): the delivery stage
treats it like the provider being down (fallback channel, else the batch waits and is retried), never as a
reason to drop the message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from cdp_hub.errors import RetriableError

__all__ = ["CircuitBreaker", "CircuitOpen"]

log = logging.getLogger(__name__)


class CircuitOpen(RetriableError):
    """The channel instance's circuit is open: the send was not tried."""


class CircuitBreaker:
    """The circuit of one channel instance. ``on_change(open)`` is told when it opens and closes."""

    def __init__(self, instance: str, *, failures: int = 5, reset: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.instance = instance
        self.threshold = max(1, failures)
        self.reset = reset
        self.clock = clock
        self.on_change = on_change
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False
        self._last_error = ""

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset else "open"

    def before_send(self) -> None:
        """Raise :class:`CircuitOpen` unless a send may go now (closed, or the one trial of a half-open
        circuit)."""
        if self.opened_at is None:
            return
        waited = self.clock() - self.opened_at
        if waited >= self.reset and not self._trial:
            self._trial = True
            return
        raise CircuitOpen(f"{self.instance}: circuit open after {self.failures} failures in a row "
                          f"({self._last_error}); not sending", retry_after=max(0.0, self.reset - waited))

    def succeeded(self) -> None:
        self._trial = False
        if self.opened_at is not None:
            log.warning("channel %s: circuit closed, the provider answers again", self.instance)
            if self.on_change is not None:
                self.on_change(False)
        self.failures = 0
        self.opened_at = None

    def failed(self, exc: BaseException) -> None:
        """A send failed transiently (timeout, 5xx, refused connection)."""
        self.failures += 1
        self._last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        trial, self._trial = self._trial, False
        if trial or (self.opened_at is None and self.failures >= self.threshold):
            if self.opened_at is None:
                # WARNING: the outage's one ERROR line comes from the stage when messages must wait for it
                # (a fallback channel may take them meanwhile).
                log.warning("channel %s: circuit open after %d failures in a row (%s); sends wait %.0fs, then "
                            "one trial", self.instance, self.failures, self._last_error, self.reset)
                if self.on_change is not None:
                    self.on_change(True)
            self.opened_at = self.clock()
