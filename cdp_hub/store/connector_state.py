"""Checkpoints of incremental connector syncs (``connector_state``): one JSON state per (connector instance,
stream), written only after the records it covers are published, so a crash loses nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cdp_hub.store.db import Store

__all__ = ["ConnectorStateRepository"]


class ConnectorStateRepository:
    """Reads, writes and resets sync checkpoints."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, connector: str, stream: str) -> dict[str, Any] | None:
        """The checkpoint of one stream; None before its first sync (or after a reset)."""
        row = await self.store.fetchrow(
            "SELECT state FROM connector_state WHERE connector = $1 AND stream = $2", connector, stream)
        return dict(row["state"]) if row is not None else None

    async def put(self, connector: str, stream: str, state: Mapping[str, Any]) -> None:
        """Write (or replace) the checkpoint of one stream."""
        await self.store.execute(
            """INSERT INTO connector_state (connector, stream, state, updated_at) VALUES ($1, $2, $3, now())
               ON CONFLICT (connector, stream) DO UPDATE SET state = EXCLUDED.state, updated_at = now()""",
            connector, stream, dict(state))

    async def reset(self, connector: str, stream: str | None = None) -> None:
        """Forget the checkpoints of one stream, or of every stream of the connector: the next sync is full."""
        await self.store.execute(
            "DELETE FROM connector_state WHERE connector = $1 AND ($2::text IS NULL OR stream = $2)",
            connector, stream)

    async def all(self, connector: str) -> list[tuple[str, dict[str, Any]]]:
        """``(stream, checkpoint)`` for every stream of the connector that has one, by stream name."""
        rows = await self.store.fetch(
            "SELECT stream, state, updated_at FROM connector_state WHERE connector = $1 ORDER BY stream", connector)
        return [(r["stream"], dict(r["state"])) for r in rows]
