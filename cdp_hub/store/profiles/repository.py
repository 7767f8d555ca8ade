"""The profile repository: every statement on the profile tables (``profiles``, ``identities``,
``profile_traits``, ``merges``, ``identity_conflicts``, ``blocked_identities``, ``profile_splits``,
``merge_suggestions``).

    ProfileRepository(store)
      ├─ reads through the pool (this module): profile views, golden records for stages, counts
      ├─ ResolveStatements      (resolve.py)      the identity graph's batch, merge and unmerge, on ``conn``
      ├─ BulkStatements         (bulk.py)         the bulk import's staging and set-wise statements, on ``conn``
      └─ SuggestionStatements   (suggestions.py)  fuzzy matching's reads and merge suggestions

Callers get plain values or the small records of :mod:`cdp_hub.store.profiles.records`, never SQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cdp_hub.store.db import Store
from cdp_hub.store.profiles.bulk import BulkStatements
from cdp_hub.store.profiles.matcher_index import MatcherIndexStatements
from cdp_hub.store.profiles.records import BirthdayCandidate, GoldenState, Key, MergeStep, ProfileLink
from cdp_hub.store.profiles.resolve import ResolveStatements
from cdp_hub.store.profiles.suggestions import SuggestionStatements

__all__ = ["ProfileRepository"]

# What a bulk import writes: ANALYZEd after it (autovacuum may come round late; on Greenplum 6 never).
_ANALYZED = ("profiles", "identities", "profile_traits", "merges")
_MAX_MERGE_HOPS = 16  # merged_into is kept one hop deep; the bound only guards against a damaged graph

# For replayed events only: the profiles and merges they caused the first time, to emit their events again.
_CREATED_BY = """
SELECT profile_id, created_by_event FROM profiles WHERE created_by_event = ANY($1::uuid[])
"""
_MERGES_BY = """
SELECT event_id, surviving_profile_id, merged_profile_id, reason FROM merges
 WHERE event_id = ANY($1::uuid[]) AND undone_at IS NULL
 ORDER BY merged_at, merged_profile_id
"""

# One profile, as an operator sees it.
_MERGED_INTO = "SELECT merged_into FROM profiles WHERE profile_id = $1"
_PROFILE = """
SELECT profile_id, golden, version, created_at, updated_at, created_by_event FROM profiles WHERE profile_id = $1
"""
_IDENTITIES = """
SELECT kind, value, source, first_seen, last_seen FROM identities WHERE profile_id = $1 ORDER BY kind, value
"""
_TRAITS = """
SELECT trait, source, value, first_seen, observed_at, seen_count FROM profile_traits
 WHERE profile_id = $1 ORDER BY trait, observed_at DESC, source
"""
_MERGES = """
SELECT merge_id, surviving_profile_id, merged_profile_id, event_id, identities, reason, merged_at, undone_at
  FROM merges WHERE surviving_profile_id = $1 OR merged_profile_id = $1
 ORDER BY merged_at, merged_profile_id
"""
_CONFLICTS_OF = """
SELECT conflict_id, rule, kind, value, profile_ids, event_id, detail, detected_at, resolved_at
  FROM identity_conflicts WHERE profile_id = $1 OR $1 = ANY(profile_ids) ORDER BY detected_at
"""
_HOLDER_OF = "SELECT profile_id FROM identities WHERE kind = $1 AND value = $2"
_CONFLICTS = """
SELECT conflict_id, rule, kind, value, profile_ids, event_id, detail, detected_at, resolved_at
  FROM identity_conflicts WHERE $1 OR resolved_at IS NULL ORDER BY detected_at DESC LIMIT $2
"""

# The whole graph, for a dry run of new rules.
_BLOCKED = "SELECT kind, value FROM blocked_identities"
_ALL_IDENTITIES = "SELECT i.kind, i.value, i.profile_id FROM identities i"
_COUNT_LIVE = "SELECT count(*) FROM profiles WHERE merged_into IS NULL"
_COUNT_MERGED_AWAY = "SELECT count(*) FROM profiles WHERE merged_into IS NOT NULL"
_COUNT_IDENTITIES = "SELECT count(*) FROM identities"

# What other stages read of a batch of profiles.
_LINKS = "SELECT profile_id, merged_into, golden FROM profiles WHERE profile_id = ANY($1::uuid[])"
# A profile's own identities first (most recently seen first), then the household values it shares with
# another profile (a family's phone: kept on both as a contact point, see shared_identities); a value
# shared by more than _HOUSEHOLD_MAX profiles (the identity rules' default household_max_profiles) is no
# household's and is not offered to its other holders.
_HOUSEHOLD_MAX = 4
_IDENTITIES_BY_RECENCY = f"""
SELECT kind, value, profile_id, last_seen FROM (
    SELECT kind, value, profile_id, last_seen, 0 AS shared FROM identities WHERE profile_id = ANY($1::uuid[])
    UNION ALL
    SELECT s.kind, s.value, s.profile_id, s.first_seen, 1 FROM shared_identities s
     WHERE s.profile_id = ANY($1::uuid[])
       AND NOT EXISTS (SELECT 1 FROM identities i
                        WHERE i.kind = s.kind AND i.value = s.value AND i.profile_id = s.profile_id)
       AND (SELECT count(*) FROM shared_identities o WHERE o.kind = s.kind AND o.value = s.value)
           <= {_HOUSEHOLD_MAX}
) x
 ORDER BY shared, last_seen DESC, value
"""
_REMOVE_IDENTITIES = """
DELETE FROM identities i USING unnest($1::text[], $2::text[]) AS d(kind, value)
 WHERE i.kind = d.kind AND i.value = d.value
"""
_BEST_IDENTITY = """
SELECT DISTINCT ON (i.profile_id) i.profile_id, i.kind, i.value
  FROM identities i JOIN unnest($1::uuid[]) AS u(profile_id) ON u.profile_id = i.profile_id
 WHERE i.profile_id BETWEEN $3 AND $4
 ORDER BY i.profile_id, COALESCE(array_position($2::text[], i.kind), 1000), i.kind, i.value
"""
"""``$3``/``$4``: the smallest and largest of the ids (a campaign chunk's are a range: see consents._CURRENT)."""
_GOLDEN_STATES = """
SELECT profile_id, golden, version, updated_at, merged_into FROM profiles WHERE profile_id = ANY($1::uuid[])
"""
_GOLDEN_OF = "SELECT profile_id, golden FROM profiles WHERE profile_id = ANY($1::uuid[])"

# Birthdays: the time zones live profiles with a birth date are in, and who celebrates today in each.
_BIRTHDAY_ZONES = """
SELECT DISTINCT COALESCE(golden ->> 'timezone', '') AS tz FROM profiles
 WHERE merged_into IS NULL AND golden ? 'birth_date'
"""
_BIRTHDAY_CANDIDATES = """
SELECT p.profile_id, p.golden ->> 'birth_date' AS birth_date, z.tz
  FROM profiles p
  JOIN unnest($1::text[], $2::text[], $3::text[]) AS z(tz, md, yr)
    ON z.tz = COALESCE(p.golden ->> 'timezone', '') AND substr(p.golden ->> 'birth_date', 6, 5) = z.md
 WHERE p.merged_into IS NULL AND p.golden ->> 'birth_date' ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'
   AND NOT EXISTS (SELECT 1 FROM scheduler_emitted s
                    WHERE s.profile_id = p.profile_id AND s.job = $4 AND s.period = z.yr)
"""


class ProfileRepository(ResolveStatements, BulkStatements, SuggestionStatements, MatcherIndexStatements):
    """The profile tables. Statements on a caller's connection (``conn`` first) run in its transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def analyze(self) -> None:
        """Fresh planner statistics of the profile tables, after a bulk load changed them wholesale (the
        statements that follow, and the cached plans ANALYZE invalidates, are planned for their new size)."""
        for table in _ANALYZED:
            await self.store.execute(f"ANALYZE {table}")

    # -- the resolver stage's replays ------------------------------------------------------------------------

    async def created_by_events(self, event_ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """``(profile id, event id)`` of the profiles ``event_ids`` created."""
        rows = await self.store.fetch(_CREATED_BY, event_ids)
        return [(r["profile_id"], r["created_by_event"]) for r in rows]

    async def merges_caused_by(self, event_ids: Sequence[uuid.UUID]) -> list[MergeStep]:
        """The merges ``event_ids`` caused that are not undone, in the order they happened."""
        rows = await self.store.fetch(_MERGES_BY, event_ids)
        return [MergeStep(r["event_id"], r["surviving_profile_id"], r["merged_profile_id"], r["reason"])
                for r in rows]

    # -- one profile -----------------------------------------------------------------------------------------

    async def canonical_id(self, profile_id: uuid.UUID) -> uuid.UUID | None:
        """The profile that holds ``profile_id``'s data now (itself, or the one it was merged into); None when
        there is no such profile."""
        current = profile_id
        for _ in range(_MAX_MERGE_HOPS):
            row = await self.store.fetchrow(_MERGED_INTO, current)
            if row is None:
                return None
            if row["merged_into"] is None:
                return current
            current = row["merged_into"]
        return current

    async def profile(self, profile_id: uuid.UUID) -> dict[str, Any] | None:
        """profile_id, golden, version, created_at, updated_at, created_by_event of a profile, or None."""
        row = await self.store.fetchrow(_PROFILE, profile_id)
        return None if row is None else dict(row)

    async def identities_of(self, profile_id: uuid.UUID) -> list[dict[str, Any]]:
        """kind, value, source, first_seen, last_seen of each identity of a profile, by kind and value."""
        return [dict(r) for r in await self.store.fetch(_IDENTITIES, profile_id)]

    async def traits_of(self, profile_id: uuid.UUID) -> list[dict[str, Any]]:
        """The provenance of a profile's traits: trait, source, value, first_seen, observed_at, seen_count;
        by trait, latest first."""
        return [dict(r) for r in await self.store.fetch(_TRAITS, profile_id)]

    async def merges_of(self, profile_id: uuid.UUID) -> list[dict[str, Any]]:
        """The audit rows of merges a profile survived or was merged away in, oldest first."""
        return [dict(r) for r in await self.store.fetch(_MERGES, profile_id)]

    async def conflicts_of(self, profile_id: uuid.UUID) -> list[dict[str, Any]]:
        """The identity conflicts recorded on a profile or naming it, oldest first."""
        return [dict(r) for r in await self.store.fetch(_CONFLICTS_OF, profile_id)]

    async def holder_of(self, key: Key) -> uuid.UUID | None:
        """The profile the identity ``key`` (normalized) is attached to, or None."""
        pid: uuid.UUID | None = await self.store.fetchval(_HOLDER_OF, key[0], key[1])
        return pid

    async def conflicts(self, *, include_resolved: bool, limit: int) -> list[dict[str, Any]]:
        """Identity conflicts, newest first: the open ones, or all with ``include_resolved``."""
        return [dict(r) for r in await self.store.fetch(_CONFLICTS, include_resolved, limit)]

    # -- the whole graph -------------------------------------------------------------------------------------

    async def blocked_identities(self) -> list[Key]:
        """Every identity in ``blocked_identities``."""
        return [(r["kind"], r["value"]) for r in await self.store.fetch(_BLOCKED)]

    async def all_identities(self) -> dict[Key, uuid.UUID]:
        """Every identity -> the profile holding it."""
        return {(r["kind"], r["value"]): r["profile_id"] for r in await self.store.fetch(_ALL_IDENTITIES)}

    async def count_live(self) -> int:
        """How many profiles are live (not merged into another)."""
        return int(await self.store.fetchval(_COUNT_LIVE))

    async def count_merged_away(self) -> int:
        """How many profiles were merged into another."""
        return int(await self.store.fetchval(_COUNT_MERGED_AWAY))

    async def count_identities(self) -> int:
        """How many identities are attached to profiles."""
        return int(await self.store.fetchval(_COUNT_IDENTITIES))

    # -- batches of profiles, for other stages ---------------------------------------------------------------

    async def links(self, profile_ids: Sequence[uuid.UUID]) -> list[ProfileLink]:
        """Each existing profile of ``profile_ids`` with where it was merged into and its golden record."""
        rows = await self.store.fetch(_LINKS, list(profile_ids))
        return [ProfileLink(r["profile_id"], r["merged_into"], r["golden"] if isinstance(r["golden"], dict) else {})
                for r in rows]

    async def identities_by_recency(self, profile_ids: Sequence[uuid.UUID]) -> list[tuple[str, str, uuid.UUID, datetime]]:
        """``(kind, value, profile id, last seen)`` of every identity of ``profile_ids``, most recently seen
        first, then the household values each shares with another profile (a family's phone)."""
        rows = await self.store.fetch(_IDENTITIES_BY_RECENCY, list(profile_ids))
        return [(r["kind"], r["value"], r["profile_id"], r["last_seen"]) for r in rows]

    async def remove_identities(self, keys: Sequence[Key]) -> None:
        """Detach ``keys`` from whatever profiles hold them."""
        await self.store.execute(_REMOVE_IDENTITIES, [k for k, _ in keys], [v for _, v in keys])

    async def best_identities(self, profile_ids: Sequence[uuid.UUID],
                              priority: Sequence[str]) -> dict[uuid.UUID, dict[str, str]]:
        """One identity per profile, ``{"kind": ..., "value": ...}``: the first of ``priority``'s kinds the
        profile has (any other kind after them), the smallest value of it."""
        if not profile_ids:
            return {}
        rows = await self.store.fetch(_BEST_IDENTITY, list(profile_ids), list(priority), min(profile_ids),
                                      max(profile_ids))
        return {r["profile_id"]: {"kind": r["kind"], "value": r["value"]} for r in rows}

    async def golden_states(self, profile_ids: Sequence[uuid.UUID]) -> list[GoldenState]:
        """Golden record, row version, last update and merge pointer of each existing profile of
        ``profile_ids``."""
        rows = await self.store.fetch(_GOLDEN_STATES, list(profile_ids))
        return [GoldenState(r["profile_id"], r["golden"] or {}, r["version"], r["updated_at"], r["merged_into"])
                for r in rows]

    async def golden_of(self, profile_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """Each existing profile of ``profile_ids`` -> its golden record."""
        rows = await self.store.fetch(_GOLDEN_OF, list(profile_ids))
        return {r["profile_id"]: r["golden"] or {} for r in rows}

    async def birthday_time_zones(self) -> list[str]:
        """The golden ``timezone`` values of live profiles with a ``birth_date`` (``''`` for none)."""
        return [r["tz"] for r in await self.store.fetch(_BIRTHDAY_ZONES)]

    async def birthday_candidates(self, zones: Sequence[str], days: Sequence[str], years: Sequence[str],
                                  job: str) -> list[BirthdayCandidate]:
        """Live profiles in time zone ``zones[i]`` born on ``days[i]`` (``MM-DD``) whose birthday of
        ``years[i]`` the scheduler ``job`` has not emitted yet."""
        rows = await self.store.fetch(_BIRTHDAY_CANDIDATES, list(zones), list(days), list(years), job)
        return [BirthdayCandidate(r["profile_id"], r["birth_date"], r["tz"]) for r in rows]
