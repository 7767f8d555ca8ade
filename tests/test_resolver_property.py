"""Property: whatever the order, the redeliveries and the number of concurrent workers, the identity graph
partitions identities into profiles exactly like an in-memory union-find of the same events.

Each example runs in its own namespace of identity values on one test database (the values carry a
per-example token), with two resolver workers on separate connections resolving interleaved batches.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdp_hub.bus.base import Record
from cdp_hub.resolver.graph import IdentityGraph
from cdp_hub.resolver.rules import IdentityRules
from cdp_hub.schema.events import parse_event
from cdp_hub.store import Store

KINDS = ("email", "phone", "device_id")
# Union-find semantics: no per-kind limits, no blocked values, no caps.
RULES = IdentityRules(kinds={"crm_id": {}}, blocked={}, max_merge_size=1000, max_profiles_per_value=None)

identity = st.tuples(st.sampled_from(KINDS), st.integers(0, 5))
event_idents = st.lists(identity, min_size=1, max_size=3, unique=True)


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, x: Any) -> Any:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: Any, b: Any) -> None:
        self.parent[self.find(a)] = self.find(b)


def _value(kind: str, n: int, token: str) -> str:
    if kind == "email":
        return f"u{n}.{token}@x.ru"
    if kind == "phone":
        return f"+7916{int(token[:6], 16) % 10**5:05d}{n:02d}"
    return f"dev-{token}-{n}"


def _events(streams: list[list[tuple[str, int]]], token: str) -> list[bytes]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [orjson.dumps({
        "type": "customer.updated", "source": "prop", "source_record_id": f"{token}-{i}",
        "occurred_at": (t0 + timedelta(seconds=i)).isoformat(),
        "identities": [{"kind": k, "value": _value(k, n, token)} for k, n in idents],
    }) for i, idents in enumerate(streams)]


async def _scenario(dsn: str, streams: list[list[tuple[str, int]]], order: list[int], redeliver: list[int],
                    split: list[bool], batch: int) -> None:
    token = uuid.uuid4().hex[:10]
    values = _events(streams, token)
    delivered = [values[i] for i in order] + [values[i % len(values)] for i in redeliver]
    queues: list[list[bytes]] = [[], []]
    for j, raw in enumerate(delivered):
        queues[int(split[j % len(split)])].append(raw)

    store = Store(dsn, pool_size=4)
    await store.start()
    try:
        graphs = [IdentityGraph(store.pool, RULES), IdentityGraph(store.pool, RULES)]

        async def worker(w: int) -> None:
            q = queues[w]
            for i in range(0, len(q), batch):
                recs = [Record("e", w, k, None, v) for k, v in enumerate(q[i:i + batch], i)]
                await graphs[w].resolve([parse_event(r.value) for r in recs])

        await asyncio.gather(worker(0), worker(1))

        uf = UnionFind()
        for idents in streams:
            keys = [(k, _value(k, n, token)) for k, n in idents]
            for key in keys:
                uf.find(key)
            for a, b in itertools.pairwise(keys):
                uf.union(a, b)
        expected: dict[Any, set[tuple[str, str]]] = {}
        for key in list(uf.parent):
            expected.setdefault(uf.find(key), set()).add(key)

        rows = await store.fetch(
            "SELECT i.kind, i.value, i.profile_id, p.merged_into FROM identities i"
            " JOIN profiles p USING (profile_id) WHERE i.value LIKE '%' || $1 || '%' OR i.kind = 'phone'"
            " AND i.value = ANY($2::text[])", token, [_value("phone", n, token) for n in range(6)])
        assert all(r["merged_into"] is None for r in rows), "an identity points at a merged-away profile"
        actual: dict[uuid.UUID, set[tuple[str, str]]] = {}
        for r in rows:
            actual.setdefault(r["profile_id"], set()).add((r["kind"], r["value"]))
        assert sorted(map(sorted, actual.values())) == sorted(map(sorted, expected.values()))

        # Every event of the example is stored once, on the profile its identities belong to.
        events = await store.fetch(
            "SELECT e.profile_id, e.body -> 'identities' -> 0 AS first FROM events e WHERE e.source_record_id"
            " LIKE $1 || '-%'", token)
        assert len(events) == len(streams)
        owner = {(r["kind"], r["value"]): r["profile_id"] for r in rows}
        for e in events:
            assert owner[(e["first"]["kind"], e["first"]["value"])] == e["profile_id"]
    finally:
        await store.stop()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    streams=st.lists(event_idents, min_size=1, max_size=18),
    data=st.data(),
    batch=st.integers(1, 6),
)
def test_partition_matches_union_find(pg_dsn: str, streams: list[list[tuple[str, int]]], data: st.DataObject,
                                      batch: int) -> None:
    order = data.draw(st.permutations(range(len(streams))))
    redeliver = data.draw(st.lists(st.integers(0, 50), max_size=6))
    split = data.draw(st.lists(st.booleans(), min_size=1, max_size=8))
    asyncio.run(_scenario(pg_dsn, streams, list(order), redeliver, split, batch))
