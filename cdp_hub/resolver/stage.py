"""The resolver stage: ``cdp.events`` ─▶ identity graph + Golden Record ─▶ ``cdp.profile-events``.

    batch of records ─▶ parse (bad ─▶ DLQ) ─▶ IdentityGraph.resolve (one transaction, set-wise)
        ─▶ consent statements of consent.changed events ─▶ consents (merges: they follow the survivor)
        ─▶ per event, in order:  [profile.created]  event with profile_id  [profile.merged]
           (the event itself is left out when its type is in ``omit``, profile_events_omit: stored, not passed on)
    catalogue events (product.updated: no person in them) ─▶ CatalogueStep (resolver/catalogue.py)
        ─▶ products table ─▶ product.price_dropped / product.back_in_stock per interested profile

Every output is keyed by its profile id, so one profile's events stay in order downstream. The only reader
of ``cdp.profile-events`` is the triggers stage; event types it cannot use (``profile_events_omit``: the
contact policy's own ``message.decided`` by default, a third of the topic's records) are stored in the events
table as ever (reports and segments read them there) but not published again; the triggers stage refuses to
start with a scenario that would need one (docs/scaling.md, "Amplification"). Replays are
safe: a stored event is not stored or observed again, and the profile.created / profile.merged events it
caused the first time are emitted again with the same ids (downstream dedupes by event id).
"""

from __future__ import annotations

import gc
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from cdp_hub.bus.base import OutgoingMessage, Record
from cdp_hub.bus.provenance import EVENT_SCHEMA, hub_headers
from cdp_hub.dlq import dead_letter_from_error
from cdp_hub.errors import RecordError, SchemaViolation
from cdp_hub.pipeline.stage import Decoded, Stage, StageContext, StageOutput
from cdp_hub.resolver.catalogue import CatalogueStep, is_catalogue_event
from cdp_hub.resolver.graph import (
    RESOLVER_NAMESPACE,
    BatchResult,
    IdentityGraph,
    IdentityRejected,
    ResolutionError,
)
from cdp_hub.resolver.rules import IdentityRules, load_rules
from cdp_hub.schema.consent import CONSENT_CHANNELS, CONSENT_PURPOSES
from cdp_hub.schema.events import Context, Event, parse_event
from cdp_hub.schema.identities import NormalizationOptions, normalize_identity
from cdp_hub.schema.trusted import trusted_event
from cdp_hub.store import ConsentRepository, ConsentStatement, ProfileRepository
from cdp_hub.store.profiles.records import Key

__all__ = ["ResolverStage", "consent_statements", "profile_created_event", "profile_merged_event"]

HUB_SOURCE = "cdp-hub"


def profile_created_event(profile_id: uuid.UUID, creator: Event) -> Event:
    """The ``profile.created`` event of a profile born from ``creator`` (deterministic id)."""
    # Built from already validated parts (model_construct): this runs for every new customer.
    return Event.model_construct(
        event_id=uuid.uuid5(RESOLVER_NAMESPACE, f"profile.created:{profile_id}"),
        type="profile.created",
        source=HUB_SOURCE,
        occurred_at=creator.occurred_at,
        received_at=datetime.now(UTC),
        identities=list(creator.identities),
        traits=creator.traits,
        properties={"profile_id": str(profile_id)},
        # A profile born in a replay or backfill (context.mute_triggers) starts no conversation either.
        context=Context(mute_triggers=True) if (creator.context.model_extra or {}).get("mute_triggers") is True
        else Context(),
        profile_id=profile_id,
    )


def profile_merged_event(survivor: uuid.UUID, losers: Sequence[uuid.UUID], cause: Event, reason: str | None,
                         *, event_type: str = "profile.merged") -> Event:
    """The ``profile.merged`` event: downstream state of ``losers`` now belongs to ``survivor``."""
    merged = sorted(str(p) for p in losers)
    return Event.model_validate({
        "event_id": uuid.uuid5(RESOLVER_NAMESPACE, f"{event_type}:{cause.event_id}:{survivor}:{','.join(merged)}"),
        "type": event_type,
        "source": HUB_SOURCE,
        "occurred_at": cause.occurred_at,
        "identities": [i.model_dump() for i in cause.identities],
        "properties": {"surviving_profile_id": str(survivor), "merged_profile_ids": merged, "reason": reason},
        "profile_id": survivor,
    })


def consent_statements(event: Event, profile_id: uuid.UUID) -> list[ConsentStatement]:
    """The consent statements a ``consent.changed`` event makes for its profile."""
    props = event.properties
    channel, status = props.get("channel"), props.get("status")
    if status not in ("opted_in", "opted_out"):
        return []
    purpose = props.get("purpose") or "marketing"
    evidence = dict(props.get("evidence") or {})
    if purpose not in CONSENT_PURPOSES:
        evidence["source_purpose"] = purpose
        purpose = "marketing"
    if event.context.channel:
        evidence.setdefault("context_channel", event.context.channel)
    channels = CONSENT_CHANNELS if channel == "all" else (str(channel),)
    return [ConsentStatement(profile_id, ch, purpose, status, event.occurred_at, event.source, event.event_id,
                             evidence) for ch in channels]


def _message(topic: str, event: Event, profile_id: uuid.UUID, value: bytes | None = None) -> OutgoingMessage:
    return OutgoingMessage(topic, value if value is not None else event.to_json(), str(profile_id).encode(),
                           hub_headers(EVENT_SCHEMA, ("cdp.type", event.type.encode())))


def parse_keeping_good_identities(raw: bytes, options: NormalizationOptions) -> tuple[Event, list[IdentityRejected]]:
    """Parse a record; an identity that does not normalize (a phone ``00000``) is dropped, not the record.

    The usual record parses on the first try. One rejected for an identity is parsed again without the
    identities that do not normalize, each named by an :class:`IdentityRejected`; a record none of whose
    identities normalizes, or that is bad elsewhere, raises as before.
    """
    try:
        return parse_event(raw, options=options), []
    except RecordError as exc:
        if not (exc.field or "").startswith("identities."):
            raise
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise exc from None
        idents = data.get("identities") if isinstance(data, dict) else None
        if not isinstance(idents, list):
            raise
        kept: list[Any] = []
        rejected: list[IdentityRejected] = []
        for i, ident in enumerate(idents):
            try:
                if not isinstance(ident, dict):
                    raise ValueError("an identity is an object with kind and value")
                normalize_identity(str(ident.get("kind")), str(ident.get("value", "")), options)
            except ValueError as bad:
                value = ident.get("value") if isinstance(ident, dict) else ident
                kind = ident.get("kind") if isinstance(ident, dict) else None
                rejected.append(IdentityRejected(
                    f"identity {kind}:{value!r} dropped, the record went on without it: {bad}",
                    field=f"identities.{i}.value", value=value, record_id=data.get("source_record_id"),
                    source=data.get("source")))
                continue
            kept.append(ident)
        if not rejected or not kept:
            raise
        data["identities"] = kept
        return parse_event(data, options=options), rejected


ResolverInput = tuple[Event, list[Key], list[IdentityRejected], bytes | None]
"""A decoded record: the event, its usable identity keys, identities dropped from it, and its JSON as the hub
wrote it when the profile id can be spliced into it (a trusted record without one)."""


class ResolverStage(Stage[ResolverInput]):
    """Resolves each event to a profile, keeps the Golden Record, and publishes profile events."""

    name = "resolver"

    def __init__(self, ctx: StageContext, *, profiles: ProfileRepository, normalization: NormalizationOptions,
                 rules: IdentityRules | None = None, consents: ConsentRepository | None = None,
                 catalogue: CatalogueStep | None = None, omit: frozenset[str] = frozenset(),
                 random_page_cost: float | None = None) -> None:
        super().__init__(ctx)
        self.random_page_cost = random_page_cost
        """The planner's price of an index probe in the batch transactions (settings.resolver_random_page_cost)."""
        self.omit = omit
        """Event types stored but not passed on to ``cdp.profile-events`` (settings.profile_events_omit)."""
        self.profiles = profiles
        self.consents = consents
        self.catalogue = catalogue
        self.normalization = normalization
        self.rules = rules or load_rules()
        self._graph: IdentityGraph | None = None

    @property
    def topics(self) -> Sequence[str]:
        return [self.ctx.topics.events]

    async def setup(self) -> None:
        """Warm the normalizers, then move the start-up heap out of the garbage collector's way.

        A batch allocates many short-lived objects, so full collections run often, and each one would
        rescan every long-lived object of the process (schemas, phone-number metadata, modules).
        ``gc.freeze()`` puts those in a permanent generation; in ``bench/resolver_stream.py`` that removed
        about a quarter of the resolver's CPU per event and most of its latency tail. It is process-wide
        and harmless to other stages: frozen objects live as long as the process anyway.
        """
        normalize_identity("phone", "+79161234567", self.normalization)
        normalize_identity("email", "warm.up@example.com", self.normalization)
        gc.collect()
        gc.freeze()

    @property
    def graph(self) -> IdentityGraph:
        if self._graph is None:
            self._graph = IdentityGraph(self.profiles.store.pool, self.rules, self.normalization,
                                        random_page_cost=self.random_page_cost)
        return self._graph

    def decode(self, record: Record) -> ResolverInput:
        trusted = self.decode_trusted(record, EVENT_SCHEMA, trusted_event)
        raw = None
        rejected: list[IdentityRejected] = []
        if trusted is not None:  # validated where it entered: connector, edge, callback, another stage
            event = trusted
            if event.profile_id is None:
                raw = record.value  # the JSON with the profile: these bytes and profile_id, spliced
        else:
            event, rejected = parse_keeping_good_identities(record.value, self.normalization)
        if is_catalogue_event(event):
            if self.catalogue is None:
                raise SchemaViolation(f"{event.type}: this resolver keeps no catalogue", field="type",
                                      value=event.type, record_id=event.source_record_id, source=event.source)
            return event, [], rejected, raw
        usable = self.graph.usable_keys(event)
        if not usable and event.profile_id is None:
            raise ResolutionError(
                "every identity of the event is blocked or not used for linking: "
                + ", ".join(f"{i.kind}:{i.value}" for i in event.identities)
                + "; add a usable identity or change the identity rules",
                field="identities", record_id=event.source_record_id, source=event.source,
            )
        return event, usable, rejected, raw

    async def process(self, batch: Sequence[Decoded[ResolverInput]]) -> StageOutput:
        out = StageOutput()
        for item in batch:  # identities dropped from records that went on: recorded, so nothing is lost silently
            for exc in item.value[2]:
                out.dead.append(dead_letter_from_error(exc, stage=self.name, payload=item.record.value,
                                                       record=item.record))
        people = [item for item in batch if not is_catalogue_event(item.value[0])]
        if people:
            parsed = [(item.record, item.value[0]) for item in people]
            result = await self.graph.resolve([e for _, e in parsed], [item.value[1] for item in people],
                                              [item.value[3] for item in people])
            if self.consents is not None:
                await self._record_consents([e for _, e in parsed], result)
            await self._emit(out, parsed, result)
        if len(people) < len(batch):  # after the people: a view in this batch counts for a price drop in it
            await self._catalogue(out, [item.value[0] for item in batch if is_catalogue_event(item.value[0])])
        return out

    async def _catalogue(self, out: StageOutput, events: list[Event]) -> None:
        assert self.catalogue is not None  # decode dead-letters catalogue events without it
        topic = self.ctx.topics.profile_events
        for derived in await self.catalogue.apply(events):
            assert derived.profile_id is not None
            out.messages.append(_message(topic, derived, derived.profile_id))

    async def _record_consents(self, events: list[Event], result: BatchResult) -> None:
        """Consent statements of the batch's ``consent.changed`` events, with source, time and evidence
        (``all`` is every channel; a purpose outside marketing/transactional/service is marketing, the
        source's name kept in the evidence); then merges carry the losers' statements to the survivor."""
        assert self.consents is not None
        statements = [s for e in events if e.type == "consent.changed" and e.event_id in result.profile_of
                      for s in consent_statements(e, result.profile_of[e.event_id])]
        await self.consents.record(statements)
        times = {e.event_id: e.occurred_at for e in events}
        await self.consents.follow_merges([(m.survivor, m.losers, times.get(m.event_id, datetime.now(UTC)))
                                           for m in result.merges])

    async def _emit(self, out: StageOutput, parsed: list[tuple[Record, Event]], result: BatchResult) -> None:
        topic = self.ctx.topics.profile_events
        created: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)  # event id -> profiles it created
        for pid, eid in result.created:
            created[eid].append(pid)
        merged: dict[uuid.UUID, list[tuple[uuid.UUID, list[uuid.UUID], str | None]]] = defaultdict(list)
        for m in result.merges:
            merged[m.event_id].append((m.survivor, m.losers, m.reason))
        replayed = [e.event_id for _, e in parsed
                    if e.event_id in result.profile_of and e.event_id not in result.new_events]
        if replayed:
            await self._replayed_effects(replayed, created, merged)

        emitted: set[uuid.UUID] = set()
        omit = self.omit
        omitted: Counter[str] = Counter()
        for rec, event in parsed:
            eid = event.event_id
            if eid not in result.profile_of:
                exc = ResolutionError(
                    f"event names profile {event.profile_id}, which does not exist, and has no usable identity",
                    field="profile_id", record_id=event.source_record_id, source=event.source)
                out.dead.append(dead_letter_from_error(exc, stage=self.name, payload=rec.value, record=rec))
                continue
            first = eid not in emitted
            emitted.add(eid)
            if first:
                for new_pid in created.get(eid, ()):
                    out.messages.append(_message(topic, profile_created_event(new_pid, event), new_pid))
            if event.type not in omit:  # the profiles it created or merged are passed on all the same
                out.messages.append(_message(topic, event, result.profile_of[eid], result.event_json[eid]))
            else:
                omitted[event.type] += 1
            if first:
                for survivor, losers, reason in merged.get(eid, ()):
                    out.messages.append(
                        _message(topic, profile_merged_event(survivor, losers, event, reason), survivor))
        metrics = self.ctx.metrics
        if result.created:
            metrics.profiles_created.inc(len(result.created))
        if result.merges:
            metrics.profiles_merged.inc(sum(len(m.losers) for m in result.merges))
        for etype, n in omitted.items():
            metrics.profile_events_omitted.labels(etype).inc(n)

    async def _replayed_effects(
        self,
        replayed: list[uuid.UUID],
        created: dict[uuid.UUID, list[uuid.UUID]],
        merged: dict[uuid.UUID, list[tuple[uuid.UUID, list[uuid.UUID], str | None]]],
    ) -> None:
        """For events stored before (a replay after a crash): the profiles and merges they caused then."""
        profiles = self.profiles
        for pid, eid in await profiles.created_by_events(replayed):
            if pid not in created[eid]:
                created[eid].append(pid)
        by_step: dict[tuple[uuid.UUID, uuid.UUID], tuple[list[uuid.UUID], str | None]] = {}
        for m in await profiles.merges_caused_by(replayed):
            losers, _ = by_step.setdefault((m.event_id, m.survivor), ([], m.reason))
            losers.append(m.loser)
        for (eid, survivor), (losers, reason) in by_step.items():
            merged[eid].append((survivor, losers, reason))
