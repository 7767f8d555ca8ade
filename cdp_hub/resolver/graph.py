"""The identity graph: resolve a micro-batch of events to profiles, set-wise, in one transaction.

    lock identity keys (advisory, sorted) ─▶ look up identities, blocked values, explicit profile ids
      ─▶ lock the profiles found (FOR UPDATE, sorted; one merged meanwhile ─▶ retry the batch)
      ─▶ replay the batch in memory, event by event, under the rules (new / attach / merge / conflict)
      ─▶ write the difference with array statements: profiles, merges, identities, events, traits, golden

The in-memory replay keeps event-by-event semantics (the order of events inside a batch matters to the
per-kind limits) while the database sees a few set statements per batch, not a few per event.

Lock order is global: every identity-key lock is taken before any profile row lock, each group in
ascending order, so concurrent resolver workers cannot deadlock on each other; a rare cycle with other
writers is detected by PostgreSQL and the batch is retried.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from cdp_hub.errors import RecordError, RetriableError
from cdp_hub.resolver.fuzzy.text import given_name_key, same_given_name
from cdp_hub.resolver.rules import BlockList, IdentityRules
from cdp_hub.resolver.survivorship import event_observations
from cdp_hub.schema.events import Event, uuid7
from cdp_hub.schema.identities import DEFAULT_OPTIONS, NormalizationOptions, normalize_identity
from cdp_hub.store.events import EventRepository
from cdp_hub.store.profiles import Key, ProfileRepository

__all__ = [
    "RESOLVER_NAMESPACE",
    "BatchResult",
    "Conflict",
    "GraphFragment",
    "IdentityGraph",
    "IdentityRejected",
    "Merge",
    "ResolutionError",
    "add_observations",
    "canonical_json",
    "identity_lock_key",
    "insert_merges",
    "merge_id",
    "refresh_golden",
    "upsert_observations",
    "usable_keys",
]

RESOLVER_NAMESPACE = uuid.UUID("3d0b8a7e-5a57-5f21-b6a4-8e2c1c0f9d42")
_MAX_ATTEMPTS = 10
_SPLIT = "#split"


class ResolutionError(RecordError):
    """The event cannot be attached to any profile (every identity blocked or unusable)."""

    failure_type = "resolution_error"


class IdentityRejected(RecordError):
    """One identity of a record could not be normalized (a phone ``00000``): that identity is dropped, the
    record goes on with the others, and this names the dropped field and value in the dead-letter queue."""

    failure_type = "identity_rejected"


class _ConcurrentChange(Exception):
    """A profile this batch locked was merged by another worker meanwhile: retry with fresh data."""


def identity_lock_key(kind: str, value: str) -> int:
    """The 32-bit advisory-lock key of an identity (collisions only make two keys share a lock)."""
    digest = hashlib.blake2b(f"{kind}\x1f{value}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass
class Merge:
    """One merge step: ``losers`` merged into ``survivor`` because of ``event_id``."""

    survivor: uuid.UUID
    losers: list[uuid.UUID]
    event_id: uuid.UUID
    identities: list[Key]
    reason: str


@dataclass
class Conflict:
    """Something the rules refused: recorded in ``identity_conflicts``, visible to operators."""

    rule: str
    profile_ids: list[uuid.UUID]
    event_id: uuid.UUID
    detail: str
    kind: str | None = None
    value: str | None = None

    @property
    def conflict_id(self) -> uuid.UUID:
        ids = ",".join(sorted(str(p) for p in self.profile_ids))
        return uuid.uuid5(RESOLVER_NAMESPACE, f"conflict:{self.rule}:{self.kind}:{self.value}:{ids}")


@dataclass
class BatchItem:
    """An event of the batch with its usable identity keys (strongest first)."""

    event: Event
    keys: list[Key]
    explicit: uuid.UUID | None = None
    # Identities the source says are this person (a CRM's own merge): their profiles are merged in
    # whatever the limits say, and the identities attached.
    forced: list[Key] = field(default_factory=list)
    raw: bytes | None = None
    """The event as the hub wrote it, when it has no ``profile_id`` (a trusted record): its JSON with the
    profile is these bytes with ``profile_id`` spliced in, not the model serialized again."""


@dataclass
class BatchResult:
    """What resolving a batch did, for the stage's output and for tests."""

    profile_of: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # event id -> profile id
    created: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)  # (profile id, event id)
    merges: list[Merge] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    new_events: set[uuid.UUID] = field(default_factory=set)
    event_json: dict[uuid.UUID, bytes] = field(default_factory=dict)  # each event with its profile_id
    identities_attached: int = 0
    attempts: int = 1


@dataclass
class _Profile:
    profile_id: uuid.UUID
    created_at: datetime
    created_by_event: uuid.UUID | None
    new: bool = False
    merged_into: uuid.UUID | None = None


class GraphFragment:
    """The part of the graph a batch touches, replayed event by event in memory (also used on its own, from
    an empty graph, by the dry run).

    Refusal is a decision about the whole record: when a rule refuses to let a record join a profile (a second
    account id of one system, first names or birth dates that disagree across a phone or e-mail, an operator's
    split), the record joins none of that profile; it goes to the profiles it may join, or to a new one, and
    the value that led to the refused profile becomes *shared*: a ``shared_identity`` conflict names both
    profiles, the value stays a contact point of both and links no record from then on (a household value
    still links a record to the one holder whose first name agrees).
    """

    def __init__(self, rules: IdentityRules, now: datetime) -> None:
        self.rules = rules
        self.limits = rules.limited_kinds()
        self.now = now
        self.owner: dict[Key, uuid.UUID] = {}
        self.profiles: dict[uuid.UUID, _Profile] = {}
        self.limited: dict[uuid.UUID, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.splits: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
        self.absorbed: dict[uuid.UUID, set[uuid.UUID]] = {}  # live profile -> profiles merged into it
        self.new_identities: list[tuple[Key, str, datetime]] = []  # key, source, first seen
        self.seen_keys: dict[Key, datetime] = {}
        # Shared values -> the profiles holding them; new rows (key, profile, event, first seen) to store.
        self.shared: dict[Key, set[uuid.UUID]] = {}
        self.new_shared: list[tuple[Key, uuid.UUID, uuid.UUID, datetime]] = []
        self.kept_apart: list[tuple[uuid.UUID, uuid.UUID, str]] = []  # refused pairs, never merged automatically
        # What the household rule compares: given-name keys and birth dates each profile was seen with.
        self.names: dict[uuid.UUID, set[str]] = {}
        self.births: dict[uuid.UUID, set[str]] = {}
        self.result = BatchResult()

    def canon(self, pid: uuid.UUID) -> uuid.UUID:
        prof = self.profiles[pid]
        while prof.merged_into is not None:
            prof = self.profiles[prof.merged_into]
        return prof.profile_id

    def observe_person(self, pid: uuid.UUID, first_name: str | None, birth_date: str | None) -> None:
        """Remember that ``pid`` was seen with this first name and birth date (for the household rule)."""
        if first_name:
            name = given_name_key(first_name)
            if name:
                self.names.setdefault(pid, set()).add(name)
        if birth_date:
            self.births.setdefault(pid, set()).add(birth_date)

    def _new_profile(self, event: Event) -> uuid.UUID:
        pid = uuid7()
        # Profiles born in one batch keep their birth order, so "oldest survives" is well defined.
        created = self.now + timedelta(microseconds=len(self.result.created))
        self.profiles[pid] = _Profile(pid, created, event.event_id, new=True)
        self.result.created.append((pid, event.event_id))
        return pid

    def _fits(self, group: list[uuid.UUID], extra: uuid.UUID,
              own: dict[str, set[str]] | None = None) -> str | None:
        """None when ``extra`` may join ``group`` (and a record holding ``own`` limited values) under the
        rules, else the rule's name for the refusal (a limited kind, or the operator's split)."""
        if not group:
            # The usual case, a known customer seen again: one profile alone is never split from itself and
            # already holds its limited values within the limits; only the record's own values can exceed.
            if own:
                held = self.limited[extra]
                for kind, values in own.items():
                    limit = self.limits[kind]
                    if len(values) > limit or len(values | held.get(kind, set())) > limit:
                        return kind
            return None
        if self.splits:
            members = set(group).union(*(self.absorbed.get(g, set()) for g in group))
            joining = {extra} | self.absorbed.get(extra, set())
            if any(self.splits.get(p, set()) & joining for p in members) or \
                    any(self.splits.get(p, set()) & members for p in joining):
                return _SPLIT
        for kind, limit in self.limits.items():
            found: set[str] = set(own.get(kind, ())) if own else set()
            for pid in [*group, extra]:
                found |= self.limited[pid].get(kind, set())
            if len(found) > limit:
                return kind
        return None

    def _person(self, event: Event) -> tuple[str | None, str | None]:
        """The record's given-name key and birth date (ISO), when it states them."""
        traits = event.traits
        first = traits.first_name
        birth = traits.birth_date
        return (given_name_key(first) if first else None), (birth.isoformat() if birth else None)

    def _disagrees(self, person: tuple[str | None, str | None], pid: uuid.UUID) -> str | None:
        """Why the record's person is not ``pid``'s (another first name, another birth date), or None."""
        name, birth = person
        if birth is not None and (births := self.births.get(pid)) and birth not in births:
            return "birth dates differ"
        if name is not None and (names := self.names.get(pid)) and not any(same_given_name(name, n) for n in names):
            return "first names differ"
        return None

    def _household_holder(self, key: Key, person: tuple[str | None, str | None]) -> uuid.UUID | None:
        """The one profile holding shared value ``key`` that is the record's person by first name (and birth
        date, when both have one); None when there is not exactly one, or the value is held too widely."""
        holders = {self.canon(p) for p in self.shared.get(key, ()) if p in self.profiles}
        if person[0] is None or len(holders) > self.rules.household_max_profiles:
            return None
        agree = [p for p in holders if person[0] in self.names.get(p, ()) and self._disagrees(person, p) is None]
        return agree[0] if len(agree) == 1 else None

    def apply(self, item: BatchItem) -> uuid.UUID:
        event = item.event
        candidates: list[uuid.UUID] = []
        via: dict[uuid.UUID, Key | None] = {}
        if item.explicit is not None and item.explicit in self.profiles:
            pid = self.canon(item.explicit)
            candidates.append(pid)
            via[pid] = None
        forced: set[uuid.UUID] = set()
        person = self._person(event) if self.rules.household_rule else (None, None)
        for key in [*item.keys, *item.forced]:
            self.seen_keys[key] = max(self.seen_keys.get(key, event.occurred_at), event.occurred_at)
            if key in self.shared and key not in item.forced:
                owner = self._household_holder(key, person)
            else:
                owner = self.owner.get(key)
            if owner is None:
                continue
            pid = self.canon(owner)
            if pid not in via:
                candidates.append(pid)
                via[pid] = key
                if key in item.forced and key not in item.keys:
                    forced.add(pid)
        if not candidates:
            target = self._new_profile(event)
        else:
            target = self._join(item, candidates, via, forced, person)
        self._attach(item, target, person)
        final = self.canon(target)
        self.result.profile_of[event.event_id] = final
        return final

    def _join(self, item: BatchItem, candidates: list[uuid.UUID], via: dict[uuid.UUID, Key | None],
              forced: set[uuid.UUID], person: tuple[str | None, str | None]) -> uuid.UUID:
        """The profile the record goes to: the candidates it may join (merged, oldest surviving), or a new
        one when it may join none; every refused candidate makes the value that led to it shared."""
        event = item.event
        cap = self.rules.max_merge_size
        if len([c for c in candidates if c not in forced]) > cap:
            self.result.conflicts.append(Conflict(
                "max_merge_size", sorted(candidates), event.event_id,
                f"event would merge {len(candidates)} profiles; the cap is {cap}",
            ))
            return candidates[0]
        own: dict[str, set[str]] = {}
        for kind, value in item.keys:
            if kind in self.limits:
                own.setdefault(kind, set()).add(value)
        group: list[uuid.UUID] = []
        refused: list[tuple[uuid.UUID, str]] = []
        for pid in candidates:
            key = via[pid]
            if pid in forced or key is None:  # the source's own merge, or the profile the event names
                group.append(pid)
                continue
            why = self._refusal(group, pid, key, own, person)
            if why is None:
                group.append(pid)
            else:
                refused.append((pid, why))
        if not group:
            target = self._new_profile(event)
        elif len(group) == 1:
            target = group[0]
        else:
            target = self._merge(item, group, via, forced)
        for pid, why in refused:
            self._refused(item, pid, via[pid], target, why)
        return target

    def _refusal(self, group: list[uuid.UUID], pid: uuid.UUID, key: Key, own: dict[str, set[str]],
                 person: tuple[str | None, str | None]) -> str | None:
        """Why the record (with ``group`` accepted so far) may not join ``pid``, reached through ``key``."""
        kind = self._fits(group, pid, own)
        if kind == _SPLIT:
            return "kept apart (an operator's split or an earlier refusal); not merged automatically"
        if kind is not None:
            return f"the profiles would hold more than {self.limits[kind]} {kind} value(s)"
        if key[0] not in self.limits and self.rules.household_rule:
            why = self._disagrees(person, pid)
            for member in group:  # the record would merge pid into them: two people by name or birth date?
                if why is not None:
                    break
                why = self._profiles_disagree(member, pid)
            if why is not None:
                return f"{why}: a household's or a shared {key[0]}"
        return None

    def _profiles_disagree(self, a: uuid.UUID, b: uuid.UUID) -> str | None:
        """Why profiles ``a`` and ``b`` are two people by what they were seen with, or None."""
        births_a, births_b = self.births.get(a), self.births.get(b)
        if births_a and births_b and not births_a & births_b:
            return "birth dates differ"
        names_a, names_b = self.names.get(a), self.names.get(b)
        if names_a and names_b and not any(same_given_name(x, y) for x in names_a for y in names_b):
            return "first names differ"
        return None

    def _refused(self, item: BatchItem, pid: uuid.UUID, key: Key | None, target: uuid.UUID, why: str) -> None:
        """Record a refusal; the value that led to ``pid`` is shared by it and ``target`` from now on (an
        account id is not: it stays its profile's key)."""
        event = item.event
        target = self.canon(target)
        rule = "unmerged" if why.startswith("kept apart") else "shared_identity"
        self.result.conflicts.append(Conflict(
            rule, sorted([pid, target]), event.event_id, why,
            kind=key[0] if key else None, value=key[1] if key else None,
        ))
        if rule == "shared_identity" and pid != target:
            # Two people: a later record that reaches both does not merge them (the refused record would
            # then sit in the profile it was refused from).
            self.splits[pid].add(target)
            self.splits[target].add(pid)
            self.kept_apart.append((pid, target, f"refused: {why}"))
        if key is None or key[0] in self.limits or rule == "unmerged":
            return
        holders = self.shared.setdefault(key, set())
        for holder in (pid, target):
            if holder not in holders:
                holders.add(holder)
                self.new_shared.append((key, holder, event.event_id, event.occurred_at))

    def _merge(self, item: BatchItem, group: list[uuid.UUID], via: dict[uuid.UUID, Key | None],
               forced: set[uuid.UUID]) -> uuid.UUID:
        event = item.event
        survivor = min(group, key=lambda p: (self.profiles[p].created_at, str(p)))
        losers = [p for p in group if p != survivor]
        for loser in losers:
            self.profiles[loser].merged_into = survivor
            self.absorbed.setdefault(survivor, set()).update({loser}, self.absorbed.pop(loser, set()))
            for kind, values in self.limited.get(loser, {}).items():
                self.limited[survivor][kind] |= values
            if loser in self.names:
                self.names.setdefault(survivor, set()).update(self.names[loser])
            if loser in self.births:
                self.births.setdefault(survivor, set()).update(self.births[loser])
        linking = [k for p in group if (k := via[p]) is not None]
        reason = "shared identities: " + ", ".join(f"{k}:{v}" for k, v in linking)
        if item.explicit is not None:
            reason += f"; event addressed to profile {item.explicit}"
        if forced & set(group):
            reason += f"; merged in the source system ({event.source})"
        self.result.merges.append(Merge(survivor, losers, event.event_id, linking, reason))
        return survivor

    def _attach(self, item: BatchItem, target: uuid.UUID, person: tuple[str | None, str | None]) -> None:
        pid = self.canon(target)
        event = item.event
        for key in [*item.keys, *item.forced]:
            holders = self.shared.get(key)
            if holders is not None and key not in item.forced:
                # A shared value: a contact point of this profile too, never a link.
                if not any(self.canon(h) == pid for h in holders if h in self.profiles):
                    holders.add(pid)
                    self.new_shared.append((key, pid, event.event_id, event.occurred_at))
                continue
            if key in self.owner:
                continue
            kind, value = key
            limit = self.limits.get(kind)
            if key in item.forced:
                self.limited[pid][kind].add(value)
            elif limit is not None:
                held = self.limited[pid][kind]
                if value not in held and len(held) >= limit:
                    self.result.conflicts.append(Conflict(
                        "max_per_profile", [pid], event.event_id,
                        f"profile already holds {limit} {kind} value(s): {', '.join(sorted(held))}",
                        kind=kind, value=value,
                    ))
                    continue
                held.add(value)
            self.owner[key] = pid
            self.new_identities.append((key, event.source, event.occurred_at))
        name, birth = person
        if name is not None:
            self.names.setdefault(pid, set()).add(name)
        if birth is not None:
            self.births.setdefault(pid, set()).add(birth)


def event_json_with_profile(event: Event, profile_id: uuid.UUID, raw: bytes | None = None) -> bytes:
    """``event`` as JSON with ``profile_id`` set: what ``model_copy(update=...).to_json()`` gives, without
    the copy (``profile_id`` is the model's last field, so it goes last).

    ``raw`` is the event's JSON as the hub wrote it (a trusted record without ``profile_id``: a JSON object
    holding the same values, tests/test_parse_once.py): the profile is spliced in after its last member,
    without serializing the model again (bench/resolver_stream.py).
    """
    if raw is not None and event.profile_id is None and raw[-1:] == b"}":
        return raw[:-1] + b',"profile_id":"' + str(profile_id).encode() + b'"}'
    if event.profile_id is None:
        raw = event.to_json()
        return raw[:-1] + b',"profile_id":"' + str(profile_id).encode() + b'"}'
    return event.model_copy(update={"profile_id": profile_id}).to_json()


def usable_keys(event: Event, rules: IdentityRules, blocked: BlockList) -> list[Key]:
    """``event``'s identities that may link profiles under ``rules`` (not blocked, linking kinds), strongest
    kind first."""
    keys = []
    for ident in event.identities:
        key = (ident.kind, ident.value)
        if key in blocked or not rules.kind_rule(ident.kind).links:
            continue
        keys.append(key)
    keys.sort(key=lambda k: -rules.priority(k[0]))
    return keys


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal values give equal text (trait values are compared by it)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


class IdentityGraph:
    """Resolves micro-batches of events against the identity graph in the store.

    Its statements are :class:`cdp_hub.store.ProfileRepository`'s and :class:`cdp_hub.store.EventRepository`'s
    that run on a caller's connection (static methods: the graph holds a pool, not a store).
    """

    def __init__(self, pool: asyncpg.Pool, rules: IdentityRules | None = None,
                 options: NormalizationOptions = DEFAULT_OPTIONS, *,
                 random_page_cost: float | None = None) -> None:
        self.pool = pool
        self.rules = rules or IdentityRules()
        self.options = options
        self._blocked = self.rules.blocked_set(options)
        # A batch probes a few hundred keys into indexes in memory; at the server's default price of a probe
        # (random_page_cost 4, a spinning disk's) the planner reads tables of tens of thousands of rows whole
        # instead: 2-5x the time per statement, the resolver's PostgreSQL CPU per event 1.4x (docs/operations.md,
        # "Query plans"). SET LOCAL: the batch's transaction only, never the pool's other users (segment
        # recomputes, reports: whole-table aggregates that the cheaper probe made up to 3x slower).
        self._probe_cost = (f"SET LOCAL random_page_cost = {float(random_page_cost)!r}"
                            if random_page_cost is not None else None)

    def usable_keys(self, event: Event) -> list[Key]:
        """The event's identities that may link profiles, strongest kind first."""
        return usable_keys(event, self.rules, self._blocked)

    def merged_identities(self, event: Event) -> list[Key]:
        """``properties.merged_identities`` of a source's own merge (e.g. contacts merged in the CRM),
        normalized; values that do not normalize or are blocked are left out."""
        raw = event.properties.get("merged_identities")
        if not isinstance(raw, list):
            return []
        out: list[Key] = []
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("kind"), str):
                continue
            try:
                key = normalize_identity(item["kind"], str(item.get("value", "")), self.options)
            except ValueError:
                continue
            if key not in self._blocked and self.rules.kind_rule(key[0]).links and key not in out:
                out.append(key)
        return out

    async def resolve(self, events: Sequence[Event], keys: Sequence[list[Key]] | None = None,
                      raw: Sequence[bytes | None] | None = None) -> BatchResult:
        """Resolve ``events`` (already parsed) in one transaction; retried on a concurrent merge.

        ``keys`` are the events' :meth:`usable_keys` when the caller computed them already; ``raw`` their JSON
        as the hub wrote it, where it can take the profile id as it is (see :class:`BatchItem`). Events without
        any usable identity and without a known ``profile_id`` are left out of the result (the stage sends
        them to the dead-letter queue).
        """
        unique: dict[uuid.UUID, BatchItem] = {}
        for i, e in enumerate(events):  # a redelivery inside one batch is the same event: resolve it once
            if e.event_id not in unique:
                unique[e.event_id] = BatchItem(e, list(keys[i]) if keys is not None else self.usable_keys(e),
                                               e.profile_id, self.merged_identities(e),
                                               raw[i] if raw is not None else None)
        items = list(unique.values())
        last: Exception | None = None
        async with self.pool.acquire() as conn:
            for attempt in range(1, _MAX_ATTEMPTS + 1):
                try:
                    async with conn.transaction():
                        if self._probe_cost is not None:
                            await conn.execute(self._probe_cost)
                        result = await self._resolve(conn, items)
                    result.attempts = attempt
                    return result
                except (_ConcurrentChange, asyncpg.DeadlockDetectedError,
                        asyncpg.SerializationError, asyncpg.UniqueViolationError) as exc:
                    last = exc
        raise RetriableError(f"identity resolution kept colliding with concurrent workers: {last}")

    async def _resolve(self, conn: asyncpg.Connection, items: list[BatchItem]) -> BatchResult:
        all_keys = sorted({k for it in items for k in (*it.keys, *it.forced)})
        lock_ids = sorted({identity_lock_key(k, v) for k, v in all_keys})
        if lock_ids:
            await ProfileRepository.lock_identity_keys(conn, lock_ids)
        explicit = sorted({it.explicit for it in items if it.explicit is not None}, key=str)
        found = await ProfileRepository.lookup(conn, all_keys, explicit)
        owner, last_seen, blocked, explicit_to = found.owner, found.last_seen, found.blocked, found.explicit_to
        holders = {p for ps in found.shared.values() for p in ps}
        pids = sorted(set(owner.values()) | set(explicit_to.values()) | holders, key=lambda p: p.bytes)

        now = datetime.now(UTC)
        frag = GraphFragment(self.rules, now)
        if pids:
            locked = await ProfileRepository.lock_profiles(conn, pids)
            for row in locked:
                if row.merged_into is not None:
                    raise _ConcurrentChange(str(row.profile_id))
                frag.profiles[row.profile_id] = _Profile(row.profile_id, row.created_at, row.created_by_event)
                frag.observe_person(row.profile_id, row.first_name, row.birth_date)
            if len(locked) != len(pids):
                raise _ConcurrentChange("a profile disappeared")
            constraints = await ProfileRepository.constraints(conn, pids, list(self.rules.limited_kinds()))
            for pid, other in constraints.splits:
                frag.splits[pid].add(other)
            for pid, kind, value in constraints.values:
                frag.limited[pid][kind].add(value)
        frag.owner = {k: p for k, p in owner.items() if k not in blocked}
        frag.shared = {k: ps for k, ps in found.shared.items() if k not in blocked}

        for it in items:
            if blocked:
                it.keys = [k for k in it.keys if k not in blocked]
                it.forced = [k for k in it.forced if k not in blocked]
            it.explicit = explicit_to.get(it.explicit) if it.explicit is not None else None
            if not it.keys and it.explicit is None:
                continue
            frag.apply(it)
        await self._write(conn, frag, items, last_seen)
        frag.result.identities_attached = len(frag.new_identities)
        return frag.result

    async def _block_spread_values(self, conn: asyncpg.Connection, frag: GraphFragment) -> None:
        """Block values seen on more than ``max_profiles_per_value`` profiles (a store's shared phone at the
        till, a placeholder e-mail): refused on that many in open conflicts, or shared by that many. They are
        unlinked and never link again."""
        limit = self.rules.max_profiles_per_value
        conflicts = frag.result.conflicts
        keys = sorted({(c.kind, c.value) for c in conflicts if c.kind is not None and c.value is not None})
        if limit is None:
            return
        spread = [s for s in await ProfileRepository.conflict_spread(conn, keys) if s[2] > limit] if keys else []
        found = {(k, v) for k, v, _ in spread}
        for key in sorted({k for k, _, _, _ in frag.new_shared} - found):
            holders = {frag.canon(p) for p in frag.shared.get(key, ()) if p in frag.profiles}
            if len(holders) > limit:
                spread.append((key[0], key[1], len(holders)))
        if not spread:
            return
        await ProfileRepository.block_and_unlink(
            conn, [(k, v) for k, v, _ in spread],
            [f"seen on {n} profiles (more than {limit}); blocked automatically" for _, _, n in spread])

    async def _write(self, conn: asyncpg.Connection, frag: GraphFragment, items: list[BatchItem],
                     last_seen: dict[Key, datetime]) -> None:
        result = frag.result
        canon = frag.canon
        # Profiles born in this batch (some possibly merged in it already).
        if result.created:
            new = [frag.profiles[p] for p, _ in result.created]
            await ProfileRepository.insert_profiles(
                conn, [p.profile_id for p in new], [p.created_by_event for p in new], [p.created_at for p in new],
                [canon(p.profile_id) if canon(p.profile_id) != p.profile_id else None for p in new],
            )
        # Existing profiles merged away: point them, and everything they own, at the final survivor.
        old_losers = [p.profile_id for p in frag.profiles.values() if not p.new and p.merged_into is not None]
        held: dict[uuid.UUID, list[Key]] = defaultdict(list)
        if old_losers:
            held = await ProfileRepository.move_profiles(conn, old_losers, [canon(p) for p in old_losers])
        if result.merges:
            # The identities each loser held when it was merged: what an unmerge gives back.
            fresh = {key for key, _, _ in frag.new_identities}
            for key, owner in frag.owner.items():
                prof = frag.profiles[owner]
                chain = [prof.profile_id]
                while prof.merged_into is not None:
                    prof = frag.profiles[prof.merged_into]
                    chain.append(prof.profile_id)
                for pid in chain[:-1]:
                    if frag.profiles[pid].new or key in fresh:
                        held[pid].append(key)
            for m in result.merges:
                m.survivor = canon(m.survivor)  # audit rows name the profile that holds the data now
            await insert_merges(conn, [(m.survivor, loser, m.event_id, sorted(held.get(loser, [])), m.reason)
                                       for m in result.merges for loser in m.losers])
        if frag.new_identities:
            await ProfileRepository.insert_identities(
                conn, [key for key, _, _ in frag.new_identities],
                [canon(frag.owner[key]) for key, _, _ in frag.new_identities],
                [s for _, s, _ in frag.new_identities], [t for _, _, t in frag.new_identities],
            )
        if frag.kept_apart:
            await ProfileRepository.keep_apart(conn, [canon(a) for a, _, _ in frag.kept_apart],
                                               [canon(b) for _, b, _ in frag.kept_apart],
                                               [r for _, _, r in frag.kept_apart])
        if frag.new_shared:
            await ProfileRepository.insert_shared(
                conn, [k for k, _, _, _ in frag.new_shared], [canon(p) for _, p, _, _ in frag.new_shared],
                [e for _, _, e, _ in frag.new_shared], [t for _, _, _, t in frag.new_shared])
        # last_seen is refreshed at most hourly per identity: cheap for streaming, good enough for audits.
        touched = [(k, t) for k, t in frag.seen_keys.items()
                   if k in last_seen and t - last_seen[k] > timedelta(hours=1)]
        if touched:
            await ProfileRepository.touch_identities(conn, [k for k, _ in touched], [t for _, t in touched])

        # Events, then the trait observations of the events that are new (a replay observes nothing twice).
        resolved: list[Event] = []
        for it in items:
            eid = it.event.event_id
            if eid in result.profile_of:
                pid = result.profile_of[eid] = canon(result.profile_of[eid])
                result.event_json[eid] = event_json_with_profile(it.event, pid, it.raw)
                resolved.append(it.event)
        if resolved:
            result.new_events = await EventRepository.insert_resolved(
                conn, [e.event_id for e in resolved], [e.occurred_at for e in resolved],
                [result.profile_of[e.event_id] for e in resolved], [e.type for e in resolved],
                [e.source for e in resolved], [e.source_record_id for e in resolved],
                [e.received_at for e in resolved], [result.event_json[e.event_id].decode() for e in resolved],
            )
        golden_for: set[uuid.UUID] = {canon(m.survivor) for m in result.merges}
        obs: Observations = {}
        for ev in resolved:
            if ev.event_id not in result.new_events:
                continue
            pid = result.profile_of[ev.event_id]
            if add_observations(obs, pid, ev):
                golden_for.add(pid)
        await upsert_observations(conn, obs)
        if golden_for:
            await refresh_golden(conn, sorted(golden_for, key=str), self.rules)
        if result.conflicts:
            cs = result.conflicts
            await ProfileRepository.insert_conflicts(
                conn, [canon(c.profile_ids[0]) for c in cs], [c.conflict_id for c in cs],
                [c.rule for c in cs], [c.kind for c in cs], [c.value for c in cs],
                [canonical_json([str(p) for p in c.profile_ids]) for c in cs], [c.event_id for c in cs],
                [c.detail for c in cs],
            )
        if result.conflicts or frag.new_shared:
            await self._block_spread_values(conn, frag)


# (profile, trait, source, value as canonical JSON) -> [last observed, first seen, count]
Observations = dict[tuple[uuid.UUID, str, str, str], list[Any]]


def add_observations(obs: Observations, profile_id: uuid.UUID, event: Event) -> bool:
    """Add what ``event`` asserts about ``profile_id`` to ``obs``; False when it asserts nothing."""
    pairs = event_observations(event)
    for trait, value in pairs:
        key = (profile_id, trait, event.source, canonical_json(value))
        agg = obs.get(key)
        if agg is None:
            obs[key] = [event.occurred_at, event.occurred_at, 1]
        else:
            agg[0] = max(agg[0], event.occurred_at)
            agg[1] = min(agg[1], event.occurred_at)
            agg[2] += 1
    return bool(pairs)


async def upsert_observations(conn: asyncpg.Connection, obs: Observations) -> None:
    """Store aggregated observations in ``profile_traits`` (counts add up, time bounds widen)."""
    if not obs:
        return
    keys = list(obs)
    await ProfileRepository.upsert_traits(
        conn, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
        [k[3] for k in keys], [obs[k][0] for k in keys], [obs[k][1] for k in keys], [obs[k][2] for k in keys],
    )


async def insert_merges(
    conn: asyncpg.Connection,
    rows: Sequence[tuple[uuid.UUID, uuid.UUID, uuid.UUID | None, Sequence[Key], str]],
) -> None:
    """Audit rows ``(survivor, loser, event id, identities the loser held, reason)``; replays add nothing."""
    if not rows:
        return
    await ProfileRepository.insert_merges(
        conn,
        [r[0] for r in rows],
        [merge_id(r[2], r[1]) for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [canonical_json([{"kind": k, "value": v} for k, v in r[3]]) for r in rows],
        [r[4] for r in rows],
    )


def merge_id(event_id: uuid.UUID | None, loser: uuid.UUID) -> uuid.UUID:
    """Deterministic id of the merge of ``loser`` caused by ``event_id`` (a replay finds the same row)."""
    return uuid.uuid5(RESOLVER_NAMESPACE, f"merge:{event_id}:{loser}")


async def refresh_golden(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID], rules: IdentityRules) -> None:
    """Recompute ``profiles.golden`` of ``profile_ids`` from their trait observations, in one SQL statement
    (survivorship by the rules; see :meth:`cdp_hub.store.ProfileRepository.refresh_golden`)."""
    names = sorted(rules.traits)
    ranks = [(n, src, len(rules.traits[n].sources) - i) for n in names
             for i, src in enumerate(rules.traits[n].sources)]
    await ProfileRepository.refresh_golden(conn, profile_ids, traits=names,
                                           strategies=[rules.traits[n].strategy for n in names],
                                           default_strategy=rules.default_strategy, source_ranks=ranks)


