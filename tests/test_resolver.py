"""The resolver stage against the real PostgreSQL: new / attach / merge, replays, DLQ, consent, limits."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdp_hub.bus.base import Record
from cdp_hub.bus.memory import MemoryBus
from cdp_hub.config import Settings
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import build_stage
from cdp_hub.pipeline.stage import StageOutput
from cdp_hub.resolver import IdentityRules, find_profile, load_profile

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_offsets = itertools.count()


@pytest.fixture
async def hub(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Hub]:
    """A started hub on an in-process bus and the real PostgreSQL and Redis (the resolver needs no broker)."""
    settings = Settings(postgres_dsn=pg_dsn, redis_url=redis_url, data_dir=tmp_path / "data")
    h = Hub(settings, bus=MemoryBus(), metrics=Metrics())
    await h.start()
    yield h
    await h.stop()


def event(*idents: tuple[str, str], type: str = "customer.updated", source: str = "crm", at: int = 0,
          traits: dict[str, Any] | None = None, properties: dict[str, Any] | None = None,
          profile_id: uuid.UUID | None = None, rid: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type,
        "source": source,
        "source_record_id": rid or uuid.uuid4().hex,
        "occurred_at": (T0 + timedelta(minutes=at)).isoformat(),
        "identities": [{"kind": k, "value": v} for k, v in idents],
        "traits": traits or {},
        "properties": properties or {},
    }
    if profile_id is not None:
        body["profile_id"] = str(profile_id)
    return body


def records(*events: dict[str, Any] | bytes) -> list[Record]:
    return [Record("cdp.events", 0, next(_offsets), None, e if isinstance(e, bytes) else orjson.dumps(e))
            for e in events]


def decoded(out: StageOutput) -> list[dict[str, Any]]:
    return [orjson.loads(m.value) for m in out.messages]


async def profile_count(hub: Hub) -> int:
    return int(await hub.store.fetchval("SELECT count(*) FROM profiles WHERE merged_into IS NULL"))


async def test_new_profile_attach_and_outputs(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    first = event(("email", " Anna@Example.com "), traits={"first_name": "Anna", "city": "Moscow"})
    out = await stage.handle(records(first))
    msgs = decoded(out)
    assert [m["type"] for m in msgs] == ["profile.created", "customer.updated"]
    pid = msgs[1]["profile_id"]
    assert msgs[0]["profile_id"] == pid and msgs[0]["properties"] == {"profile_id": pid}
    assert out.messages[1].key == pid.encode()
    assert out.messages[1].headers == (("cdp.type", b"customer.updated"), ("cdp-schema", b"cdp.event/1"),
                                       ("cdp-producer", b"cdp-hub/0.1"))
    assert await hub.store.fetchval("SELECT created_by_event::text FROM profiles WHERE profile_id = $1",
                                    uuid.UUID(pid)) == msgs[1]["event_id"]

    # A second event with the same e-mail and a new phone attaches the phone to the same profile.
    out = await stage.handle(records(event(("email", "anna@example.com"), ("phone", "8 (916) 123-45-67"),
                                           at=5, traits={"city": "Kazan"})))
    assert [m["type"] for m in decoded(out)] == ["customer.updated"]
    assert decoded(out)[0]["profile_id"] == pid
    view = await find_profile(hub.store, "phone", "+7 916 123 45 67")
    assert view is not None and str(view.profile_id) == pid
    assert {(i.kind, i.value) for i in view.identities} == {("email", "anna@example.com"),
                                                           ("phone", "+79161234567")}
    assert view.golden == {"first_name": "Anna", "city": "Kazan"}  # most recent city wins by default
    assert {(t.trait, t.value) for t in view.traits} >= {("city", "Moscow"), ("city", "Kazan")}
    assert len(view.recent_events) == 2


async def test_merge_into_oldest_with_audit_and_event(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    out_a = await stage.handle(records(event(("email", "a@x.ru"), traits={"first_name": "Ivan"})))
    old = uuid.UUID(decoded(out_a)[1]["profile_id"])
    out_b = await stage.handle(records(event(("phone", "+79160000001"), type="order.placed",
                                             properties={"order_id": "o1", "total": "10"}, source="shop", at=1)))
    young = uuid.UUID(decoded(out_b)[1]["profile_id"])
    assert old != young

    link = event(("email", "a@x.ru"), ("phone", "+79160000001"), ("device_id", "d1"), at=2, source="app",
                 type="app.opened")
    out = await stage.handle(records(link))
    msgs = decoded(out)
    assert [m["type"] for m in msgs] == ["app.opened", "profile.merged"]
    assert msgs[0]["profile_id"] == str(old)
    merged = msgs[1]
    assert merged["profile_id"] == str(old) and out.messages[1].key == str(old).encode()
    assert merged["properties"]["surviving_profile_id"] == str(old)
    assert merged["properties"]["merged_profile_ids"] == [str(young)]

    assert await hub.store.fetchval("SELECT merged_into FROM profiles WHERE profile_id = $1", young) == old
    assert await hub.store.fetchval("SELECT count(*) FROM identities WHERE profile_id = $1", old) == 3
    assert await hub.store.fetchval("SELECT count(*) FROM events WHERE profile_id = $1", old) == 3
    row = await hub.store.fetchrow("SELECT * FROM merges WHERE merged_profile_id = $1", young)
    assert row is not None and row["surviving_profile_id"] == old and str(row["event_id"]) == msgs[0]["event_id"]
    assert "phone:+79160000001" in row["reason"]

    # The young profile's id still leads to the survivor.
    view = await load_profile(hub.store, young)
    assert view is not None and view.profile_id == old and view.requested_id == young
    assert view.golden == {"first_name": "Ivan"}
    assert [m.merged_profile_id for m in view.merges] == [young]


async def test_replay_changes_nothing_and_emits_the_same(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    batch = records(
        event(("email", "r1@x.ru"), traits={"first_name": "R"}, rid="1"),
        event(("phone", "+79160000002"), rid="2"),
        event(("email", "r1@x.ru"), ("phone", "+79160000002"), rid="3", at=1),
    )
    first = decoded(await stage.handle(batch))
    snapshot = await hub.store.fetch(
        "SELECT (SELECT count(*) FROM profiles) p, (SELECT count(*) FROM identities) i,"
        " (SELECT count(*) FROM events) e, (SELECT count(*) FROM merges) m,"
        " (SELECT sum(seen_count) FROM profile_traits) t")
    again = decoded(await stage.handle(batch))
    assert await hub.store.fetch(
        "SELECT (SELECT count(*) FROM profiles) p, (SELECT count(*) FROM identities) i,"
        " (SELECT count(*) FROM events) e, (SELECT count(*) FROM merges) m,"
        " (SELECT sum(seen_count) FROM profile_traits) t") == snapshot
    # Same messages, same ids (profile.created and profile.merged included), so downstream dedupes them.
    assert sorted((m["type"], m["event_id"], m["profile_id"]) for m in again) == \
        sorted((m["type"], m["event_id"], m["profile_id"]) for m in first)
    assert sorted(m["type"] for m in first) == ["customer.updated"] * 3 + ["profile.created"] * 2 + ["profile.merged"]


async def test_bad_and_blocked_records_go_to_dlq_and_the_batch_goes_on(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    good = event(("email", "ok@x.ru"))
    out = await stage.handle(records(
        b"{not json", event(("email", "not-an-email")), event(("email", "test@test.ru"), ("phone", "+70000000000")),
        good,
    ))
    assert [d.failure_type for d in out.dead] == ["schema_violation", "normalization_error", "resolution_error"]
    assert out.dead[2].field == "identities" and "test@test.ru" in out.dead[2].error
    assert all(d.stage == "resolver" and d.origin is not None for d in out.dead)
    assert [m["type"] for m in decoded(out)] == ["profile.created", "customer.updated"]
    # A blocked value next to a usable one neither links nor is stored.
    await stage.handle(records(event(("email", "test@test.ru"), ("phone", "+79160000003"))))
    await stage.handle(records(event(("email", "test@test.ru"), ("phone", "+79160000004"))))
    assert await profile_count(hub) == 3
    assert await hub.store.fetchval("SELECT count(*) FROM identities WHERE value = 'test@test.ru'") == 0


async def test_receipt_with_profile_id_follows_merges(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    a = uuid.UUID(decoded(await stage.handle(records(event(("email", "m1@x.ru")))))[1]["profile_id"])
    b = uuid.UUID(decoded(await stage.handle(records(event(("phone", "+79160000005"), at=1))))[1]["profile_id"])
    await stage.handle(records(event(("email", "m1@x.ru"), ("phone", "+79160000005"), at=2)))
    receipt = event(("push_token", "tok-1"), type="message.delivered", source="push", at=3, profile_id=b,
                    properties={"message_id": "m-1", "channel": "push"})
    msgs = decoded(await stage.handle(records(receipt)))
    assert [m["type"] for m in msgs] == ["message.delivered"]
    assert msgs[0]["profile_id"] == str(a)
    assert await hub.store.fetchval("SELECT profile_id FROM identities WHERE kind = 'push_token'") == a

    # An unknown profile id and no usable identity: a resolution error.
    ghost = event(("email", "test@test.ru"), type="message.sent", profile_id=uuid.uuid4(),
                  properties={"message_id": "m-2", "channel": "email"})
    out = await stage.handle(records(ghost))
    assert [d.failure_type for d in out.dead] == ["resolution_error"] and not out.messages


async def test_consent_opt_out_wins_until_explicit_later_opt_in(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")

    def consent(channel: str, status: str, at: int, source: str) -> dict[str, Any]:
        return event(("email", "c@x.ru"), type="consent.changed", source=source, at=at,
                     properties={"channel": channel, "status": status})

    await stage.handle(records(consent("all", "opted_in", 0, "crm"), consent("sms", "opted_out", 5, "shop")))
    view = await find_profile(hub.store, "email", "c@x.ru")
    assert view is not None and view.golden["consent"] == {"email": "opted_in", "sms": "opted_out",
                                                           "push": "opted_in"}
    # An older opt-in arriving late does not undo the opt-out; the same instant: opt-out wins.
    await stage.handle(records(consent("sms", "opted_in", 3, "crm"), consent("email", "opted_out", 10, "shop"),
                               consent("email", "opted_in", 10, "crm")))
    view = await find_profile(hub.store, "email", "c@x.ru")
    assert view is not None and view.golden["consent"] == {"email": "opted_out", "sms": "opted_out",
                                                           "push": "opted_in"}
    await stage.handle(records(consent("sms", "opted_in", 20, "app")))
    view = await find_profile(hub.store, "email", "c@x.ru")
    assert view is not None and view.golden["consent"]["sms"] == "opted_in"


async def test_two_crm_ids_never_merge_and_the_conflict_is_recorded(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    await stage.handle(records(event(("crm_id", "C1"), ("email", "k1@x.ru"))))
    await stage.handle(records(event(("crm_id", "C2"), ("phone", "+79160000006"), at=1)))
    out = await stage.handle(records(event(("crm_id", "C1"), ("phone", "+79160000006"), at=2)))
    assert [m["type"] for m in decoded(out)] == ["customer.updated"]  # no profile.merged
    assert await profile_count(hub) == 2
    c1 = await find_profile(hub.store, "crm_id", "C1")
    assert c1 is not None and decoded(out)[0]["profile_id"] == str(c1.profile_id)  # strongest identity decides
    rows = await hub.store.fetch("SELECT rule, kind, value, cardinality(profile_ids) n FROM identity_conflicts")
    assert [(r["rule"], r["kind"], r["value"], r["n"]) for r in rows] == \
        [("shared_identity", "phone", "+79160000006", 2)]
    assert c1.conflicts and c1.conflicts[0].rule == "shared_identity"
    # The phone both records used is shared from now on: a contact point of both, linking neither.
    assert await hub.store.fetchval("SELECT count(*) FROM shared_identities WHERE value = '+79160000006'") == 2
    # A second crm_id offered to a profile is refused: the whole record goes to a profile of its own (it used
    # to join C1's profile through the e-mail, its crm_id stored nowhere), and the refused crm_id is findable.
    await stage.handle(records(event(("crm_id", "C3"), ("email", "k1@x.ru"), at=3)))
    assert await hub.store.fetchval("SELECT count(*) FROM identities WHERE kind = 'crm_id'") == 3
    c3 = await find_profile(hub.store, "crm_id", "C3")
    assert c3 is not None and c3.profile_id != c1.profile_id
    assert await profile_count(hub) == 3
    assert await hub.store.fetchval("SELECT count(*) FROM identity_conflicts") == 2


async def test_merge_size_cap_holds_the_merge(hub: Hub) -> None:
    stage = build_stage(hub, "resolver", rules=IdentityRules(max_merge_size=2))
    for i in range(3):
        await stage.handle(records(event(("email", f"cap{i}@x.ru"), at=i)))
    out = await stage.handle(records(event(*[("email", f"cap{i}@x.ru") for i in range(3)], at=5)))
    assert "profile.merged" not in [m["type"] for m in decoded(out)]
    assert await profile_count(hub) == 3
    assert await hub.store.fetchval("SELECT rule FROM identity_conflicts") == "max_merge_size"


async def test_survivorship_rules_per_trait(hub: Hub) -> None:
    rules = IdentityRules(traits={
        "first_name": {"strategy": "source_priority", "sources": ["crm", "shop"]},
        "city": {"strategy": "most_frequent"},
        "last_name": {"strategy": "first_non_empty"},
    })
    stage = build_stage(hub, "resolver", rules=rules)
    await stage.handle(records(
        event(("email", "s@x.ru"), source="shop", at=0, traits={"first_name": "Sasha", "city": "Omsk",
                                                               "last_name": "Petrov"}),
        event(("email", "s@x.ru"), source="crm", at=1, traits={"first_name": "Alexander", "city": "Tomsk"}),
        event(("email", "s@x.ru"), source="app", at=2, traits={"first_name": "Al", "city": "Omsk",
                                                              "last_name": "Petrova"}),
        event(("email", "s@x.ru"), source="app", at=3, traits={"city": "Tomsk", "last_name": ""}),
        event(("email", "s@x.ru"), source="shop", at=4, traits={"city": "Omsk"}),
    ))
    view = await find_profile(hub.store, "email", "s@x.ru")
    assert view is not None
    assert view.golden == {"first_name": "Alexander", "city": "Omsk", "last_name": "Petrov"}
    omsk = [t for t in view.traits if t.trait == "city" and t.value == "Omsk"]
    assert {t.source: t.seen_count for t in omsk} == {"shop": 2, "app": 1}


async def test_concurrent_workers_keep_one_profile_per_person(hub: Hub) -> None:
    """Two workers (own connections) resolve overlapping batches at once: no split or duplicate profile."""
    stages = [build_stage(hub, "resolver", rules=IdentityRules()) for _ in range(2)]
    people = 30
    batches: list[list[Record]] = [[], []]
    for p in range(people):
        # Each person is spread over both workers: e-mail in one, phone in the other, the link in either.
        batches[0].append(records(event(("email", f"p{p}@x.ru"), at=p))[0])
        batches[1].append(records(event(("phone", f"+7916100{p:04d}"), at=p))[0])
        batches[p % 2].append(records(event(("email", f"p{p}@x.ru"), ("phone", f"+7916100{p:04d}"), at=p))[0])
    await asyncio.gather(*(s.handle(b) for s, b in zip(stages, batches, strict=True)))
    assert await profile_count(hub) == people
    owner = {(r["kind"], r["value"]): r["profile_id"] for r in await hub.store.fetch(
        "SELECT i.kind, i.value, i.profile_id FROM identities i JOIN profiles p USING (profile_id)"
        " WHERE p.merged_into IS NULL")}
    assert len(owner) == 2 * people  # every identity points at a live profile
    per_person = [owner[("email", f"p{p}@x.ru")] for p in range(people)]
    assert [owner[("phone", f"+7916100{p:04d}")] for p in range(people)] == per_person
    assert len(set(per_person)) == people


@pytest.mark.parametrize("gp", [False, True])
def test_migration_renders_for_both_dialects(gp: bool) -> None:
    from cdp_hub.store.migrations import load_migrations, render_sql

    mig = next(m for m in load_migrations() if m.name == "resolver")
    text = render_sql(mig.sql, "greenplum" if gp else "postgres")
    assert ("DISTRIBUTED BY (kind, value)" in text) is gp
    assert ("DISTRIBUTED BY (profile_id)" in text) is gp


async def test_a_merge_done_in_the_crm_merges_despite_the_crm_id_limit(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    await stage.handle(records(event(("crm_id", "C10"), ("email", "x10@x.ru"))))
    await stage.handle(records(event(("crm_id", "C11"), ("phone", "+79160000011"), at=1)))
    merge = event(("crm_id", "C10"), at=2, properties={"merged_identities": [{"kind": "crm_id", "value": "C11"}]})
    msgs = decoded(await stage.handle(records(merge)))
    assert [m["type"] for m in msgs] == ["customer.updated", "profile.merged"]
    assert "merged in the source system (crm)" in msgs[1]["properties"]["reason"]
    view = await find_profile(hub.store, "phone", "+79160000011")
    assert view is not None and {i.value for i in view.identities} == {"C10", "C11", "x10@x.ru", "+79160000011"}
    assert await hub.store.fetchval("SELECT count(*) FROM identity_conflicts") == 0


@pytest.mark.parametrize("given", [None, uuid.UUID(int=7)])
def test_event_json_with_profile_is_the_model_copy_json(given: uuid.UUID | None) -> None:
    from cdp_hub.resolver.graph import event_json_with_profile
    from cdp_hub.schema.events import parse_event

    ev = parse_event(event(("email", "j@x.ru"), type="order.placed", properties={"order_id": "1"},
                           traits={"city": "Omsk"}, profile_id=given))
    pid = uuid.uuid4()
    assert event_json_with_profile(ev, pid) == ev.model_copy(update={"profile_id": pid}).to_json()
