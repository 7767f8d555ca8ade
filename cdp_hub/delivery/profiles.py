"""What delivery needs of a profile at send time: Golden Record, consent and addresses, for a whole batch.

    profile ids ─▶ profiles (follow merged_into to the survivor) ─▶ identities of the survivor chain
                   one query per merge hop (usually one)           one query
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdp_hub.store import ProfileRepository
from cdp_hub.store.profiles import ProfileLink

__all__ = ["ProfileSnapshot", "load_profiles"]

_MAX_MERGE_HOPS = 16
# Identity kinds that name a person best, for a receipt that has no address to name them by.
_STRONG_KINDS = ("crm_id", "ecom_customer_id", "erp_customer_id", "loyalty_card", "email", "phone",
                 "device_id", "push_token", "anonymous_id")


@dataclass
class ProfileSnapshot:
    """One profile as delivery sees it."""

    profile_id: str
    golden: dict[str, Any]
    identities: list[tuple[str, str, datetime]] = field(default_factory=list)
    """``(kind, value, last_seen)``, most recently seen first."""

    def consent(self, kind: str) -> str | None:
        """``opted_in``/``opted_out`` for a channel kind (``email``, ``sms``, ``push``), or ``None``."""
        consent = self.golden.get("consent")
        if not isinstance(consent, dict):
            return None
        value = consent.get(kind)
        if value is None:
            value = consent.get("all")
        if isinstance(value, dict):  # {"status": "opted_out", "at": ...}
            value = value.get("status")
        return value if isinstance(value, str) else None

    def addresses(self, kind: str) -> list[str]:
        """Values of identity ``kind``, most recently seen first."""
        return [value for k, value, _ in self.identities if k == kind]

    def best_identity(self) -> tuple[str, str] | None:
        by_kind: dict[str, str] = {}
        for k, value, _ in self.identities:
            by_kind.setdefault(k, value)
        for kind in _STRONG_KINDS:
            if kind in by_kind:
                return kind, by_kind[kind]
        if self.identities:
            return self.identities[0][0], self.identities[0][1]
        return None

    @functools.cached_property
    def traits(self) -> dict[str, Any]:
        """The Golden Record without the consent map, plus ``profile_id``: what templates see as ``profile``
        (computed once; templates run in an immutable sandbox, so sharing it is safe)."""
        out = {k: v for k, v in self.golden.items() if k != "consent"}
        out["profile_id"] = self.profile_id
        return out


async def load_profiles(profiles: ProfileRepository, profile_ids: Iterable[str]) -> dict[str, ProfileSnapshot]:
    """Snapshots keyed by the *requested* id (a merged profile maps to its survivor); unknown ids are absent."""
    requested: dict[str, uuid.UUID] = {}
    for pid in profile_ids:
        try:
            requested[pid] = uuid.UUID(pid)
        except ValueError:
            continue
    if not requested:
        return {}
    rows: dict[uuid.UUID, ProfileLink] = {}
    pending = set(requested.values())
    for _ in range(_MAX_MERGE_HOPS):
        if not pending:
            break
        fetched = await profiles.links(list(pending))
        pending = set()
        for r in fetched:
            rows[r.profile_id] = r
            target = r.merged_into
            if target is not None and target not in rows:
                pending.add(target)

    def survivor(pid: uuid.UUID) -> uuid.UUID | None:
        seen: set[uuid.UUID] = set()
        while pid in rows and (target := rows[pid].merged_into) is not None and pid not in seen:
            seen.add(pid)
            pid = target
        return pid if pid in rows else None

    resolved: dict[str, uuid.UUID | None] = {req: survivor(pid) for req, pid in requested.items()}
    # The whole chain's identities: a resolver may move them to the survivor lazily.
    chain: dict[uuid.UUID, uuid.UUID] = {}
    for member in rows:
        last = survivor(member)
        if last is not None:
            chain[member] = last
    snapshots: dict[uuid.UUID, ProfileSnapshot] = {}
    for last in set(chain.values()):
        snapshots[last] = ProfileSnapshot(str(last), rows[last].golden)
    if chain:
        for kind, value, profile_id, last_seen in await profiles.identities_by_recency(list(chain)):
            owner = chain.get(profile_id)
            if owner is not None:
                snapshots[owner].identities.append((kind, value, last_seen))
    return {req: snapshots[end] for req, end in resolved.items() if end is not None}
