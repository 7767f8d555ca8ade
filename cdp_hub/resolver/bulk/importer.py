"""Bulk mode: load millions of historical customer records and resolve them set-wise, not event by event.

    CSV / JSONL (the SDK's streaming reader) ─▶ normalize in worker processes (bad ─▶ DLQ)
      ─▶ COPY into staging (records, identities)
      ─▶ connected components in SQL (label propagation; existing profiles join as negative labels)
      ─▶ components the rules must judge (limited kinds, caps) ─▶ the streaming resolver, event by event
      ─▶ the rest, set-wise: one profile per component (the oldest existing one, or a new one), merges of
         existing profiles, identities, events, trait observations, golden records (survivorship in SQL)

A record is a flat row (CSV columns or a JSON object): identity columns by kind name (``email``, ``phone``,
``crm_id``, ...), ``id`` / ``source_record_id`` for the source's id, ``updated_at`` / ``occurred_at`` /
``created_at`` for when it was true, consent columns (below), anything else a trait.

Consent travels with the record, with evidence, into the consents table as the streaming resolver records a
``consent.changed`` event: ``consent_<channel>`` (marketing) or ``consent_<channel>_<purpose>`` (channel
``email``, ``sms``, ``push``, ``messenger`` or ``all``; purpose ``marketing``, ``transactional``, ``service``)
with ``opted_in`` / ``opted_out`` (or yes/no, true/false, 1/0, да/нет); ``consent_at`` when it was given
(default: the record's time); ``consent_evidence`` what proves it (a form id, "paper form 2019"). The
statement's source is the import's source, its evidence ``{"method": "import", "file", "record",
"reference"}``. Any other value is a record the import cannot take (the DLQ, naming the column). A JSON object that has ``identities`` is taken
as a canonical event instead. The whole import is one transaction: it lands completely or not at all.
Run it with the resolver stage paused (a migration); it takes no per-identity locks.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import multiprocessing
import os
import re
import resource
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import asyncpg
import orjson
from pydantic import ValidationError

from cdp_hub.connector.files import FileRecordError, iter_records
from cdp_hub.dlq import DeadLetter, dead_letter_from_error
from cdp_hub.errors import ConfigurationError, NormalizationError, RecordError, SchemaViolation
from cdp_hub.resolver.fuzzy.text import given_name_key, same_given_name
from cdp_hub.resolver.graph import (
    IdentityGraph,
    IdentityRejected,
    ResolutionError,
    insert_merges,
    refresh_golden,
)
from cdp_hub.resolver.rules import IdentityRules
from cdp_hub.schema.consent import CONSENT_CHANNELS, CONSENT_PURPOSES
from cdp_hub.schema.events import Traits, deterministic_event_id, parse_event, schema_violation_from
from cdp_hub.schema.identities import CORE_IDENTITY_KINDS, NormalizationOptions, normalize_identity
from cdp_hub.schema.payloads import EVENT_TYPES
from cdp_hub.store import ConsentRepository, EventRepository, ProfileRepository
from cdp_hub.store.consents import StagedConsent

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["BulkImporter", "ImportSummary", "RecordBuilder", "read_records"]

_ID_COLUMNS = ("source_record_id", "id", "record_id")
_TIME_COLUMNS = ("occurred_at", "updated_at", "created_at")
_CHUNK = 20_000
# +7 or 8, then ten digits in any of the usual groupings: "8 (916) 123-45-67", "+7 916 1234567".
# Only national numbers starting 3, 4, 7, 8 or 9 (the Russian numbering plan; phonenumbers treats others
# differently), and only balanced or no parentheses.
_RU_PHONE = re.compile(r"^\s*(?:\+7|8)[\s\-]*((?:\([34789]\d{2}\)|[34789]\d{2})(?:[\s\-]*\d){7})\s*$")
_MAX_ROUNDS = 50
_CONSENT_AT, _CONSENT_EVIDENCE = "consent_at", "consent_evidence"
_CONSENT_VALUES = {"opted_in": "opted_in", "opted_out": "opted_out", "yes": "opted_in", "no": "opted_out",
                   "y": "opted_in", "n": "opted_out", "true": "opted_in", "false": "opted_out", "1": "opted_in",
                   "0": "opted_out", "да": "opted_in", "нет": "opted_out"}


@dataclass
class ImportSummary:
    """What an import did."""

    records: int = 0
    loaded: int = 0
    duplicates: int = 0
    dead: int = 0
    profiles_created: int = 0
    profiles_matched: int = 0
    merges: int = 0
    conflicts: int = 0
    components: int = 0
    streamed: int = 0
    rounds: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list, repr=False)
    # Reconciliation: what happened to every record read (see ``reconciliation``).
    source: str = ""
    input_sha256: str = ""
    events_stored: int = 0
    identities_attached: int = 0
    consents_recorded: int = 0
    identities_rejected: dict[str, int] = field(default_factory=dict)  # reason -> count
    refused: list[dict[str, Any]] = field(default_factory=list)  # refused links, with the profiles involved

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "loaded": self.loaded, "duplicates": self.duplicates, "dlq": self.dead,
            "profiles_created": self.profiles_created, "profiles_matched": self.profiles_matched,
            "merges": self.merges, "conflicts": self.conflicts, "components": self.components,
            "consents_recorded": self.consents_recorded,
            "resolved_event_by_event": self.streamed, "label_rounds": self.rounds,
            "seconds": round(self.seconds, 2), "peak_rss_mb": round(self.peak_rss_mb, 1),
            "phases": {k: round(v, 2) for k, v in self.phases.items()},
            "reconciliation": self.reconciliation(),
        }

    def reconciliation(self) -> dict[str, Any]:
        """Per source: where every record read went. ``records_read = events_stored + duplicates_skipped +
        records_to_dlq`` (``balanced``); rejected identities are dropped from records that went on."""
        return {"sources": {self.source: {
            "records_read": self.records, "events_stored": self.events_stored,
            "duplicates_skipped": self.duplicates, "records_to_dlq": self.dead - sum(self.identities_rejected.values()),
            "identities_attached": self.identities_attached, "identities_rejected": dict(self.identities_rejected),
            "merged_into_existing_profiles": self.profiles_matched, "new_profiles": self.profiles_created,
            "merges": self.merges, "refused_links": self.refused,
            "balanced": self.records == self.events_stored + self.duplicates
            + self.dead - sum(self.identities_rejected.values()),
        }}, "input_sha256": self.input_sha256}

    def render_reconciliation(self) -> str:
        rec = self.reconciliation()["sources"][self.source]
        rejected = ", ".join(f"{n} ({why})" for why, n in rec["identities_rejected"].items()) or "none"
        return "\n".join([
            f"Reconciliation of {self.source} (input sha256 {self.input_sha256[:16]}...):",
            f"  records read {rec['records_read']} = events stored {rec['events_stored']} + duplicates skipped "
            f"{rec['duplicates_skipped']} + records to the DLQ {rec['records_to_dlq']}"
            + ("" if rec["balanced"] else "  (DOES NOT ADD UP)"),
            f"  identities attached {rec['identities_attached']}; rejected (dropped, record kept): {rejected}",
            f"  profiles: {rec['new_profiles']} new, {rec['merged_into_existing_profiles']} existing matched, "
            f"{rec['merges']} merged; refused links {len(rec['refused_links'])}",
        ] + [f"    {r['rule']} {r['kind']}:{r['value']} between {', '.join(r['profiles'])}"
             for r in rec["refused_links"][:20]])

    def render(self) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        return "\n".join([
            f"Imported {self.records} records in {self.seconds:.1f} s ({rate:,.0f} records/s, "
            f"peak RSS {self.peak_rss_mb:.0f} MB)",
            f"  loaded {self.loaded}, duplicates/already imported {self.duplicates}, DLQ {self.dead}",
            f"  profiles: {self.profiles_created} created, {self.profiles_matched} existing matched; "
            f"merges {self.merges}; conflicts {self.conflicts}; consent statements recorded {self.consents_recorded}",
            f"  {self.components} connected components in {self.rounds} label rounds; "
            f"{self.streamed} records resolved event by event (rules had to judge them)",
        ])


def read_records(path: Path, fmt: str = "auto", *, position: Callable[[int], None] | None = None,
                 ) -> Iterator[tuple[str, dict[str, Any] | None, str, str]]:
    """``(where, record or None, raw text, error)`` for each record of a CSV or JSON Lines file (gzip too),
    streaming, through the connector SDK's file reader (encoding, delimiter and format detection).

    ``where`` is ``name#n`` (the n-th record of the file, unreadable ones counted too): a stable fallback id
    for records without an id column. An unreadable line comes as ``(where, None, raw line, reason)``.
    """
    bad: list[FileRecordError] = []
    n = 0
    for row in iter_records(path, None if fmt == "auto" else fmt,  # type: ignore[arg-type]
                            on_error=bad.append, position=position):
        while bad:
            err = bad.pop(0)
            n += 1
            yield f"{path.name}#{n}", None, err.raw, str(err)
        n += 1
        yield f"{path.name}#{n}", row, "", ""
    for err in bad:
        n += 1
        yield f"{path.name}#{n}", None, err.raw, str(err)


def _parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    text = str(value).strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise NormalizationError(f"not a timestamp: {value!r}", field="occurred_at", value=value) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# (record number, where, record or None when unreadable, raw text, error)
Item = tuple[int, str, dict[str, Any] | None, str, str]


@dataclass
class RecordBuilder:
    """Turns one source record into staging rows. Plain data, so worker processes can run it in parallel."""

    source: str
    event_type: str
    rules: IdentityRules
    options: NormalizationOptions
    now: datetime
    dlq_topic: str

    def __post_init__(self) -> None:
        self._blocked = self.rules.blocked_set(self.options)
        self._kinds = set(CORE_IDENTITY_KINDS) | set(self.rules.kinds)

    def record(self, rec_no: int, row: dict[str, Any], where: str,
               rejected: list[RecordError] | None = None,
               consents: list[tuple[Any, ...]] | None = None) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        """Staging rows of one record; raises a RecordError for a record that cannot be imported. An identity
        column that does not normalize (a phone ``00000``) is dropped and named in ``rejected`` when the
        record has another identity; the record goes on without it. The record's consent statements are
        appended to ``consents`` (staging rows of ``bulk_consent``)."""
        bad: list[NormalizationError] = []
        consent_columns: dict[str, Any] = {}
        if isinstance(row.get("identities"), list):
            body = dict(row)
            body.setdefault("type", self.event_type)
            body.setdefault("source", self.source)
            event = parse_event(body, options=self.options)
            idents = [(i.kind, i.value) for i in event.identities]
            traits = event.traits.model_dump(mode="json", exclude_none=True)
            rid, occurred, event_id = event.source_record_id, event.occurred_at, event.event_id
        else:
            idents, traits_in = [], {}
            rid = None
            when: datetime | None = None
            for col, raw in row.items():
                if raw is None or raw == "":
                    continue
                name = col.strip().lower()
                if name in self._kinds:
                    for part in (raw if isinstance(raw, list) else [raw]):
                        try:
                            idents.append(self._normalize(name, str(part)))
                        except NormalizationError as exc:
                            bad.append(NormalizationError(f"{name}: {exc.reason}", field=name, value=part,
                                                          source=self.source))
                elif name in _ID_COLUMNS and rid is None:
                    rid = str(raw)
                elif name in _TIME_COLUMNS:
                    when = when or _parse_time(raw)
                elif name.startswith("consent_"):
                    consent_columns[name] = raw
                else:
                    traits_in[name] = raw
            if bad and (not idents or rejected is None):
                first = bad[0]
                first.record_id = rid or where
                raise first
            for dropped in bad:
                assert rejected is not None
                rejected.append(IdentityRejected(
                    f"identity {dropped.field} dropped, the record went on without it: {dropped.reason}",
                    field=dropped.field, value=dropped.value, record_id=rid or where, source=self.source))
            if not idents:
                raise ResolutionError("the record has no identity column with a value "
                                      f"(one of: {', '.join(sorted(self._kinds))})", field="identities",
                                      record_id=rid or where, source=self.source)
            try:
                traits = Traits.model_validate(traits_in).model_dump(mode="json", exclude_none=True)
            except ValidationError as exc:
                raise schema_violation_from(exc, source=self.source, record_id=rid or where,
                                            prefix="traits") from None
            traits = {k: v for k, v in traits.items() if v not in ("", [], {})}
            rid = rid or where
            occurred = when if when is not None else self.now
            event_id = deterministic_event_id(self.source, rid, self.event_type)
            if consent_columns and consents is not None:
                consents.extend(self._consents(consent_columns, rec_no, event_id, occurred, rid, where))
        seen: set[tuple[str, str]] = set()
        unique = [k for k in idents if not (k in seen or seen.add(k))]  # type: ignore[func-returns-value]
        linking = [k for k in unique if k not in self._blocked and self.rules.kind_rule(k[0]).links]
        if not linking:
            raise ResolutionError("every identity of the record is blocked or not used for linking: "
                                  + ", ".join(f"{k}:{v}" for k, v in unique), field="identities",
                                  record_id=rid, source=self.source)
        body = {
            "event_id": str(event_id), "type": self.event_type, "source": self.source, "source_record_id": rid,
            "occurred_at": occurred.isoformat(), "received_at": self.now.isoformat(),
            "identities": [{"kind": k, "value": v} for k, v in unique], "traits": traits,
        }
        rec_row = (rec_no, event_id, occurred, rid, orjson.dumps(traits).decode(), orjson.dumps(body).decode())
        return rec_row, [(rec_no, k, v, occurred) for k, v in linking]


    def _consents(self, columns: dict[str, Any], rec_no: int, event_id: uuid.UUID, occurred: datetime, rid: str,
                  where: str) -> list[tuple[Any, ...]]:
        """Staging rows of the record's consent statements (see the module doc)."""
        at = _parse_time(columns.pop(_CONSENT_AT, None)) or occurred
        reference = columns.pop(_CONSENT_EVIDENCE, None)
        evidence: dict[str, Any] = {"method": "import", "file": where.rsplit("#", 1)[0], "record": rid}
        if reference not in (None, ""):
            evidence["reference"] = str(reference)[:500]
        rows: list[tuple[Any, ...]] = []
        for name, raw in columns.items():
            channel, _, purpose = name.removeprefix("consent_").partition("_")
            purpose = purpose or "marketing"
            if channel not in (*CONSENT_CHANNELS, "all") or purpose not in CONSENT_PURPOSES:
                raise SchemaViolation(f"{name}: not a consent column (consent_<channel>[_<purpose>], channel one "
                                      f"of {', '.join((*CONSENT_CHANNELS, 'all'))}; purpose one of "
                                      f"{', '.join(CONSENT_PURPOSES)})", field=name, record_id=rid,
                                      source=self.source)
            status = _CONSENT_VALUES.get(str(raw).strip().lower())
            if status is None:
                raise SchemaViolation(f"{name}: {str(raw)[:40]!r} is not a consent value (opted_in or opted_out, "
                                      "yes/no, true/false, 1/0)", field=name, record_id=rid, source=self.source)
            for ch in (CONSENT_CHANNELS if channel == "all" else (channel,)):
                rows.append((rec_no, event_id, ch, purpose, status, at.isoformat(),
                             orjson.dumps(evidence).decode()))
        return rows

    def _normalize(self, kind: str, value: str) -> tuple[str, str]:
        # Russian numbers in the two usual notations are most of a legacy file's phones; writing them in
        # E.164 directly gives what the schema's phonenumbers-based normalization gives (a test checks it)
        # at a fraction of the cost. Anything else takes the schema's way.
        if kind == "phone" and self.options.default_region == "RU":
            m = _RU_PHONE.match(value)
            if m is not None:
                return "phone", "+7" + re.sub(r"\D", "", m.group(1))
        return normalize_identity(kind, value, self.options)

    def chunk(self, items: list[Item]) -> _Chunk:
        """Staging rows (as COPY CSV) and dead letters of ``(record number, where, record, raw text, error)``
        items."""
        out = _Chunk()
        recs = io.StringIO()
        idents = io.StringIO()
        consents = io.StringIO()
        rec_w = csv.writer(recs, lineterminator="\n")
        ident_w = csv.writer(idents, lineterminator="\n")
        consent_w = csv.writer(consents, lineterminator="\n")
        for rec_no, where, row, raw, error in items:
            try:
                if row is None:
                    raise SchemaViolation(error or f"{where}: not a record", field="<record>",
                                          record_id=where, source=self.source)
                rejected: list[RecordError] = []
                statements: list[tuple[Any, ...]] = []
                rec, keys = self.record(rec_no, row, where, rejected, statements)
                for exc in rejected:
                    out.dead.append(dead_letter_from_error(
                        exc, stage="import", payload=raw or orjson.dumps(row, default=str),
                        source=self.source, replay_topic=self.dlq_topic))
                    out.rejected.append(str(exc.field))
            except RecordError as exc:
                out.dead.append(dead_letter_from_error(
                    exc, stage="import", payload=raw or orjson.dumps(row, default=str),
                    source=self.source, replay_topic=self.dlq_topic))
                continue
            rec_w.writerow(rec)
            ident_w.writerows(keys)
            consent_w.writerows(statements)
            out.count += 1
        out.records = recs.getvalue().encode()
        out.identities = idents.getvalue().encode()
        out.consents = consents.getvalue().encode()
        return out


@dataclass
class _Chunk:
    """A chunk ready for COPY (CSV bytes: cheap to pass back from a worker process)."""

    count: int = 0
    records: bytes = b""
    identities: bytes = b""
    consents: bytes = b""
    dead: list[DeadLetter] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # fields of identities dropped from records that went on


def _build_chunk(builder: RecordBuilder, items: list[Item]) -> _Chunk:
    return builder.chunk(items)


class BulkImporter:
    """One import run: ``await BulkImporter(hub, source="legacy_crm").run([Path("customers.csv")])``.

    The import session asks PostgreSQL for ``temp_buffers_mb`` of memory for its staging tables (a million
    records stage about 1 GB; beyond the setting they spill to disk and the import slows down several
    times) and ``work_mem_mb`` per sort or hash. ``workers`` processes normalize records (default: the
    number of cores, at most 4).
    """

    def __init__(self, hub: Hub, *, source: str, event_type: str = "customer.updated",
                 rules: IdentityRules | None = None, progress: TextIO | None = None,
                 work_mem_mb: int = 256, temp_buffers_mb: int = 3072, workers: int | None = None,
                 report: Callable[[int, int | None], None] | None = None) -> None:
        if event_type not in EVENT_TYPES:
            raise ConfigurationError(f"unknown event type {event_type!r} for imported records")
        self.hub = hub
        self.source = source
        self.event_type = event_type
        self.rules = rules or IdentityRules()
        self.progress = progress
        self.report = report
        self.work_mem_mb = work_mem_mb
        self.temp_buffers_mb = temp_buffers_mb
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        self.builder = RecordBuilder(source, event_type, self.rules, hub.settings.normalization, datetime.now(UTC),
                                     hub.topics.events)

    def _say(self, text: str, *, final: bool = False) -> None:
        if self.progress is None or (self.report is not None and not final):
            return  # with a progress report (a bar, or periodic lines), only the phase changes are said
        end = "\n" if final or not self.progress.isatty() else "\r"
        self.progress.write(f"cdp-hub import: {text}\x1b[K{end}" if self.progress.isatty()
                            else f"cdp-hub import: {text}{end}")
        self.progress.flush()

    # -- the run -------------------------------------------------------------------------------------

    async def run(self, files: Sequence[Path], *, fmt: str = "auto") -> ImportSummary:
        summary = ImportSummary(source=self.source, input_sha256=input_checksum(files))
        started = time.perf_counter()
        mark = started
        store = self.hub.store
        profiles = ProfileRepository(store)

        def phase(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            summary.phases[name] = summary.phases.get(name, 0.0) + now - mark
            mark = now

        streamed_bodies: list[str] = []
        streamed_consents: list[StagedConsent] = []
        async with store.pool.acquire() as conn, conn.transaction():
            await profiles.bulk_begin(conn, temp_buffers_mb=self.temp_buffers_mb, work_mem_mb=self.work_mem_mb)
            await self._load(conn, profiles, files, fmt, summary, started)
            self._say(f"read {summary.records:,} records, DLQ {summary.dead}; resolving", final=True)
            phase("read+copy")

            staged, loaded = await profiles.bulk_dedupe(conn)
            summary.duplicates = staged - loaded
            phase("dedupe")

            await profiles.bulk_link(conn)
            # records <- keys, keys <- records, until the records' labels stop moving (then the keys' have too:
            # they were computed from the same record labels).
            for rounds in range(1, _MAX_ROUNDS + 1):
                changed = await profiles.bulk_round_records(conn, first=rounds == 1)
                summary.rounds = rounds
                if changed == 0:
                    break
                await profiles.bulk_round_keys(conn)
                self._say(f"components: round {rounds}" + (f", {changed:,} labels moved" if changed > 0 else ""))
            await profiles.bulk_components(conn)
            phase("components")

            limits = self.rules.limited_kinds()
            flagged = await profiles.bulk_flagged(conn, list(limits), list(limits.values()), self.rules.max_merge_size)
            if self.rules.household_rule:
                flagged = sorted({*flagged, *await profiles.bulk_shared_components(conn),
                                  *households(await profiles.bulk_person_evidence(conn))})
            if flagged:
                streamed_bodies = await profiles.bulk_take_flagged(conn, flagged)
                # Their consent waits for their events: the streaming resolver stores them after the commit.
                streamed_consents = await ConsentRepository.staged_of(
                    conn, [uuid.UUID(orjson.loads(b)["event_id"]) for b in streamed_bodies])
            summary.loaded = loaded - len(streamed_bodies)

            summary.components, summary.profiles_created = await profiles.bulk_targets(conn, self.source)
            summary.profiles_matched = summary.components - summary.profiles_created
            names = sorted(self.rules.traits)
            await profiles.bulk_new_profiles(conn, names, [self.rules.traits[n].strategy for n in names],
                                             self.rules.default_strategy)
            losers = await profiles.bulk_component_losers(conn)
            if losers:
                lose = [lo for lo, _ in losers]
                surv = [s for _, s in losers]
                held = await profiles.move_profiles(conn, lose, surv)
                op = uuid.uuid4()
                await insert_merges(conn, [(s, lo, op, sorted(held.get(lo, [])), f"bulk import from {self.source}")
                                           for lo, s in zip(lose, surv, strict=True)])
                summary.merges += len(lose)
            phase("profiles")
            summary.identities_attached += await profiles.bulk_insert_identities(conn, self.source)
            phase("identities")
            summary.events_stored += await profiles.bulk_insert_events(conn, self.event_type, self.source)
            phase("events")
            await profiles.bulk_insert_traits(conn, self.source)
            phase("traits")
            summary.consents_recorded += await ConsentRepository.record_staged(conn, self.source)
            phase("consents")
            targets = await profiles.bulk_existing_targets(conn)
            if targets:
                await refresh_golden(conn, targets, self.rules)
            phase("golden")
        phase("commit")
        # The tables grew by up to the whole import: plan what follows (the event-by-event part, the stages)
        # for their new size rather than wait for autovacuum (docs/operations.md, "Query plans").
        await profiles.analyze()
        await EventRepository(store).analyze()
        await ConsentRepository(store).analyze()
        phase("analyze")

        if streamed_bodies:
            await self._stream(streamed_bodies, summary)
            summary.consents_recorded += await ConsentRepository(store).record_for_events(self.source,
                                                                                          streamed_consents)
            phase("event-by-event")
        if summary.dead_letters:
            await self.hub.bus.publish_many([d.to_message(self.hub.topics.dlq) for d in summary.dead_letters])
        summary.seconds = time.perf_counter() - started
        summary.peak_rss_mb = _peak_rss_mb()
        self._say("done", final=True)
        return summary

    async def _load(self, conn: asyncpg.Connection, profiles: ProfileRepository, files: Sequence[Path], fmt: str,
                    summary: ImportSummary, started: float) -> None:
        """Read, normalize (in worker processes when there are several cores) and COPY into staging.

        Chunks are built in parallel and copied in order while the next ones are being built, so the
        database and the workers are busy at the same time; at most a few chunks are in memory.
        """
        loop = asyncio.get_running_loop()
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn")) \
            if self.workers > 1 else None
        pending: deque[asyncio.Future[_Chunk]] = deque()
        size = sum(path.stat().st_size for path in files)
        finished = 0  # bytes of the files read to the end
        read = [0]  # bytes read of the current file

        async def copy(chunk: _Chunk) -> None:
            summary.dead += len(chunk.dead)
            for name in chunk.rejected:
                reason = f"{name} does not normalize"
                summary.identities_rejected[reason] = summary.identities_rejected.get(reason, 0) + 1
            summary.dead_letters.extend(chunk.dead)
            if chunk.count:
                await profiles.bulk_copy(conn, chunk.records, chunk.identities, chunk.consents)
            rate = summary.records / (time.perf_counter() - started)
            self._say(f"read {summary.records:,} records ({rate:,.0f}/s), DLQ {summary.dead}")
            if self.report is not None:
                self.report(finished + read[0], size)

        def submit(items: list[Item]) -> None:
            if pool is None:
                fut: asyncio.Future[_Chunk] = loop.create_future()
                fut.set_result(self.builder.chunk(items))
            else:
                fut = loop.run_in_executor(pool, _build_chunk, self.builder, items)
            pending.append(fut)

        try:
            items: list[Item] = []
            for path in files:
                read[0] = 0
                for where, row, raw, error in read_records(path, fmt, position=lambda at: read.__setitem__(0, at)):
                    summary.records += 1
                    items.append((summary.records, where, row, raw, error))
                    if len(items) >= _CHUNK:
                        submit(items)
                        items = []
                        while len(pending) > self.workers or (pending and pending[0].done()):
                            await copy(await pending.popleft())
                finished += path.stat().st_size
                read[0] = 0
            if items:
                submit(items)
            while pending:
                await copy(await pending.popleft())
        finally:
            for fut in pending:  # only after an error: collect what is left so nothing is reported twice
                if fut.done() and not fut.cancelled():
                    fut.exception()
                else:
                    fut.cancel()
            if pool is not None:
                pool.shutdown(cancel_futures=True)

    async def _stream(self, bodies: list[str], summary: ImportSummary) -> None:
        """Records of components the rules must judge: through the streaming resolver, in time order."""
        graph = IdentityGraph(self.hub.store.pool, self.rules, random_page_cost=self.hub.settings.resolver_probe_cost)
        events = [parse_event(b, options=self.builder.options) for b in bodies]
        for i in range(0, len(events), 500):
            result = await graph.resolve(events[i:i + 500])
            summary.streamed += len(events[i:i + 500])
            summary.profiles_created += len(result.created)
            summary.merges += sum(len(m.losers) for m in result.merges)
            summary.conflicts += len(result.conflicts)
            summary.events_stored += len(result.new_events)
            summary.identities_attached += result.identities_attached
            summary.refused.extend({"rule": c.rule, "kind": c.kind, "value": c.value,
                                    "profiles": [str(p) for p in c.profile_ids], "detail": c.detail}
                                   for c in result.conflicts)


def input_checksum(files: Sequence[Path]) -> str:
    """SHA-256 over the input files' bytes, in the order given: the reconciliation names what it counted."""
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def households(evidence: Sequence[tuple[int, str | None, str | None]]) -> set[int]:
    """Components whose records may be more than one person by the household rule: two birth dates, or
    two first names that are not one person's; the streaming resolver judges them event by event."""
    names: dict[int, set[str]] = {}
    births: dict[int, set[str]] = {}
    for label, first_name, birth_date in evidence:
        if first_name and (key := given_name_key(first_name)) is not None:
            names.setdefault(label, set()).add(key)
        if birth_date:
            births.setdefault(label, set()).add(birth_date)
    out = {label for label, values in births.items() if len(values) > 1}
    for label, keys in names.items():
        ordered = sorted(keys)
        if any(not same_given_name(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]):
            out.add(label)
    return out


def _peak_rss_mb() -> float:
    """Peak resident memory of this process or of its largest worker process, whichever is higher."""
    usage = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return usage / (1024 * 1024) if sys.platform == "darwin" else usage / 1024
