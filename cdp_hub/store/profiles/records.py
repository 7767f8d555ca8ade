"""Plain values the profile repository takes and returns (no behaviour; the resolver owns the rules)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "BirthdayCandidate",
    "GoldenState",
    "IdentityLookup",
    "Key",
    "LastMerge",
    "LockedProfile",
    "MergeStep",
    "ProfileConstraints",
    "ProfileLink",
    "Suggestion",
]

Key = tuple[str, str]
"""An identity: ``(kind, value)``, normalized."""


@dataclass
class IdentityLookup:
    """What the store knows of a batch's identities and explicit profile ids."""

    owner: dict[Key, uuid.UUID] = field(default_factory=dict)  # identity -> the profile holding it
    last_seen: dict[Key, datetime] = field(default_factory=dict)
    blocked: set[Key] = field(default_factory=set)  # identities in blocked_identities
    shared: dict[Key, set[uuid.UUID]] = field(default_factory=dict)  # shared values -> the profiles holding them
    explicit_to: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)  # profile id -> where it leads now


@dataclass(frozen=True, slots=True)
class LockedProfile:
    """A profile row locked FOR UPDATE."""

    profile_id: uuid.UUID
    merged_into: uuid.UUID | None
    created_at: datetime
    created_by_event: uuid.UUID | None
    first_name: str | None = None  # the golden record's, for the household rule
    birth_date: str | None = None


@dataclass
class ProfileConstraints:
    """What the identity rules need to know about some profiles."""

    values: list[tuple[uuid.UUID, str, str]] = field(default_factory=list)  # (profile, kind, value), limited kinds
    splits: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)  # (profile, profile split from it)


@dataclass(frozen=True, slots=True)
class LastMerge:
    """The latest merge of a profile that is not undone: its audit row's key and the identities it brought."""

    merge_id: uuid.UUID
    surviving_profile_id: uuid.UUID
    identities: list[Key]


@dataclass(frozen=True, slots=True)
class MergeStep:
    """One audit row of ``merges``: ``loser`` merged into ``survivor`` because of ``event_id``."""

    event_id: uuid.UUID
    survivor: uuid.UUID
    loser: uuid.UUID
    reason: str


@dataclass(frozen=True, slots=True)
class ProfileLink:
    """A profile row as followed along ``merged_into``, with its golden record."""

    profile_id: uuid.UUID
    merged_into: uuid.UUID | None
    golden: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GoldenState:
    """A profile's golden record with the row version it was read at."""

    profile_id: uuid.UUID
    golden: dict[str, Any]
    version: int
    updated_at: datetime
    merged_into: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class BirthdayCandidate:
    """A live profile whose golden ``birth_date`` falls on the local today of its time zone ``tz``."""

    profile_id: uuid.UUID
    birth_date: str
    tz: str


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One stored merge suggestion (a row of ``merge_suggestions``)."""

    profile_a: uuid.UUID
    profile_b: uuid.UUID
    score: float
    weight: float
    evidence: dict[str, Any]
    status: str
    matcher: str
