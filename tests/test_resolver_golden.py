"""Property: the SQL survivorship (what the store computes) equals the reference in survivorship.py."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp_hub.resolver.graph import refresh_golden
from cdp_hub.resolver.rules import IdentityRules, TraitRule
from cdp_hub.resolver.survivorship import Observation, golden_record
from cdp_hub.store import Store

SOURCES = ["crm", "shop", "app", "loyalty"]
TRAITS = ["first_name", "city", "consent.email", "consent.sms"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)

observation = st.tuples(
    st.sampled_from(TRAITS), st.sampled_from(SOURCES),
    st.sampled_from(["Anna", "Ann", "A!", "Omsk", "Tomsk", "opted_in", "opted_out"]),
    st.integers(1, 5),  # seen_count
)
rules_st = st.builds(
    IdentityRules,
    default_strategy=st.sampled_from(["most_recent", "source_priority", "most_frequent", "first_non_empty"]),
    traits=st.dictionaries(
        st.sampled_from(["first_name", "city"]),
        st.builds(TraitRule, strategy=st.sampled_from(["most_recent", "source_priority", "most_frequent",
                                                       "first_non_empty"]),
                  sources=st.lists(st.sampled_from(SOURCES), unique=True, max_size=3)),
        max_size=2),
)


async def _check(dsn: str, rows: list[tuple[str, str, str, int]], rules: IdentityRules) -> None:
    pid = uuid.uuid4()
    observations: dict[tuple[str, str, str], Observation] = {}
    for i, (trait, source, value, n) in enumerate(rows):
        if trait.startswith("consent.") and value not in ("opted_in", "opted_out"):
            value = "opted_out"
        # Distinct times everywhere: exact ties are broken arbitrarily by design, not compared here.
        first, last = T0 + timedelta(minutes=2 * i), T0 + timedelta(minutes=2 * i + 1)
        observations.setdefault((trait, source, value), Observation(trait, source, value, first, last, n))
    store = Store(dsn, pool_size=2)
    await store.start()
    try:
        async with store.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO profiles (profile_id) VALUES ($1)", pid)
            await conn.executemany(
                "INSERT INTO profile_traits (profile_id, trait, source, value, observed_at, first_seen, seen_count)"
                " VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, $7)",
                [(pid, o.trait, o.source, orjson.dumps(o.value).decode(), o.observed_at, o.first_seen, o.seen_count)
                 for o in observations.values()])
            await refresh_golden(conn, [pid], rules)
            stored = await conn.fetchval("SELECT golden FROM profiles WHERE profile_id = $1", pid)
    finally:
        await store.stop()
    assert stored == golden_record(observations.values(), rules)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(observation, max_size=12), rules=rules_st)
def test_sql_survivorship_equals_the_reference(pg_dsn: str, rows: list[tuple[str, str, str, int]],
                                                rules: IdentityRules) -> None:
    asyncio.run(_check(pg_dsn, rows, rules))
