"""asyncpg pool with a lifecycle, plus the embedded PostgreSQL (pgserver) for the zero-install default."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from cdp_hub.errors import ConfigurationError
from cdp_hub.lifecycle import AsyncLifecycle
from cdp_hub.redact import redact_url
from cdp_hub.store.migrations import Dialect, Migration, apply_migrations

if TYPE_CHECKING:
    from cdp_hub.config import Settings

__all__ = ["RollbackStore", "Store", "embedded_dsn", "open_store"]


def embedded_dsn(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in ``data_dir/pg`` and return its DSN."""
    try:
        import pgserver
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "postgres_dsn='embedded' needs the embedded extra: pip install 'cdp-hub[embedded]'"
        ) from None
    path = (data_dir / "pg").resolve()
    path.mkdir(parents=True, exist_ok=True)
    # "stop": the server stops when the last process using it exits; the data stays in data_dir.
    server = pgserver.get_server(str(path), cleanup_mode="stop")  # type: ignore[attr-defined]
    return str(server.get_uri())


# Every statement is planned for the tables as they are and the arguments it gets. asyncpg prepares each
# statement once per connection, and PostgreSQL's plan cache then moves it to a generic plan once that looks
# no dearer than the custom ones; a generic plan made while the tables were small reads them whole (profiles
# by id, the golden refresh, the timers' cancel were seen doing so under load) and stays until the tables'
# statistics change, which autovacuum may leave for long on a busy server (tests/test_sql_plans.py shows
# both). A custom plan costs a planning per execution (about 1.5 ms more per resolver batch of 250 events
# than the generic plans, measured on 200k-row tables), and a hot statement runs once per batch. A connection
# parameter, so asyncpg's RESET ALL on release (where it still runs, see _PooledConnection) keeps it. A
# server without the setting refuses a connection that names it (Greenplum 6 has none), so the greenplum
# dialect leaves it to the role's settings (docs/operations.md, "Query plans").
_SERVER_SETTINGS: dict[str, dict[str, str]] = {
    "postgres": {"plan_cache_mode": "force_custom_plan"},
    "greenplum": {},
}


class _PooledConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no stubs: its base is Any
    """A pool connection that skips asyncpg's reset query when it goes back to the pool after one statement
    of :meth:`Store.fetch` and its siblings.

    On release asyncpg sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` so that the
    next holder finds a clean session: a second round trip for every statement, which doubled the database
    time of a triggers batch (bench/triggers.py, docs/scaling.md). One statement outside a transaction leaves
    nothing to clean (the hub's statements set no session state: locks are transaction-scoped, settings
    ``SET LOCAL``), and asyncpg still rolls back an open transaction and drops listeners on release. A
    connection a caller acquires itself (transactions, session locks) keeps the full reset."""

    single_statement = False

    def release_lightly(self) -> None:
        """Skip the reset query on the next release (called through the pool's proxy, which forwards
        method calls but not attribute writes)."""
        self.single_statement = True

    def get_reset_query(self) -> str:
        if self.single_statement:
            self.single_statement = False
            return ""
        query: str = super().get_reset_query()
        return query


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Store(AsyncLifecycle):
    """The database. ``start()`` opens the pool, ``stop()`` closes it; ``migrate()`` applies migrations."""

    def __init__(self, dsn: str, *, dialect: Dialect = "postgres", pool_size: int = 10,
                 data_dir: Path | None = None) -> None:
        self._dsn = dsn
        self.dialect: Dialect = dialect
        self._pool_size = pool_size
        self._data_dir = data_dir or Path(".cdp-hub")
        self._pool: asyncpg.Pool | None = None

    @classmethod
    def for_settings(cls, settings: Settings, *, pool_size: int | None = None) -> Store:
        """The store ``settings`` describe (DSN, dialect, data directory); ``pool_size`` defaults to
        ``postgres_pool_size``."""
        return cls(settings.postgres_dsn, dialect=settings.dialect, data_dir=settings.data_dir,
                   pool_size=settings.postgres_pool_size if pool_size is None else pool_size)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("Store is not started")
        return self._pool

    @property
    def dsn(self) -> str:
        return self._dsn

    async def start(self) -> None:
        if self._pool is not None:
            return
        if self._dsn == "embedded":
            self._dsn = await asyncio.to_thread(embedded_dsn, self._data_dir)
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, init=_init_connection, command_timeout=120,
                server_settings=_SERVER_SETTINGS[self.dialect], connection_class=_PooledConnection,
            )
        except (OSError, asyncpg.PostgresError) as exc:
            raise ConfigurationError(
                f"cannot connect to PostgreSQL at {redact_url(self._dsn)} ({type(exc).__name__}: {exc}); is it "
                "running, and are postgres_dsn's host, port, database, user and password right?"
            ) from exc

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def migrate(self) -> list[Migration]:
        async with self.pool.acquire() as conn:
            return await apply_migrations(conn, self.dialect)

    light_release = True
    """One-statement calls skip the reset query on release (see :class:`_PooledConnection`)."""

    @contextlib.asynccontextmanager
    async def _one_statement(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for one statement: back in the pool without the reset query (one round trip
        instead of two; see :class:`_PooledConnection`)."""
        async with self.pool.acquire() as conn:
            try:
                yield conn
            finally:
                if isinstance(conn, _PooledConnection) and self.light_release:
                    conn.release_lightly()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._one_statement() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._one_statement() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(sql, *args)
            return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._one_statement() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self._one_statement() as conn:
            status: str = await conn.execute(sql, *args)
            return status


class _OneConnection:
    """The part of a pool the repositories use, on one connection. A connection runs one statement at a
    time: statements a caller issues concurrently (``asyncio.gather`` of reads) take turns here."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._turn = asyncio.Lock()

    def acquire(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        @contextlib.asynccontextmanager
        async def held() -> AsyncIterator[asyncpg.Connection]:
            # Not a turn: a holder may issue statements through the store while it holds the connection
            # (an advisory lock around a recompute); the turn is for single statements.
            yield self.conn

        return held()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._turn:
            rows: list[asyncpg.Record] = await self.conn.fetch(sql, *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self._turn:
            return await self.conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._turn:
            return await self.conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self._turn:
            status: str = await self.conn.execute(sql, *args)
        return status


class RollbackStore(Store):
    """A store whose every statement runs on one connection, in one transaction rolled back at ``stop()``:
    what a simulation writes (timers, claims) is seen by its own reads and never by anyone else. Nested
    transactions of the repositories become savepoints."""

    def __init__(self, dsn: str, **kw: Any) -> None:
        super().__init__(dsn, **{**kw, "pool_size": 1})
        self._conn: asyncpg.Connection | None = None
        self._tx: Any = None
        self._one: _OneConnection | None = None

    @property
    def pool(self) -> Any:  # the one connection, shaped like the pool the repositories use
        return self._held

    @property
    def _held(self) -> _OneConnection:
        if self._one is None:
            raise RuntimeError("Store is not started")
        return self._one

    async def start(self) -> None:
        if self._one is not None:
            return
        await super().start()
        self._conn = await super().pool.acquire()
        self._tx = self._conn.transaction()
        await self._tx.start()
        self._one = _OneConnection(self._conn)

    async def stop(self) -> None:
        if self._tx is not None:
            await self._tx.rollback()
            self._tx = None
        if self._conn is not None and self._pool is not None:
            await self._pool.release(self._conn)
        self._conn, self._one = None, None
        await super().stop()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._held.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self._held.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._held.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._held.execute(sql, *args)


async def open_store(dsn: str, *, dialect: Dialect = "postgres", migrate: bool = True, **kw: Any) -> Store:
    store = Store(dsn, dialect=dialect, **kw)
    await store.start()
    if migrate:
        await store.migrate()
    return store
