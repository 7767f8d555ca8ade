"""Checkpoints of incremental syncs: one JSON state per (connector instance, stream).

Production keeps them in PostgreSQL/Greenplum (``connector_state``), written only after the records they
cover are published, so a crash loses nothing. :class:`MemoryStateStore` serves the conformance kit and
third-party tests that have no database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from cdp_hub.store.connector_state import ConnectorStateRepository

__all__ = ["MemoryStateStore", "PgStateStore", "StateStore"]


class StateStore(Protocol):
    """Where sync checkpoints live."""

    async def get(self, connector: str, stream: str) -> dict[str, Any] | None: ...

    async def put(self, connector: str, stream: str, state: Mapping[str, Any]) -> None: ...

    async def reset(self, connector: str, stream: str | None = None) -> None: ...


class PgStateStore(ConnectorStateRepository):
    """Checkpoints in the ``connector_state`` table (its SQL is :class:`ConnectorStateRepository`'s)."""


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
