"""The hot statements stay on their indexes as the tables grow, under custom and under generic plans.

asyncpg prepares every statement once per connection and PostgreSQL's plan cache then switches a prepared
statement to a *generic* plan (one for any parameter values) when that looks no dearer than the custom ones;
a generic plan knows nothing of the arrays it will get (``= ANY($1)``, ``unnest($1)``) and was once seen
reading whole tables. So every hot statement of the stages (resolver, triggers, delivery) is planned here on
real PostgreSQL, with the statement text the repositories run (imported, not copied):

- on small tables (100 rows each), where a sequential scan is right, then on large ones (200,000 rows each,
  loaded with generate_series and ANALYZEd, as a bulk import leaves them), and the resolver's statements in
  its batch transaction on tables of 20,000 rows, where the server's default price of an index probe has the
  planner read them whole;
- under ``plan_cache_mode = force_custom_plan`` and ``force_generic_plan`` (``PREPARE`` + ``EXPLAIN EXECUTE``);
- a generic plan prepared while the tables were small, explained again once they are large and analyzed:
  ANALYZE must replace it (PostgreSQL invalidates cached plans of a table whose statistics change);
- and without that ANALYZE (tables grown by traffic before autovacuum came round): a cached generic plan keeps
  scanning, which is why the store's connections plan every execution for its arguments
  (``plan_cache_mode = force_custom_plan``, cdp_hub/store/db.py); both are shown.

A plan fails when it sequential-scans a large table, or walks a whole index of one (an index scan without an
index condition).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from cdp_hub.config import Settings
from cdp_hub.resolver.graph import IdentityGraph
from cdp_hub.schema import Event
from cdp_hub.store import consents as consent_sql
from cdp_hub.store import events as event_sql
from cdp_hub.store import messages as message_sql
from cdp_hub.store import timers as timer_sql
from cdp_hub.store.db import Store
from cdp_hub.store.profiles import ProfileRepository
from cdp_hub.store.profiles import repository as profile_sql
from cdp_hub.store.profiles import resolve as resolve_sql

pytestmark = pytest.mark.slow

SMALL, LARGE = 100, 200_000
GROWN = LARGE  # grown to it without ANALYZE
BATCH = 250  # the stages' batch size (Settings.batch_size)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
# The tables the hot statements read; each holds `rows` rows after load() (events: in its 2026 partition).
TABLES = ("profiles", "identities", "profile_traits", "merges", "events", "event_ids", "scheduled_triggers",
          "messages", "consents")


def _load_sql(first: int, rows: int) -> list[str]:
    """Statements that fill the hot tables with rows ``first``..``rows`` each, shaped like a retailer's: one
    e-mail and four trait observations per profile (a quarter of the profiles), a twentieth merged away, two
    events per profile, timers mostly fired (5% pending), messages mostly sent, two consent statements per
    profile."""
    quarter, half = max(1, rows // 4), max(1, rows // 2)
    return [
        f"""INSERT INTO profiles (profile_id, merged_into, golden, created_by_event, created_at)
            SELECT md5('p' || i)::uuid, CASE WHEN i % 20 = 0 THEN md5('p' || (i - 1))::uuid END,
                   jsonb_build_object('first_name', 'Anna', 'city', 'Kazan'), md5('e' || i)::uuid,
                   '{T0.isoformat()}'::timestamptz + i * interval '1 second'
              FROM generate_series({first}, {rows}) AS i""",
        f"""INSERT INTO identities (kind, value, profile_id, source)
            SELECT 'email', 'user' || i || '@example.ru', md5('p' || i)::uuid, 'crm'
              FROM generate_series({first}, {rows}) AS i""",
        f"""INSERT INTO profile_traits (profile_id, trait, source, value, observed_at, first_seen)
            SELECT md5('p' || (i % {quarter}))::uuid, 'trait' || (i / {quarter}), 'crm', to_jsonb(i),
                   '{T0.isoformat()}'::timestamptz, '{T0.isoformat()}'::timestamptz
              FROM generate_series({first}, {rows}) AS i""",
        f"""INSERT INTO merges (surviving_profile_id, merge_id, merged_profile_id, event_id, reason)
            SELECT md5('p' || (i - 1))::uuid, md5('m' || i)::uuid, md5('p' || i)::uuid, md5('e' || i)::uuid, 'rule'
              FROM generate_series({first}, {rows}) AS i""",
        f"""INSERT INTO event_ids (event_id, occurred_at)
            SELECT md5('e' || i)::uuid, '{T0.isoformat()}'::timestamptz + i * interval '1 second'
              FROM generate_series({first}, {rows}) AS i""",
        f"""INSERT INTO events (event_id, occurred_at, profile_id, type, source, received_at, body)
            SELECT md5('e' || i)::uuid, '{T0.isoformat()}'::timestamptz + i * interval '1 second',
                   md5('p' || (i % {half}))::uuid, 'product.viewed', 'web', now(), '{{"type": "product.viewed"}}'
              FROM generate_series({first}, {rows}) AS i""",
        f"""INSERT INTO scheduled_triggers (profile_id, trigger_id, scenario, fire_at, event_id, payload, status,
                                            occurred_at, dedupe_key)
            SELECT md5('p' || (i % {half}))::uuid, md5('t' || i)::uuid, 'scenario' || (i % 20),
                   '{T0.isoformat()}'::timestamptz + i * interval '1 second', md5('e' || i)::uuid,
                   '{{"type": "cart.updated"}}', CASE WHEN i % 20 = 0 THEN 'pending' WHEN i % 20 = 1
                   THEN 'cancelled' ELSE 'fired' END,
                   '{T0.isoformat()}'::timestamptz + i * interval '1 second' - interval '1 hour', 'cart-' || i
              FROM generate_series({first}, {rows}) AS i""",
        f"""INSERT INTO messages (message_id, profile_id, scenario, channel, status, trigger_event_id, provider,
                                  provider_message_id, created_at)
            SELECT 'msg-' || i, md5('p' || (i % {half}))::uuid, 'scenario' || (i % 20), 'email',
                   CASE WHEN i % 50 = 0 THEN 'sending' ELSE 'sent' END, md5('e' || i)::uuid, 'smtp', 'pm-' || i,
                   '{T0.isoformat()}'::timestamptz + i * interval '1 second'
              FROM generate_series({first}, {rows}) AS i""",
        f"""INSERT INTO consents (profile_id, channel, purpose, status, occurred_at, source, event_id)
            SELECT md5('p' || (i % {half}))::uuid, CASE WHEN i % 2 = 0 THEN 'email' ELSE 'sms' END, 'marketing',
                   CASE WHEN i % 7 = 0 THEN 'opted_out' ELSE 'opted_in' END,
                   '{T0.isoformat()}'::timestamptz + i * interval '1 second', 'web', md5('c' || i)::uuid
              FROM generate_series({first}, {rows}) AS i""",
    ]


async def load(conn: asyncpg.Connection, rows: int) -> None:
    """Empty the hot tables, fill them with ``rows`` rows each, and ANALYZE them (as a bulk load must)."""
    await conn.execute(f"TRUNCATE {', '.join(TABLES)}")
    for statement in _load_sql(1, rows):
        await conn.execute(statement)
    await conn.execute(f"ANALYZE {', '.join(TABLES)}")


async def grow(conn: asyncpg.Connection, rows: int, to: int, tables: set[str]) -> None:
    """Add rows ``rows + 1``..``to`` to each of ``tables``, without ANALYZE: what a day of traffic does before
    autovacuum comes round (on a busy server it may not for a long while; Greenplum 6 does not at all)."""
    for statement in _load_sql(rows + 1, to):
        if statement.split()[2] in tables:  # INSERT INTO <table>
            await conn.execute(statement)


# -- the hot statements and arguments like the stages' (a batch of 250) -----------------------------------


def _profiles(rows: int) -> list[uuid.UUID]:
    step = max(1, rows // BATCH)
    return [uuid.UUID(hex=_md5(f"p{i}")) for i in range(1, rows + 1, step)][:BATCH]


def _chunk(rows: int) -> list[uuid.UUID]:
    """A campaign sender's chunk: up to 2,000 profiles whose ids are neighbours."""
    ids = sorted(uuid.UUID(hex=_md5(f"p{i}")) for i in range(1, rows + 1))
    return ids[len(ids) // 3:len(ids) // 3 + min(2000, max(1, len(ids) // 100))]


def _bounds(ids: list[uuid.UUID]) -> tuple[uuid.UUID, uuid.UUID]:
    return min(ids), max(ids)


def _events(rows: int) -> list[uuid.UUID]:
    step = max(1, rows // BATCH)
    return [uuid.UUID(hex=_md5(f"e{i}")) for i in range(1, rows + 1, step)][:BATCH]


def _md5(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()


@dataclass(frozen=True)
class Hot:
    """A hot statement: who runs it, its SQL and the arguments of a typical batch for a table size."""

    name: str
    sql: str
    args: Callable[[int], tuple[Any, ...]]


def _golden_args(rows: int) -> tuple[Any, ...]:
    return (["first_name", "city"], ["source_priority", "most_recent"], ["first_name"], "most_recent",
            _profiles(rows), ["crm"], [10])


def _insert_events_args(rows: int) -> tuple[Any, ...]:
    ids = [uuid.uuid4() for _ in range(BATCH)]
    at = [T0 + timedelta(seconds=i) for i in range(BATCH)]
    return (ids, at, _profiles(rows), ["product.viewed"] * BATCH, ["web"] * BATCH, [None] * BATCH, at,
            ['{"type": "product.viewed"}'] * BATCH)


def _keys(rows: int) -> tuple[list[str], list[str]]:
    step = max(1, rows // BATCH)
    values = [f"user{i}@example.ru" for i in range(1, rows + 1, step)][:BATCH]
    return ["email"] * len(values), values


HOT = [
    # The resolver: where identities point, the profiles it locks, their constraints, traits and golden record.
    Hot("resolver lookup", resolve_sql._LOOKUP, lambda n: (*_keys(n), _profiles(n)[:20])),
    Hot("resolver lock profiles", resolve_sql._LOCK_PROFILES, lambda n: (_profiles(n),)),
    Hot("resolver constraints", resolve_sql._PROFILE_CONSTRAINTS, lambda n: (_profiles(n), ["crm_id"])),
    Hot("resolver touch identities", resolve_sql._TOUCH_IDENTITIES,
        lambda n: (*_keys(n), [T0] * len(_keys(n)[0]))),
    Hot("resolver canonical ids", resolve_sql._CANONICAL_IDS, lambda n: (_profiles(n),)),
    Hot("resolver merge profiles", resolve_sql._MERGE_PROFILES, lambda n: (_profiles(n)[:5], _profiles(n)[5:10])),
    Hot("resolver merge identities", resolve_sql._MERGE_IDENTITIES,
        lambda n: (_profiles(n)[:5], _profiles(n)[5:10])),
    Hot("golden refresh", resolve_sql._GOLDEN, _golden_args),
    Hot("golden refresh (no most_frequent)", resolve_sql._FREQ.sub("NULL::bigint", resolve_sql._GOLDEN),
        _golden_args),
    Hot("events insert + dedupe", event_sql._INSERT_RESOLVED, _insert_events_args),
    Hot("events move to survivors", event_sql._MOVE_TO_SURVIVORS, lambda n: (_profiles(n)[:5], _profiles(n)[5:10])),
    Hot("events any in window", event_sql._ANY_IN_WINDOW,
        lambda n: (list(range(BATCH)), _profiles(n), ["order.placed"] * BATCH, [T0] * BATCH,
                   [T0 + timedelta(days=1)] * BATCH)),
    Hot("replay: profiles created by", profile_sql._CREATED_BY, lambda n: (_events(n),)),
    Hot("replay: merges by event", profile_sql._MERGES_BY, lambda n: (_events(n),)),
    # What the triggers and delivery read of a batch of profiles.
    Hot("profile links", profile_sql._LINKS, lambda n: (_profiles(n),)),
    Hot("golden of", profile_sql._GOLDEN_OF, lambda n: (_profiles(n),)),
    Hot("golden states", profile_sql._GOLDEN_STATES, lambda n: (_profiles(n),)),
    Hot("identities by recency", profile_sql._IDENTITIES_BY_RECENCY, lambda n: (_profiles(n),)),
    Hot("current consent", consent_sql._CURRENT, lambda n: (_profiles(n), *_bounds(_profiles(n)))),
    Hot("best identity", profile_sql._BEST_IDENTITY,
        lambda n: (_profiles(n), ["email", "phone"], *_bounds(_profiles(n)))),
    # A campaign chunk: thousands of profiles with neighbouring ids (the sender reads the audience in id order).
    Hot("current consent, campaign chunk", consent_sql._CURRENT, lambda n: (_chunk(n), *_bounds(_chunk(n)))),
    Hot("best identity, campaign chunk", profile_sql._BEST_IDENTITY,
        lambda n: (_chunk(n), ["email", "phone"], *_bounds(_chunk(n)))),
    # The triggers' timers.
    Hot("timers cancel", timer_sql._CANCEL_PENDING,
        lambda n: (_profiles(n), ["scenario1"] * BATCH, [T0 + timedelta(days=1)] * BATCH)),
    Hot("timers move", timer_sql._MOVE_PENDING, lambda n: (_profiles(n)[:5], _profiles(n)[5:10])),
    Hot("timers settle", timer_sql._SETTLE, lambda n: (_profiles(n), _events(n), "superseded")),
    Hot("timers mark fired", timer_sql._MARK_FIRED, lambda n: (_profiles(n), _events(n))),
    Hot("timers due", timer_sql._DUE, lambda n: (T0, T0, 500)),
    # Delivery's send log.
    Hot("messages claim", message_sql._CLAIM,
        lambda n: ([f"msg-{i}" for i in range(1, BATCH + 1)], list(message_sql.FINAL_STATUSES))),
    Hot("messages rows", message_sql._ROWS, lambda n: ([f"msg-{i}" for i in range(1, BATCH + 1)],)),
    Hot("messages record", message_sql._RECORD,
        lambda n: tuple([[f"msg-{i}" for i in range(1, BATCH + 1)]] + [["sent"] * BATCH, ["email"] * BATCH]
                        + [[None] * BATCH] * 5 + [[T0] * BATCH])),
    Hot("messages logged intents", message_sql._LOGGED_INTENTS,
        lambda n: (_profiles(n), ["scenario1"] * BATCH)),
    Hot("messages for callback", message_sql._FIND_FOR_CALLBACK,
        lambda n: (["msg-1", "msg-2"], "smtp", ["pm-3", "pm-4"])),
]


# -- planning ------------------------------------------------------------------------------------------------


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _large(relation: str) -> bool:
    # Every loaded event is of 2026; the other partitions are empty (scanning those costs nothing).
    return relation in TABLES or relation == "events_y2026"


def full_reads(plan: dict[str, Any]) -> list[str]:
    """The nodes of ``plan`` that read a whole large table: a sequential scan, or an index walked end to end."""
    found = []
    for node in _nodes(plan):
        relation = node.get("Relation Name", "")
        if not _large(relation):
            continue
        if node["Node Type"] == "Seq Scan":
            found.append(f"Seq Scan on {relation}")
        elif node["Node Type"] in ("Index Scan", "Index Only Scan") and "Index Cond" not in node:
            found.append(f"{node['Node Type']} of all of {node.get('Index Name')} on {relation}")
    return found


@dataclass(frozen=True)
class Prepared:
    """A statement PREPAREd on the server under ``name``, with the types of its parameters."""

    name: str
    types: list[str]


async def prepare(conn: asyncpg.Connection, name: str, sql: str) -> Prepared:
    await conn.execute(f"PREPARE {name} AS {sql}")
    types = await conn.fetchval("SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = $1", name)
    return Prepared(name, list(types))


async def explain(conn: asyncpg.Connection, prepared: Prepared, args: tuple[Any, ...]) -> dict[str, Any]:
    """The plan of ``EXECUTE`` of ``prepared`` with ``args``, under the session's plan_cache_mode. EXECUTE takes
    no bind parameters inside EXPLAIN, so the server quotes each argument as a literal of its type first."""
    literals = [await conn.fetchval(f"SELECT quote_nullable($1::{typ}::text) || '::{typ}'", arg)
                for typ, arg in zip(prepared.types, args, strict=True)]
    # In a transaction rolled back: EXPLAIN does not run the statement, but take no chances with the UPDATEs.
    transaction = conn.transaction()
    await transaction.start()
    try:
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE {prepared.name}({', '.join(literals)})")
    finally:
        await transaction.rollback()
    # A store's connection decodes json itself (its type codec); a plain one gives the text.
    plan: dict[str, Any] = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    return plan


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(pg_dsn)
    try:
        # Autovacuum would ANALYZE the tables behind the test's back; the test decides when statistics change.
        # (A partitioned table takes no storage parameters: its 2026 partition holds the rows.)
        for table in [*(t for t in TABLES if t != "events"), "events_y2026"]:
            await connection.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        yield connection
    finally:
        await connection.close()


async def _plans(conn: asyncpg.Connection, mode: str, rows: int, tag: str) -> dict[str, dict[str, Any]]:
    await conn.execute(f"SET plan_cache_mode = {mode}")
    plans = {}
    for i, hot in enumerate(HOT):
        plans[hot.name] = await explain(conn, await prepare(conn, f"hot_{tag}_{i}", hot.sql), hot.args(rows))
    return plans


async def test_hot_statements_stay_on_their_indexes_on_large_tables(conn: asyncpg.Connection) -> None:
    await load(conn, SMALL)
    # On 100 rows a scan is the right plan: the check is about large tables, but every statement plans.
    for mode in ("force_custom_plan", "force_generic_plan"):
        assert set(await _plans(conn, mode, SMALL, f"small_{mode}")) == {hot.name for hot in HOT}
    # Generic plans made now, on small tables, and cached: explained again below, after the load.
    early = [await prepare(conn, f"early_{i}", hot.sql) for i, hot in enumerate(HOT)]
    for hot, statement in zip(HOT, early, strict=True):
        await explain(conn, statement, hot.args(SMALL))

    await load(conn, LARGE)  # ends with ANALYZE, as a bulk import does
    wrong = {}
    for mode in ("force_custom_plan", "force_generic_plan"):
        for name, plan in (await _plans(conn, mode, LARGE, f"large_{mode}")).items():
            if reads := full_reads(plan):
                wrong[f"{name} ({mode})"] = reads
    # ANALYZE changed the tables' statistics: PostgreSQL drops the generic plans cached before, and plans anew.
    for hot, statement in zip(HOT, early, strict=True):
        if reads := full_reads(await explain(conn, statement, hot.args(LARGE))):
            wrong[f"{hot.name} (generic, cached on small tables)"] = reads
    assert wrong == {}, f"on {LARGE:,} rows per table:\n" + "\n".join(
        f"  {name}: {reads}" for name, reads in wrong.items())


# The statements seen reading whole tables under load: profiles by id, the golden refresh, the timers' cancel
# (and more of their kind). Only reads and updates: explaining the events insert (a data-modifying CTE into a
# partitioned table) happens to invalidate the session's cached plans, which would hide what is shown here.
STALE_PRONE = [hot for hot in HOT if hot.name in {
    "profile links", "golden of", "resolver lock profiles", "golden refresh", "golden refresh (no most_frequent)",
    "timers cancel", "timers settle", "messages claim", "messages rows"}]


# The tables those statements read (only these grow: the test stays short).
GROWN_TABLES = {"profiles", "profile_traits", "scheduled_triggers", "messages"}


async def _prepared_on_small_tables(conn: asyncpg.Connection, tag: str) -> list[Prepared]:
    """Each stale-prone statement prepared and run once on the small tables, under ``conn``'s plan_cache_mode."""
    prepared = [await prepare(conn, f"{tag}_{i}", hot.sql) for i, hot in enumerate(STALE_PRONE)]
    for hot, statement in zip(STALE_PRONE, prepared, strict=True):
        await explain(conn, statement, hot.args(SMALL))
    return prepared


async def _full_reads_now(conn: asyncpg.Connection, prepared: list[Prepared]) -> dict[str, list[str]]:
    wrong = {}
    for hot, statement in zip(STALE_PRONE, prepared, strict=True):
        if reads := full_reads(await explain(conn, statement, hot.args(GROWN))):
            wrong[hot.name] = reads
    return wrong


async def test_a_plan_cached_on_small_tables_outlives_their_growth_but_not_on_the_stores_connections(
        pg_dsn: str, conn: asyncpg.Connection) -> None:
    """PostgreSQL's plan cache (plan_cache_mode auto) moves a prepared statement to a generic plan once that
    looks no dearer than the custom ones; made while the tables were small, that plan scans them, and it stays
    until their statistics change (autovacuum's ANALYZE: late on a busy server, never on Greenplum 6). Shown
    on a plain connection with the generic plan forced; the store's connections plan every execution for its
    arguments and the tables as they are, and stay on the indexes."""
    store = Store(pg_dsn, pool_size=1)
    await store.start()
    try:
        async with store.pool.acquire() as pooled:
            assert await pooled.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            await load(conn, SMALL)
            generic = await _prepared_on_small_tables(conn, "generic")
            custom = await _prepared_on_small_tables(pooled, "pooled")

            await grow(conn, SMALL, GROWN, GROWN_TABLES)
            assert (await _full_reads_now(conn, generic)).keys() == {hot.name for hot in STALE_PRONE}
            assert await _full_reads_now(pooled, custom) == {}

            await pooled.execute("RESET ALL")  # what the pool does when a connection is given back
            assert await pooled.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
    finally:
        await store.stop()


async def test_greenplum_connections_keep_the_servers_plan_cache_mode(pg_dsn: str) -> None:
    """Greenplum 6 has no plan_cache_mode (a connection naming it would be refused), so the greenplum dialect
    leaves the server's setting alone; docs/operations.md says what to do there."""
    store = Store(pg_dsn, pool_size=1, dialect="greenplum")
    await store.start()
    try:
        assert await store.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await store.stop()


# Tables of tens of thousands of rows: a young deployment's, and for long its smaller tables.
MIDDLE = 20_000
# What the resolver runs in its batch transaction (IdentityGraph.resolve).
RESOLVER = [hot for hot in HOT if hot.name.startswith(("resolver ", "golden refresh", "events insert", "events move"))]


async def test_the_resolvers_statements_probe_tables_of_tens_of_thousands_of_rows_in_its_transactions(
        conn: asyncpg.Connection) -> None:
    """At the server's default random_page_cost (4, a spinning disk's price for an index probe) the planner
    reads a 20,000-row table whole and hashes it rather than probe a batch's keys, 2-5x the time on data in
    memory; the resolver's batch transaction prices a probe at resolver_random_page_cost (1.1) and stays on
    the indexes."""
    await load(conn, MIDDLE)
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    await conn.execute("SET random_page_cost = 4")  # PostgreSQL's default, whatever this server's
    on_default = {hot.name for i, hot in enumerate(RESOLVER)
                  if full_reads(await explain(conn, await prepare(conn, f"default_{i}", hot.sql), hot.args(MIDDLE)))}
    assert {"resolver lookup", "resolver lock profiles", "golden refresh"} <= on_default

    wrong = {}
    async with conn.transaction():
        await conn.execute(f"SET LOCAL random_page_cost = {Settings().resolver_random_page_cost}")
        for i, hot in enumerate(RESOLVER):
            plan = await explain(conn, await prepare(conn, f"batch_{i}", hot.sql), hot.args(MIDDLE))
            if reads := full_reads(plan):
                wrong[hot.name] = reads
    assert wrong == {}, f"on {MIDDLE:,} rows per table:\n" + "\n".join(
        f"  {name}: {reads}" for name, reads in wrong.items())
    assert await conn.fetchval("SHOW random_page_cost") == "4"  # SET LOCAL: the transaction's only


async def test_the_identity_graph_prices_probes_in_its_batch_transaction_only(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    lookup = ProfileRepository.lookup

    async def spying(conn: asyncpg.Connection, *args: Any) -> Any:
        seen.append(await conn.fetchval("SHOW random_page_cost"))
        return await lookup(conn, *args)

    monkeypatch.setattr(ProfileRepository, "lookup", staticmethod(spying))
    servers = await store.fetchval("SHOW random_page_cost")
    assert servers != "1.1"
    event = Event.model_validate({"type": "customer.updated", "source": "crm", "occurred_at": T0.isoformat(),
                                  "identities": [{"kind": "email", "value": "anna@example.ru"}]})
    await IdentityGraph(store.pool, random_page_cost=1.1).resolve([event])
    await IdentityGraph(store.pool).resolve([event])
    assert seen == ["1.1", servers]
    assert await store.fetchval("SHOW random_page_cost") == servers


@pytest.mark.parametrize(("update", "expected"), [
    ({}, 1.1),
    ({"resolver_random_page_cost": 2.0}, 2.0),
    ({"resolver_random_page_cost": None}, None),  # the server's
    ({"dialect": "greenplum"}, None),
])
def test_the_probe_cost_the_settings_give_the_resolver(update: dict[str, Any], expected: float | None) -> None:
    assert Settings(**update).resolver_probe_cost == expected


def _identity_reads(plan: dict[str, Any]) -> set[str]:
    """How ``plan`` reads ``identities``: the indexes it scans (a bitmap's index scan names no relation), or a
    sequential scan."""
    reads = {node["Index Name"] for node in _nodes(plan) if node.get("Index Name", "").startswith("identities_")}
    return reads | {"Seq Scan" for node in _nodes(plan)
                    if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "identities"}


async def test_the_limited_kinds_a_batch_holds_are_probed_by_profile_whatever_the_kinds_statistics_say(
        conn: asyncpg.Connection) -> None:
    """The resolver reads the values of the limited kinds (crm_id, ecom_customer_id, ...) its batch's profiles
    hold. Analyzed while ecom_customer_id was new, the statistics call it rare; as `profile_id = ANY AND kind =
    ANY` the planner then walked the primary key (kind, value) through all 20,000 of them, under either
    random_page_cost. The statement probes (profile_id, kind) per profile instead."""
    async def identities(first: int, last: int, kinds: list[str]) -> None:
        await conn.execute(f"""INSERT INTO identities (kind, value, profile_id, source)
            SELECT k, k || ':' || i, md5('p' || i)::uuid, 'web'
              FROM generate_series({first}, {last}) AS i, unnest($1::text[]) AS k""", kinds)

    await conn.execute("TRUNCATE identities")
    await identities(1, MIDDLE, ["anonymous_id", "email", "phone"])
    await identities(1, 50, ["ecom_customer_id"])
    await conn.execute("ANALYZE identities")
    await identities(51, MIDDLE, ["ecom_customer_id"])
    await conn.execute("SET plan_cache_mode = force_custom_plan")
    args = (_profiles(MIDDLE), ["crm_id", "ecom_customer_id", "erp_customer_id", "loyalty_card"])
    naive = await prepare(conn, "naive_constraints", """
        SELECT profile_id, kind, value FROM identities WHERE profile_id = ANY($1::uuid[]) AND kind = ANY($2::text[])""")
    for cost in ("4", "1.1"):
        await conn.execute(f"SET random_page_cost = {cost}")
        assert _identity_reads(await explain(conn, naive, args)) == {"identities_pkey"}  # the walk
        statement = await prepare(conn, f"constraints_{cost.replace('.', '_')}", resolve_sql._PROFILE_CONSTRAINTS)
        assert _identity_reads(await explain(conn, statement, args)) == {"identities_profile_kind_idx"}
