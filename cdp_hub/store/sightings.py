"""The HTTP edge's dedupe window in PostgreSQL (``edge_sightings``), for ``edge.dedupe_store = "postgres"``: the
same two operations as :meth:`cdp_hub.hotstate.HotState.first_sightings` / ``forget_sightings``, kept where a
Redis flush cannot lose them.

    first_sightings(scope, ids, ttl) ─▶ one INSERT ... ON CONFLICT for the batch: a new id, or one whose row
                                        expired, is claimed (True); a live row is a duplicate (False)
    forget_sightings(scope, ids)     ─▶ DELETE (publishing failed: the sender's retry must get through)
    purge_expired(chunk)             ─▶ DELETE of expired rows, in chunks (the edge_sightings_purge job; and one
                                        chunk at most every ``purge_every`` seconds after a claim, so a hub
                                        without the job, the embedded default, stays bounded too)

Two requests claiming the same id at once: the primary key serializes them, and only one INSERT returns the
row. The statement is Greenplum-compatible (no MERGE; the conflict target is the distribution key).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from cdp_hub.store.db import Store

__all__ = ["SightingRepository"]

_CLAIM = """
INSERT INTO edge_sightings (scope, item, seen_at, expires_at)
SELECT $1, item, now(), now() + make_interval(secs => $3) FROM unnest($2::text[]) AS item
ON CONFLICT (scope, item) DO UPDATE SET seen_at = EXCLUDED.seen_at, expires_at = EXCLUDED.expires_at
    WHERE edge_sightings.expires_at <= now()
RETURNING item
"""

_PURGE = """
DELETE FROM edge_sightings WHERE (scope, item) IN (
    SELECT scope, item FROM edge_sightings WHERE expires_at <= now() ORDER BY expires_at LIMIT $1)
"""


class SightingRepository:
    """Which ids were seen within a window, per scope (a tracking source, or ``delivery``)."""

    @property
    def dependency(self) -> str:
        """Where the window lives, as the outage board names it (HotState's is ``"redis"``)."""
        return "postgres"

    def __init__(self, store: Store, *, purge_every: float = 3600.0, purge_chunk: int = 10_000) -> None:
        self.store = store
        self.purge_every = purge_every
        self.purge_chunk = purge_chunk
        self._next_purge = time.monotonic() + purge_every

    async def first_sightings(self, scope: str, items: Sequence[str], ttl_seconds: int) -> list[bool]:
        """Mark ``items`` as seen in ``scope`` for ``ttl_seconds``; True for each one not seen before in that
        window (an item twice in ``items`` is True only the first time), as HotState's method answers."""
        if not items:
            return []
        unique = list(dict.fromkeys(items))  # ON CONFLICT may not touch one row twice in a statement
        rows = await self.store.fetch(_CLAIM, scope, unique, float(max(1, ttl_seconds)))
        claimed = {row["item"] for row in rows}
        out = []
        for item in items:
            out.append(item in claimed)
            claimed.discard(item)
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.purge_every
            await self.store.execute(_PURGE, self.purge_chunk)
        return out

    async def forget_sightings(self, scope: str, items: Sequence[str]) -> None:
        """Undo :meth:`first_sightings` for ``items`` (their publication failed; the sender will retry)."""
        if items:
            await self.store.execute("DELETE FROM edge_sightings WHERE scope = $1 AND item = ANY($2::text[])",
                                     scope, list(items))

    async def purge_expired(self, *, chunk: int = 10_000) -> int:
        """Delete the expired rows, ``chunk`` at a time (short transactions); the number deleted."""
        total = 0
        while True:
            status = await self.store.execute(_PURGE, chunk)
            deleted = int(status.rsplit(" ", 1)[-1])
            total += deleted
            if deleted < chunk:
                return total

    async def count(self, scope: str) -> int:
        """Live (unexpired) sightings of ``scope``: for tests and ``cdp-hub`` tooling."""
        return int(await self.store.fetchval(
            "SELECT count(*) FROM edge_sightings WHERE scope = $1 AND expires_at > now()", scope))
