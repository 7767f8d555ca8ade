"""Reading profiles: by id (following merges) or by any identity, with golden record, identities,
provenance, recent events, merge history and open conflicts. Used by the CLI, the admin HTTP API, and
by other stages that need a whole profile rather than ``profiles.golden``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cdp_hub.schema.identities import DEFAULT_OPTIONS, NormalizationOptions, normalize_identity
from cdp_hub.store import Store

__all__ = [
    "ConflictView",
    "EventView",
    "IdentityView",
    "MergeView",
    "ProfileView",
    "TraitView",
    "canonical_profile_id",
    "find_profile",
    "load_profile",
]


class IdentityView(BaseModel):
    kind: str
    value: str
    source: str | None = None
    first_seen: datetime
    last_seen: datetime


class TraitView(BaseModel):
    """One provenance row: ``source`` said ``trait`` = ``value`` (``seen_count`` times, first..last)."""

    trait: str
    source: str
    value: Any
    first_seen: datetime
    observed_at: datetime
    seen_count: int


class EventView(BaseModel):
    event_id: uuid.UUID
    type: str
    source: str
    occurred_at: datetime
    properties: dict[str, Any] = Field(default_factory=dict)


class MergeView(BaseModel):
    merge_id: uuid.UUID
    surviving_profile_id: uuid.UUID
    merged_profile_id: uuid.UUID
    event_id: uuid.UUID | None
    identities: list[dict[str, str]]
    reason: str
    merged_at: datetime
    undone_at: datetime | None = None


class ConflictView(BaseModel):
    conflict_id: uuid.UUID
    rule: str
    kind: str | None
    value: str | None
    profile_ids: list[uuid.UUID]
    event_id: uuid.UUID | None
    detail: str
    detected_at: datetime
    resolved_at: datetime | None = None


class ProfileView(BaseModel):
    """A profile as an operator or another stage sees it."""

    model_config = ConfigDict(extra="forbid")

    profile_id: uuid.UUID
    requested_id: uuid.UUID | None = Field(None, description="the id asked for, when it was merged into this one")
    golden: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    created_by_event: uuid.UUID | None
    identities: list[IdentityView]
    traits: list[TraitView]
    recent_events: list[EventView]
    merges: list[MergeView]
    conflicts: list[ConflictView]


async def canonical_profile_id(store: Store, profile_id: uuid.UUID) -> uuid.UUID | None:
    """The profile that holds ``profile_id``'s data now (itself, or the one it was merged into)."""
    current = profile_id
    for _ in range(16):  # merged_into is kept one hop deep; the bound only guards against a damaged graph
        row = await store.fetchrow("SELECT merged_into FROM profiles WHERE profile_id = $1", current)
        if row is None:
            return None
        if row["merged_into"] is None:
            return current
        current = row["merged_into"]
    return current


async def load_profile(store: Store, profile_id: uuid.UUID | str, *, events_limit: int = 20) -> ProfileView | None:
    """The profile ``profile_id`` (following merges), or None when no such profile exists."""
    requested = profile_id if isinstance(profile_id, uuid.UUID) else uuid.UUID(str(profile_id))
    pid = await canonical_profile_id(store, requested)
    if pid is None:
        return None
    row = await store.fetchrow(
        "SELECT profile_id, golden, version, created_at, updated_at, created_by_event FROM profiles"
        " WHERE profile_id = $1", pid)
    if row is None:
        return None
    identities = await store.fetch(
        "SELECT kind, value, source, first_seen, last_seen FROM identities WHERE profile_id = $1"
        " ORDER BY kind, value", pid)
    traits = await store.fetch(
        "SELECT trait, source, value, first_seen, observed_at, seen_count FROM profile_traits"
        " WHERE profile_id = $1 ORDER BY trait, observed_at DESC, source", pid)
    events = await store.fetch(
        "SELECT event_id, type, source, occurred_at, body -> 'properties' AS properties FROM events"
        " WHERE profile_id = $1 ORDER BY occurred_at DESC, event_id LIMIT $2", pid, events_limit)
    merges = await store.fetch(
        "SELECT merge_id, surviving_profile_id, merged_profile_id, event_id, identities, reason, merged_at,"
        " undone_at FROM merges WHERE surviving_profile_id = $1 OR merged_profile_id = $1"
        " ORDER BY merged_at, merged_profile_id", pid)
    conflicts = await store.fetch(
        "SELECT conflict_id, rule, kind, value, profile_ids, event_id, detail, detected_at, resolved_at"
        " FROM identity_conflicts WHERE profile_id = $1 OR $1 = ANY(profile_ids) ORDER BY detected_at", pid)
    return ProfileView(
        profile_id=pid,
        requested_id=requested if requested != pid else None,
        golden=row["golden"] or {},
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        created_by_event=row["created_by_event"],
        identities=[IdentityView(**dict(r)) for r in identities],
        traits=[TraitView(**dict(r)) for r in traits],
        recent_events=[EventView(**{**dict(r), "properties": r["properties"] or {}}) for r in events],
        merges=[MergeView(**dict(r)) for r in merges],
        conflicts=[ConflictView(**dict(r)) for r in conflicts],
    )


async def find_profile(store: Store, kind: str, value: str, *,
                       options: NormalizationOptions = DEFAULT_OPTIONS, events_limit: int = 20) -> ProfileView | None:
    """The profile holding identity ``kind``/``value`` (normalized first, as events' identities are)."""
    kind, value = normalize_identity(kind, value, options)
    pid = await store.fetchval("SELECT profile_id FROM identities WHERE kind = $1 AND value = $2", kind, value)
    if pid is None:
        return None
    return await load_profile(store, pid, events_limit=events_limit)
