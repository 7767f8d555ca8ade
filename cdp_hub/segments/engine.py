"""Segment membership: batch recomputation in SQL, real-time checks of trait-only segments, and the
``segment.entered`` / ``segment.exited`` events both emit.

Batch (``cdp-hub segments recompute``), per segment, under an advisory lock::

    pending run of this segment? ── yes ─────────────────────────────────────┐ (resume: same run id)
        │ no                                                                 │
    segment_runs += run (pending) ; diff SQL ─▶ segment_changes (one statement)
        │                                                                    │
        ▼◀───────────────────────────────────────────────────────────────────┘
    publish segment.entered/exited to cdp.events (acks=all; event id = segment + run + profile + change)
        ▼
    one transaction: segment_members += entered, -= exited; run 'done'      ─▶ Redis set refreshed

A crash before the transaction leaves the run pending: the next recompute publishes the same events again
(same ids: the resolver stores an event id once and delivery dedupes its intents) and then applies it, so
an entered/exited event is never lost and never counted twice.

Real time (the triggers stage calls :meth:`SegmentEngine.on_profiles` for the profiles of each batch):
trait-only segments are evaluated on the Golden Record as the resolver left it; changes become the same
events (id from segment + its rules + profile + change + the profile's version), published with the
batch, and the membership rows are written only once they are durable (``StageOutput.on_durable``). A batch
recompute names the changes of a trait-only segment the same way (the diff stores each record's version),
so a recompute racing the stream emits the same event, not a second one.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.events import event_message
from cdp_hub.errors import ConfigurationError
from cdp_hub.hotstate import HotState
from cdp_hub.schema.events import Event
from cdp_hub.segments.model import Segment
from cdp_hub.store import ProfileRepository
from cdp_hub.store.segments import SegmentRepository, compile_segment

if TYPE_CHECKING:
    from cdp_hub.pipeline.stage import StageContext, StageOutput

__all__ = ["SOURCE", "RecomputeResult", "SegmentEngine", "identity_of_profiles"]

log = logging.getLogger(__name__)

SOURCE = "cdp-hub.segments"
PUBLISH_BATCH = 2000
# The identity a segment event carries: the strongest one the profile has (the same order as ingest keys).
IDENTITY_PRIORITY = ["crm_id", "ecom_customer_id", "erp_customer_id", "loyalty_card", "email", "phone",
                     "device_id", "push_token", "anonymous_id"]


async def identity_of_profiles(profiles: ProfileRepository,
                               profile_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, str]]:
    """One identity per profile (``{"kind": ..., "value": ...}``), for events the hub itself emits."""
    return await profiles.best_identities(profile_ids, IDENTITY_PRIORITY)


@dataclass
class RecomputeResult:
    """What one recompute did: the run, who entered and left, the member count after it."""

    segment_id: str
    run_id: uuid.UUID
    entered: int
    exited: int
    members: int
    resumed: bool
    skipped: int = 0  # changes whose profile has no identity to put on an event (membership still applied)


def segment_event(segment_id: str, change: str, profile_id: uuid.UUID, identity: Mapping[str, str],
                  occurred_at: datetime, record_id: str, *, reason: str) -> Event:
    """A ``segment.entered``/``segment.exited`` event; its id derives from ``record_id`` (deterministic)."""
    return Event.model_validate({
        "type": f"segment.{change}",
        "source": SOURCE,
        "source_record_id": record_id,
        "occurred_at": occurred_at,
        "received_at": occurred_at,
        "identities": [dict(identity)],
        "properties": {"segment": segment_id, "reason": reason},
        "profile_id": profile_id,
    })


def trait_change_id(segment: Segment, profile_id: uuid.UUID, change: str, version: int) -> str:
    """The source record id of a trait-only segment's change: segment, rules, profile, change, record version."""
    return f"{segment.id}:{segment.fingerprint}:{profile_id}:{change}:v{version}"


class SegmentEngine:
    """The segments of a deployment and the two ways their membership is kept."""

    def __init__(self, ctx: StageContext, *, repository: SegmentRepository, profiles: ProfileRepository,
                 hotstate: HotState, segments: Sequence[Segment]) -> None:
        self.ctx = ctx
        self.repository = repository
        self.profiles = profiles
        self.hotstate = hotstate
        self.segments = {s.id: s for s in segments}
        self.realtime = [s for s in segments if s.trait_only]

    def segment(self, segment_id: str) -> Segment:
        try:
            return self.segments[segment_id]
        except KeyError:
            known = ", ".join(sorted(self.segments)) or "none"
            raise ConfigurationError(
                f"no segment {segment_id!r} (known: {known}); add a YAML file to segments_dir") from None

    def cache_key(self, segment_id: str) -> str:
        return self.hotstate.segment_key(segment_id)

    # -- batch ---------------------------------------------------------------------------------------------

    async def recompute_all(self) -> list[RecomputeResult]:
        return [await self.recompute(sid) for sid in sorted(self.segments)]

    async def recompute(self, segment_id: str, *, as_of: datetime | None = None) -> RecomputeResult:
        """Recompute one segment in SQL, emit entered/exited, then apply the membership (see module doc)."""
        segment = self.segment(segment_id)
        async with self.repository.recompute_lock(segment_id):
            return await self._recompute_locked(segment, as_of)

    async def _recompute_locked(self, segment: Segment, as_of: datetime | None) -> RecomputeResult:
        pending = await self.repository.pending_run(segment.id)
        resumed = pending is not None
        if pending is not None:
            run_id, run_as_of = pending.run_id, pending.as_of
            log.info("segment %s: resuming run %s", segment.id, run_id)
        else:
            run_id, run_as_of = uuid.uuid4(), as_of or self.ctx.clock()
            await self.repository.start_run(compile_segment(segment, run_as_of),
                                            segment.model_dump_json(exclude_none=True), run_id, run_as_of)

        skipped = await self._publish_run(segment, run_id, run_as_of)
        applied = await self.repository.apply_run(segment.id, run_id, run_as_of)
        await self.refresh_cache(segment.id)
        return RecomputeResult(segment.id, run_id, applied.entered, applied.exited, applied.members, resumed,
                               skipped)

    async def _publish_run(self, segment: Segment, run_id: uuid.UUID, as_of: datetime) -> int:
        """Publish the run's events in pages, each page durable before the next is read."""
        segment_id = segment.id
        topic = self.ctx.topics.events
        skipped = 0
        after = uuid.UUID(int=0)
        while True:
            rows = await self.repository.changes_page(segment_id, run_id, after, PUBLISH_BATCH)
            if not rows:
                return skipped
            after = rows[-1].profile_id
            identities = await identity_of_profiles(self.profiles, [r.profile_id for r in rows])
            messages: list[OutgoingMessage] = []
            for row in rows:
                pid, change = row.profile_id, row.change
                identity = identities.get(pid)
                if identity is None:
                    skipped += 1  # a profile without identities cannot be messaged; membership still applies
                    continue
                if segment.trait_only and row.profile_version is not None and row.changed_at is not None:
                    # Decided on the Golden Record alone: named as the real-time check names it.
                    record_id = trait_change_id(segment, pid, change, row.profile_version)
                    at = row.changed_at
                else:
                    record_id, at = f"{segment_id}:{run_id}:{pid}:{change}", as_of
                event = segment_event(segment_id, change, pid, identity, at, record_id, reason="recompute")
                messages.append(event_message(topic, event))
            if messages:
                await self.ctx.publish(messages)
                for change in ("entered", "exited"):
                    n = sum(1 for r in rows if r.change == change and r.profile_id in identities)
                    if n:
                        self.ctx.metrics.events_ingested.labels(SOURCE, f"segment.{change}").inc(n)

    async def refresh_cache(self, segment_id: str) -> int:
        """Rebuild the Redis set of a segment from ``segment_members`` (swapped in atomically by RENAME)."""
        async with contextlib.aclosing(self.repository.member_chunks(segment_id)) as chunks:
            return await self.hotstate.replace_segment(segment_id, chunks)

    async def is_member(self, segment_id: str, profile_id: uuid.UUID | str) -> bool:
        """Membership from the Redis cache (PostgreSQL's ``segment_members`` is the system of record)."""
        return await self.hotstate.is_segment_member(segment_id, str(profile_id))

    async def members(self, segment_id: str, *, limit: int = 100) -> list[uuid.UUID]:
        return await self.repository.members(segment_id, limit)

    # -- real time -----------------------------------------------------------------------------------------

    async def on_profiles(self, profile_ids: Iterable[uuid.UUID], out: StageOutput) -> dict[uuid.UUID, set[str]]:
        """Re-evaluate the trait-only segments for ``profile_ids``; append entered/exited events to ``out``.

        Returns every segment each profile is in as of this batch (batch-computed memberships from
        ``segment_members`` plus this batch's real-time changes), for scenario conditions on
        ``profile.segments``. Membership rows change only once ``out`` is durable.
        """
        ids = list(dict.fromkeys(profile_ids))
        if not ids:
            return {}
        current: dict[uuid.UUID, set[str]] = {pid: set() for pid in ids}
        for pid, sid in await self.repository.memberships(ids):
            current[pid].add(sid)
        if not self.realtime:
            return current
        rows = await self.profiles.golden_states(ids)
        changes: list[tuple[uuid.UUID, str, str, int, datetime]] = []
        for row in rows:
            pid = row.profile_id
            golden: dict[str, Any] = row.golden
            for segment in self.realtime:
                inside = row.merged_into is None and segment.evaluate(golden, (), self.ctx.clock())
                was = segment.id in current[pid]
                if inside != was:
                    changes.append((pid, segment.id, "entered" if inside else "exited", row.version,
                                    row.updated_at))
                    (current[pid].add if inside else current[pid].discard)(segment.id)
        if not changes:
            return current
        identities = await identity_of_profiles(self.profiles, list({c[0] for c in changes}))
        topic = self.ctx.topics.events
        for pid, sid, change, version, updated_at in changes:
            identity = identities.get(pid)
            if identity is None:
                continue
            # The profile's version names the Golden Record this decision was made on: a replayed batch
            # (or a batch recompute that saw the same record) decides the same and emits the same event.
            event = segment_event(sid, change, pid, identity, updated_at,
                                  trait_change_id(self.segments[sid], pid, change, version), reason="realtime")
            out.messages.append(event_message(topic, event))

        async def apply() -> None:
            entered = [(c[0], c[1]) for c in changes if c[2] == "entered"]
            exited = [(c[0], c[1]) for c in changes if c[2] == "exited"]
            await self.repository.apply_changes(entered, exited, self.ctx.clock())
            await self.hotstate.update_segments(entered=[(sid, str(pid)) for pid, sid in entered],
                                                    exited=[(sid, str(pid)) for pid, sid in exited])

        out.on_durable.append(apply)
        return current
