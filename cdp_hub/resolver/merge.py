"""Merging and unmerging profiles on purpose (an operator, a fuzzy-match auto-merge, a CRM's own merge).

    merge_profiles(store, [a, b, ...])  ─▶ oldest survives; identities, events, traits move; audit row
    unmerge_profile(store, loser)       ─▶ loser comes back with the identities it brought; the events whose
                                           identities are now only its own move back; both golden records
                                           are rebuilt from their events; the pair is never auto-merged again

Both return the ``profile.merged`` / ``profile.unmerged`` event that downstream state (segments, pending
triggers, frequency caps) follows; :func:`publish_profile_event` puts it on ``cdp.profile-events``.
Locks follow the resolver's order (profile rows ascending, after any identity locks), so these run safely
while resolver workers are busy.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

from cdp_hub.bus.provenance import EVENT_SCHEMA, hub_headers
from cdp_hub.errors import CdpHubError, RetriableError
from cdp_hub.resolver.graph import (
    Observations,
    add_observations,
    identity_lock_key,
    insert_merges,
    refresh_golden,
    upsert_observations,
)
from cdp_hub.resolver.rules import IdentityRules
from cdp_hub.resolver.stage import profile_merged_event
from cdp_hub.schema.events import Event, uuid7
from cdp_hub.store import EventRepository, ProfileRepository, Store
from cdp_hub.store.profiles import Key, LockedProfile

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = [
    "MergeOutcome",
    "MergeRefused",
    "UnmergeError",
    "UnmergeOutcome",
    "merge_profiles",
    "publish_profile_event",
    "rebuild_traits",
    "unmerge_profile",
]

_ATTEMPTS = 10


class MergeRefused(CdpHubError):
    """The identity rules forbid this merge (e.g. two different crm_ids). Pass ``force=True`` to override."""


class UnmergeError(CdpHubError):
    """There is nothing to unmerge (the profile is not merged into another one)."""


@dataclass
class MergeOutcome:
    survivor: uuid.UUID
    losers: list[uuid.UUID]
    event: Event


@dataclass
class UnmergeOutcome:
    restored: uuid.UUID
    holder: uuid.UUID
    identities: list[Key] = field(default_factory=list)
    events_moved: int = 0
    event: Event | None = None


class _Retry(Exception):
    pass


async def _lock_profiles(conn: asyncpg.Connection, ids: Iterable[uuid.UUID]) -> list[LockedProfile]:
    rows = await ProfileRepository.lock_profiles(conn, sorted(set(ids), key=lambda p: p.bytes))
    if any(r.merged_into is not None for r in rows):
        raise _Retry  # merged meanwhile: look again
    return rows


async def merge_profiles(
    store: Store,
    profile_ids: Sequence[uuid.UUID],
    *,
    reason: str,
    rules: IdentityRules | None = None,
    force: bool = False,
) -> MergeOutcome | None:
    """Merge ``profile_ids`` (or the profiles they were merged into) into the oldest of them.

    Returns None when they are one profile already. Raises :class:`MergeRefused` when the rules forbid the
    merge (per-kind limits, an operator's unmerge) unless ``force``.
    """
    rules = rules or IdentityRules()
    for _ in range(_ATTEMPTS):
        try:
            async with store.pool.acquire() as conn, conn.transaction():
                return await _merge(conn, profile_ids, reason, rules, force)
        except (_Retry, asyncpg.DeadlockDetectedError):
            continue
    raise RetriableError("profiles kept changing under concurrent resolver workers; try the merge again")


async def _merge(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID], reason: str,
                 rules: IdentityRules, force: bool) -> MergeOutcome | None:
    canon = await ProfileRepository.canonical_ids(conn, profile_ids)
    missing = [str(p) for p in profile_ids if p not in canon]
    if missing:
        raise MergeRefused(f"no such profile(s): {', '.join(missing)}")
    group = sorted(set(canon.values()), key=lambda p: p.bytes)
    if len(group) < 2:
        return None
    rows = await _lock_profiles(conn, group)
    if not force:
        problems = []
        kinds: dict[str, set[str]] = defaultdict(set)
        splits: set[tuple[uuid.UUID, uuid.UUID]] = set()
        constraints = await ProfileRepository.constraints(conn, group, list(rules.limited_kinds()))
        splits.update(constraints.splits)
        for _, kind, value in constraints.values:
            kinds[kind].add(value)
        for kind, limit in rules.limited_kinds().items():
            if len(kinds[kind]) > limit:
                problems.append(f"{len(kinds[kind])} {kind} values ({', '.join(sorted(kinds[kind]))}), "
                                f"the limit is {limit}")
        if any(b in group for _, b in splits):
            problems.append("an operator split some of these profiles before, or the resolver kept them apart as two people")
        if problems:
            raise MergeRefused("merge refused by the identity rules: " + "; ".join(problems)
                               + ". Check the profiles (cdp-hub profiles show --id ...); pass force to merge anyway")
    survivor = min(rows, key=lambda r: (r.created_at, str(r.profile_id))).profile_id
    losers = [p for p in group if p != survivor]
    held = await ProfileRepository.move_profiles(conn, losers, [survivor] * len(losers))
    op = uuid7()
    await insert_merges(conn, [(survivor, loser, op, sorted(held.get(loser, [])), reason) for loser in losers])
    await refresh_golden(conn, [survivor], rules)
    cause = _operation_event(op, await ProfileRepository.first_identities(conn, survivor, 20))
    return MergeOutcome(survivor, losers, profile_merged_event(survivor, losers, cause, reason))


def _operation_event(op: uuid.UUID, identities: Sequence[Key]) -> Event:
    """A stand-in cause for events of operator actions (their identities: the profile's)."""
    return Event.model_validate({
        "event_id": op, "type": "customer.updated", "source": "cdp-hub", "occurred_at": datetime.now(UTC),
        "identities": [{"kind": k, "value": v} for k, v in identities] or [{"kind": "anonymous_id",
                                                                          "value": str(op)}],
    })


async def unmerge_profile(
    store: Store, profile_id: uuid.UUID, *, rules: IdentityRules | None = None, reason: str = "operator unmerge"
) -> UnmergeOutcome:
    """Split ``profile_id`` back out of the profile it was merged into (its latest merge)."""
    rules = rules or IdentityRules()
    for _ in range(_ATTEMPTS):
        try:
            async with store.pool.acquire() as conn, conn.transaction():
                return await _unmerge(conn, profile_id, rules, reason)
        except (_Retry, asyncpg.DeadlockDetectedError):
            continue
    raise RetriableError("profiles kept changing under concurrent resolver workers; try the unmerge again")


async def _unmerge(conn: asyncpg.Connection, loser: uuid.UUID, rules: IdentityRules, reason: str) -> UnmergeOutcome:
    merge = await ProfileRepository.last_merge(conn, loser)
    holder = await ProfileRepository.merged_into(conn, loser)
    if merge is None or holder is None:
        raise UnmergeError(f"profile {loser} is not merged into another profile; nothing to unmerge "
                           f"(see its merge history: cdp-hub profiles show --id {loser})")
    back: list[Key] = merge.identities
    locks = sorted({identity_lock_key(k, v) for k, v in back})
    if locks:
        await ProfileRepository.lock_identity_keys(conn, locks)
    rows = await ProfileRepository.lock_profiles(conn, sorted([holder, loser], key=lambda p: p.bytes))
    current = {r.profile_id: r.merged_into for r in rows}
    if current.get(holder) is not None or current.get(loser) != holder:
        raise _Retry

    # The loser, and the profiles merged into it before, come back.
    await ProfileRepository.restore(conn, loser, holder)
    await ProfileRepository.give_back_identities(conn, loser, holder, back)

    # Events follow their identities: those that now point only at the loser's side move back.
    owners = await ProfileRepository.identity_owners(conn, [holder, loser])
    moved_ids, moved_at = [], []
    for event_id, occurred_at, ids in await EventRepository.identities_on(conn, holder):
        sides = {owners.get((i["kind"], i["value"])) for i in ids} - {None}
        if sides == {loser}:
            moved_ids.append(event_id)
            moved_at.append(occurred_at)
    if moved_ids:
        await EventRepository.reassign(conn, loser, moved_ids, moved_at)
    await rebuild_traits(conn, [holder, loser], rules)

    await ProfileRepository.close_merge(conn, merge, holder, loser, reason)
    cause = _operation_event(uuid7(), back)
    event = profile_merged_event(holder, [loser], cause, reason, event_type="profile.unmerged")
    return UnmergeOutcome(loser, holder, back, len(moved_ids), event)


async def rebuild_traits(conn: asyncpg.Connection, profile_ids: Sequence[uuid.UUID], rules: IdentityRules) -> None:
    """Recompute trait observations and golden records of ``profile_ids`` from their stored events."""
    await ProfileRepository.delete_traits(conn, profile_ids)
    obs: Observations = {}
    for profile_id, body in await EventRepository.bodies_of(conn, profile_ids):
        add_observations(obs, profile_id, Event.model_validate(body))
    await upsert_observations(conn, obs)
    await refresh_golden(conn, profile_ids, rules)


async def publish_profile_event(hub: Hub, event: Event) -> None:
    """Put a profile.merged / profile.unmerged event on ``cdp.profile-events``, keyed by its profile."""
    await hub.bus.publish(hub.topics.profile_events, event.to_json(), key=str(event.profile_id).encode(),
                          headers=hub_headers(EVENT_SCHEMA, ("cdp.type", event.type.encode())))
