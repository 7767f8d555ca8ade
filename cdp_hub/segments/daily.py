"""Date-based triggers: the birthday scan, and the scheduler that runs it at most once per interval.

    every SCAN_INTERVAL (triggers stage timer check, or `cdp-hub triggers run-daily`):
      profiles' time zones ─▶ today's date in each zone ─▶ birthdays to match ("MM-DD"; Feb 29 → Feb 28)
        ─▶ one SQL statement: live profiles whose golden birth_date falls on their local today
        ─▶ profile.birthday events on cdp.events (id: profile + local year) ─▶ the birthday scenario

A scan publishes a customer's birthday once (``scheduler_emitted`` remembers it, written after the publish),
and the event id is the same whenever it is built (UUIDv5 of the source record ``birthday:<profile>:<year>``):
running the scan twice a day sends nothing twice, and a crash between the publish and the record only
publishes the same event again, which the resolver stores once and delivery sends once. Scanning every half hour catches each time zone shortly after its midnight; the
scenario's quiet hours hold the message until the customer's morning.

The "last run" is in PostgreSQL (``scheduler_runs``), so a restarted daemon does not scan again early, and
a claim with a lease keeps two processes from scanning at once.
"""

from __future__ import annotations

import calendar
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.events import event_message
from cdp_hub.durations import DEFAULT_TIMEZONE, customer_zone
from cdp_hub.schema.events import Event
from cdp_hub.segments.engine import identity_of_profiles
from cdp_hub.store import ProfileRepository
from cdp_hub.store.jobs import JobRepository

if TYPE_CHECKING:
    from cdp_hub.pipeline.stage import StageContext

__all__ = ["BIRTHDAY_JOB", "SCAN_INTERVAL", "BirthdayScan", "BirthdayScheduler", "birthdays_on", "local_today"]

log = logging.getLogger(__name__)

SOURCE = "cdp-hub.scheduler"
BIRTHDAY_JOB = "birthday"
SCAN_INTERVAL = timedelta(minutes=30)
CLAIM_LEASE = timedelta(minutes=10)
PUBLISH_BATCH = 2000


def zone(name: str | None) -> ZoneInfo:
    """The customer's zone; a missing or unknown one is the default (Moscow), as for quiet hours."""
    return customer_zone(name, DEFAULT_TIMEZONE)


def local_today(now: datetime, timezone: str | None) -> date:
    return now.astimezone(zone(timezone)).date()


def birthdays_on(day: date) -> list[str]:
    """The ``MM-DD`` birth dates celebrated on ``day``: Feb 29 birthdays fall on Feb 28 in common years."""
    out = [f"{day.month:02d}-{day.day:02d}"]
    if day.month == 2 and day.day == 28 and not calendar.isleap(day.year):
        out.append("02-29")
    return out


@dataclass
class BirthdayScan:
    """What one scan found and published."""

    at: datetime
    found: int = 0
    published: int = 0
    skipped: int = 0  # profiles without an identity to put on the event


class BirthdayScheduler:
    """Finds today's birthdays and publishes ``profile.birthday``; :meth:`run_if_due` is the periodic entry."""

    def __init__(self, ctx: StageContext, *, jobs: JobRepository, profiles: ProfileRepository) -> None:
        self.ctx = ctx
        self.jobs = jobs
        self.profiles = profiles

    async def scan(self, now: datetime | None = None) -> BirthdayScan:
        """Publish a ``profile.birthday`` for every live profile whose local today is their birthday."""
        now = now or self.ctx.clock()
        result = BirthdayScan(at=now)
        zones = await self.profiles.birthday_time_zones()
        tz_col: list[str] = []
        md_col: list[str] = []
        year_col: list[str] = []
        for tz in zones:
            today = local_today(now, tz or None)
            for md in birthdays_on(today):
                tz_col.append(tz)
                md_col.append(md)
                year_col.append(str(today.year))
        if not tz_col:
            return result
        rows = await self.profiles.birthday_candidates(tz_col, md_col, year_col, BIRTHDAY_JOB)
        result.found = len(rows)
        topic = self.ctx.topics.events
        for start in range(0, len(rows), PUBLISH_BATCH):
            page = rows[start:start + PUBLISH_BATCH]
            identities = await identity_of_profiles(self.profiles, [r.profile_id for r in page])
            messages: list[OutgoingMessage] = []
            emitted: list[tuple[uuid.UUID, str]] = []
            for row in page:
                identity = identities.get(row.profile_id)
                if identity is None:
                    result.skipped += 1
                    continue
                try:
                    event = birthday_event(row.profile_id, row.birth_date, row.tz or None, identity, now)
                except ValueError:  # "1990-02-30": shaped like a date, but none
                    log.warning("profile %s: birth_date %r is not a date", row.profile_id, row.birth_date)
                    result.skipped += 1
                    continue
                messages.append(event_message(topic, event))
                emitted.append((row.profile_id, str(event.properties["year"])))
            if messages:
                await self.ctx.publish(messages)
                # Only once they are durable: a crash before this publishes the same events again.
                await self.jobs.mark_emitted(BIRTHDAY_JOB, emitted, now)
                self.ctx.metrics.events_ingested.labels(SOURCE, "profile.birthday").inc(len(messages))
                result.published += len(messages)
        return result

    async def run_if_due(self, *, interval: timedelta = SCAN_INTERVAL) -> BirthdayScan | None:
        """Scan when the last finished scan is older than ``interval`` and no other process holds the claim."""
        now = self.ctx.clock()
        if not await self.jobs.claim_run(BIRTHDAY_JOB, now, interval, CLAIM_LEASE):
            return None
        return await self.run(now)

    async def run(self, now: datetime | None = None) -> BirthdayScan:
        """Scan now and record the run as the last one (``cdp-hub triggers run-daily``)."""
        now = now or self.ctx.clock()
        result = await self.scan(now)
        # What was published in years before last is history: keep the table at about two years of rows.
        await self.jobs.forget_emitted_before(BIRTHDAY_JOB, str(now.year - 1))
        summary = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(result).items()}
        await self.jobs.record_run(BIRTHDAY_JOB, now, summary)
        log.info("birthday scan: %s", summary)
        return result


def birthday_event(profile_id: uuid.UUID, birth_date: str, timezone: str | None, identity: dict[str, str],
                   now: datetime) -> Event:
    """The ``profile.birthday`` of this year; it occurs at the customer's local midnight (deterministic)."""
    today = local_today(now, timezone)
    midnight = datetime.combine(today, time(0), tzinfo=zone(timezone)).astimezone(UTC)
    born = date.fromisoformat(birth_date)
    return Event.model_validate({
        "type": "profile.birthday",
        "source": SOURCE,
        "source_record_id": f"birthday:{profile_id}:{today.year}",
        "occurred_at": midnight,
        "received_at": midnight,
        "identities": [identity],
        "properties": {"birth_date": born.isoformat(), "year": today.year, "age": today.year - born.year},
        "profile_id": profile_id,
    })
