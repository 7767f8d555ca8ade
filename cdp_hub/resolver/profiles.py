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
from cdp_hub.store import EventRepository, ProfileRepository, Store

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
    return await ProfileRepository(store).canonical_id(profile_id)


async def load_profile(store: Store, profile_id: uuid.UUID | str, *, events_limit: int = 20) -> ProfileView | None:
    """The profile ``profile_id`` (following merges), or None when no such profile exists."""
    requested = profile_id if isinstance(profile_id, uuid.UUID) else uuid.UUID(str(profile_id))
    profiles = ProfileRepository(store)
    pid = await profiles.canonical_id(requested)
    if pid is None:
        return None
    row = await profiles.profile(pid)
    if row is None:
        return None
    identities = await profiles.identities_of(pid)
    traits = await profiles.traits_of(pid)
    events = await EventRepository(store).recent_of(pid, events_limit)
    merges = await profiles.merges_of(pid)
    conflicts = await profiles.conflicts_of(pid)
    return ProfileView(
        profile_id=pid,
        requested_id=requested if requested != pid else None,
        golden=row["golden"] or {},
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        created_by_event=row["created_by_event"],
        identities=[IdentityView(**r) for r in identities],
        traits=[TraitView(**r) for r in traits],
        recent_events=[EventView(**r) for r in events],
        merges=[MergeView(**r) for r in merges],
        conflicts=[ConflictView(**r) for r in conflicts],
    )


async def find_profile(store: Store, kind: str, value: str, *,
                       options: NormalizationOptions = DEFAULT_OPTIONS, events_limit: int = 20) -> ProfileView | None:
    """The profile holding identity ``kind``/``value`` (normalized first, as events' identities are)."""
    kind, value = normalize_identity(kind, value, options)
    pid = await ProfileRepository(store).holder_of((kind, value))
    if pid is None:
        return None
    return await load_profile(store, pid, events_limit=events_limit)
