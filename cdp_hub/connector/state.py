"""Checkpoints of incremental syncs: one JSON state per (connector instance, stream).

Production keeps them in PostgreSQL/Greenplum (``connector_state``), written only after the records they
cover are published, so a crash loses nothing. :class:`MemoryStateStore` serves the conformance kit and
third-party tests that have no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cdp_hub.store import Store

__all__ = ["MemoryStateStore", "PgStateStore", "StateStore"]

# SQL of the connector_state table group (one place; values always as parameters).
_GET = "SELECT state FROM connector_state WHERE connector = $1 AND stream = $2"
_PUT = """INSERT INTO connector_state (connector, stream, state, updated_at) VALUES ($1, $2, $3, now())
          ON CONFLICT (connector, stream) DO UPDATE SET state = EXCLUDED.state, updated_at = now()"""
_DELETE = "DELETE FROM connector_state WHERE connector = $1 AND ($2::text IS NULL OR stream = $2)"
_LIST = "SELECT stream, state, updated_at FROM connector_state WHERE connector = $1 ORDER BY stream"


class StateStore(Protocol):
    """Where sync checkpoints live."""

    async def get(self, connector: str, stream: str) -> dict[str, Any] | None: ...

    async def put(self, connector: str, stream: str, state: Mapping[str, Any]) -> None: ...

    async def reset(self, connector: str, stream: str | None = None) -> None: ...


class PgStateStore:
    """Checkpoints in the ``connector_state`` table."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, connector: str, stream: str) -> dict[str, Any] | None:
        row = await self.store.fetchrow(_GET, connector, stream)
        return dict(row["state"]) if row is not None else None

    async def put(self, connector: str, stream: str, state: Mapping[str, Any]) -> None:
        await self.store.execute(_PUT, connector, stream, dict(state))

    async def reset(self, connector: str, stream: str | None = None) -> None:
        await self.store.execute(_DELETE, connector, stream)

    async def all(self, connector: str) -> list[tuple[str, dict[str, Any]]]:
        return [(r["stream"], dict(r["state"])) for r in await self.store.fetch(_LIST, connector)]


class MemoryStateStore:
    """Checkpoints in a dict (tests, the conformance kit without a database)."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes = 0

    async def get(self, connector: str, stream: str) -> dict[str, Any] | None:
        state = self.states.get((connector, stream))
        return dict(state) if state is not None else None

    async def put(self, connector: str, stream: str, state: Mapping[str, Any]) -> None:
        self.states[(connector, stream)] = dict(state)
        self.writes += 1

    async def reset(self, connector: str, stream: str | None = None) -> None:
        for key in [k for k in self.states if k[0] == connector and (stream is None or k[1] == stream)]:
            del self.states[key]
