"""Event time for the triggers stage: watermarks, lateness, and the rules that decide a delayed trigger.

    records ─▶ Watermarks.observe(partition, occurred_at)     the latest event time seen per partition
    batch ─▶ Watermarks.drained(partition, at)                 the batch emptied the partition: nothing
                                                              appended before ``at`` is still to come
    idle poll ─▶ Watermarks.caught_up()                       every partition is drained: the clock is the mark
    watermark() = min over partitions (an idle one counts as the clock), never ahead of the clock

A delayed trigger at event time ``t`` waits until ``fire_at = t + delay``; the stage holds it until the
watermark passes ``fire_at + allowed_lateness``, so every event that happened before ``fire_at`` and
arrived no later than the allowed lateness has been seen. Then it fires unless

- a cancelling event happened in ``[t, fire_at)`` (:func:`cancels`): an order placed while the cart waited;
  an order placed *before* the cart update does not cancel it (the customer started a new cart);
- a later trigger with the same hold-until key happened in ``(t, fire_at)`` (:func:`supersedes`): that one
  resets the wait, and its own timer sends the one message, a delay after the last change.

These rules read only event times, so the arrival order does not change what is sent: the stage applies
them in SQL (``store/timers.py``, ``store/events.py``) and ``tests/test_triggers_eventtime.py`` holds an
in-memory model built from these functions to an oracle that reads the stream in event-time order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

__all__ = ["Watermarks", "cancels", "is_due", "is_too_late", "supersedes"]


def cancels(trigger_at: datetime, fire_at: datetime, cancel_at: datetime) -> bool:
    """Whether a cancelling event at ``cancel_at`` cancels the trigger at ``trigger_at`` due at ``fire_at``."""
    return trigger_at <= cancel_at < fire_at


def supersedes(trigger: tuple[datetime, uuid.UUID], fire_at: datetime, other: tuple[datetime, uuid.UUID]) -> bool:
    """Whether ``other`` (event time, event id), a trigger with the same hold-until key, resets the wait of
    ``trigger``: it happened after it (event id breaks a tie) and before its fire time."""
    return trigger < other and other[0] < fire_at


def is_due(fire_at: datetime, watermark: datetime, lateness: timedelta) -> bool:
    """A timer fires once the watermark has passed its fire time plus the allowed lateness."""
    return fire_at + lateness <= watermark


def is_too_late(fire_at: datetime, watermark: datetime, lateness: timedelta) -> bool:
    """A trigger whose timer would already have fired when it arrived: it is dropped as ``too_late``
    (sending it now would be hours after the moment it was meant for)."""
    return fire_at + lateness < watermark


class Watermarks:
    """The latest event time seen per partition of the stage's input, and the stage's watermark.

    A partition that has sent nothing for ``idle_seconds`` counts as caught up (its watermark is the clock):
    otherwise a quiet partition would hold every timer forever. The watermark never runs ahead of the clock,
    so a device with a clock in the future cannot fire timers early.
    """

    def __init__(self, clock: Callable[[], datetime], *, idle_seconds: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.idle_seconds = idle_seconds
        self.monotonic = monotonic
        self._seen: dict[int, tuple[datetime, float]] = {}
        """Per partition: the latest event time since it was last drained, and when (monotonic) it came."""
        self._drained: dict[int, datetime] = {}
        """Per partition: when (the stage's clock) a batch last emptied it."""

    def observe(self, partition: int, occurred_at: datetime) -> datetime:
        """Count an event of ``partition``; the partition's latest event time, this one's included.

        This is the mark an event is judged by (``too_late``): event time only. A drain does not raise it,
        so an event that was held up before it reached the partition (a backlog upstream) is judged by the
        stream it came in, not by the clock."""
        previous = self._seen.get(partition)
        latest = occurred_at if previous is None or occurred_at > previous[0] else previous[0]
        self._seen[partition] = (latest, self.monotonic())
        return latest

    def drained(self, partition: int, at: datetime) -> None:
        """A batch emptied ``partition``: every record appended to it before ``at`` (the moment the broker
        said so, on the stage's clock) has been observed. Until more events come the partition is at the
        clock, as on an empty poll; once they do, its watermark is at least ``at``."""
        self._seen.pop(partition, None)
        previous = self._drained.get(partition)
        if previous is None or at > previous:
            self._drained[partition] = at

    def of(self, partition: int) -> datetime:
        """The watermark of one partition (the clock when it is idle or unknown)."""
        now = self.clock()
        seen = self._seen.get(partition)
        if seen is None or self.monotonic() - seen[1] >= self.idle_seconds:
            return now
        return min(max(seen[0], self._drained.get(partition, seen[0])), now)

    def caught_up(self) -> None:
        """A poll returned nothing: every partition is drained, so each is at the clock."""
        self._seen.clear()
        self._drained.clear()

    def watermark(self) -> datetime:
        """The lowest partition watermark: timers due before it have seen every event that could cancel them."""
        now = self.clock()
        marks = [self.of(p) for p in self._seen]
        return min([now, *marks])
