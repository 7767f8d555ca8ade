"""A Golden Record that never mixes two people: whole-record refusals, households, the junk list, dropped
identities, and an import you can reconcile.

The family case is the one seen in the field: two relatives share a phone, each has a CRM id; the second
person's records must not join the first person's profile through the phone, and the first person's golden
record must not take the second person's name or birth date.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_hub.cli import main
from cdp_hub.delivery.profiles import load_profiles
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import build_stage
from cdp_hub.resolver import IdentityRules, find_profile
from cdp_hub.resolver.bulk import BulkImporter
from cdp_hub.resolver.graph import BatchItem, GraphFragment
from cdp_hub.resolver.rules import ACCOUNT_KINDS, load_rules
from cdp_hub.schema.events import parse_event
from cdp_hub.store import ProfileRepository

from .test_resolver import decoded, event, hub, profile_count, records

__all__ = ["hub"]

FAMILY_PHONE = "+79163217654"


async def test_a_relative_sharing_a_phone_gets_a_profile_of_their_own(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    olga = {"first_name": "Ольга", "last_name": "Иванова", "birth_date": "1970-03-04"}
    maria = {"first_name": "Мария", "last_name": "Иванова", "birth_date": "1995-07-08"}
    await stage.handle(records(event(("crm_id", "C-1"), ("phone", FAMILY_PHONE), ("email", "olga@x.ru"),
                                     traits=olga)))
    # The daughter: her own CRM id, the family's phone, her own e-mail. The CRM-id rule refuses the mother's
    # profile, so the whole record goes elsewhere, and her ERP and app records follow her e-mail and phone.
    await stage.handle(records(event(("crm_id", "C-2"), ("phone", "8 (916) 321-76-54"), ("email", "masha@x.ru"),
                                     traits=maria, at=1)))
    await stage.handle(records(
        event(("erp_customer_id", "E-2"), ("email", "Masha@x.ru "), source="erp", traits=maria, at=2),
        event(("device_id", "d-2"), ("email", "masha@x.ru"), source="app", at=3),
    ))
    mother = await find_profile(hub.store, "crm_id", "C-1")
    daughter = await find_profile(hub.store, "crm_id", "C-2")  # the refused id is stored and findable
    assert mother is not None and daughter is not None and mother.profile_id != daughter.profile_id
    assert mother.golden["first_name"] == "Ольга" and mother.golden["birth_date"] == "1970-03-04"
    assert daughter.golden["first_name"] == "Мария"
    assert {("erp_customer_id", "E-2"), ("device_id", "d-2")} <= {(i.kind, i.value) for i in daughter.identities}
    rows = await hub.store.fetch("SELECT rule, kind, value, profile_ids FROM identity_conflicts")
    assert [(r["rule"], r["kind"], r["value"]) for r in rows] == [("shared_identity", "phone", FAMILY_PHONE)]
    assert set(rows[0]["profile_ids"]) == {mother.profile_id, daughter.profile_id}
    shared = await hub.store.fetch("SELECT profile_id FROM shared_identities WHERE value = $1", FAMILY_PHONE)
    assert {r["profile_id"] for r in shared} == {mother.profile_id, daughter.profile_id}  # a contact of both
    # Delivery may still use it: the daughter's SMS goes to the family phone (after her own numbers, if any).
    contacts = await load_profiles(ProfileRepository(hub.store), [str(daughter.profile_id), str(mother.profile_id)])
    assert contacts[str(daughter.profile_id)].addresses("phone") == [FAMILY_PHONE]
    assert contacts[str(mother.profile_id)].addresses("phone") == [FAMILY_PHONE]

    # From now on the household phone links a record only to the holder whose first name agrees.
    out = await stage.handle(records(event(("phone", FAMILY_PHONE), source="loyalty", at=4,
                                           traits={"first_name": "Маша"})))
    assert decoded(out)[0]["profile_id"] == str(daughter.profile_id)
    out = await stage.handle(records(event(("phone", FAMILY_PHONE), source="loyalty", at=5)))  # no name
    assert decoded(out)[0]["type"] == "profile.created"
    assert await profile_count(hub) == 3


async def test_a_shared_phone_with_other_names_and_no_account_ids_keeps_people_apart(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    await stage.handle(records(event(("phone", FAMILY_PHONE), ("email", "p1@x.ru"), source="shop",
                                     traits={"first_name": "Sasha", "birth_date": "1980-01-02"})))
    # Aleksandr is Sasha (a diminutive, in Cyrillic): one person; Ирина is not.
    await stage.handle(records(event(("phone", FAMILY_PHONE), source="loyalty", at=1,
                                     traits={"first_name": "Александр"})))
    await stage.handle(records(event(("phone", FAMILY_PHONE), ("email", "p2@x.ru"), source="loyalty", at=2,
                                     traits={"first_name": "Ирина", "birth_date": "1982-05-06"})))
    sasha = await find_profile(hub.store, "email", "p1@x.ru")
    irina = await find_profile(hub.store, "email", "p2@x.ru")
    assert sasha is not None and irina is not None and sasha.profile_id != irina.profile_id
    assert sasha.golden["first_name"] == "Александр" and irina.golden["first_name"] == "Ирина"


async def test_account_ids_of_every_system_are_one_per_profile(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    await stage.handle(records(event(("ecom_customer_id", "S-1"), ("phone", FAMILY_PHONE), source="shop")))
    await stage.handle(records(event(("ecom_customer_id", "S-2"), ("phone", FAMILY_PHONE), source="shop", at=1)))
    assert await profile_count(hub) == 2
    assert IdentityRules().limited_kinds() == dict.fromkeys(ACCOUNT_KINDS, 1)


async def test_a_junk_identity_is_dropped_and_recorded_not_the_record(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    body = event(("phone", "00000"), ("email", "kept@x.ru"), ("ecom_customer_id", "S-9"), rid="order-77",
                 source="shop", traits={"first_name": "Анна"})
    out = await stage.handle(records(body))
    assert [m["type"] for m in decoded(out)] == ["profile.created", "customer.updated"]
    assert len(out.dead) == 1
    letter = out.dead[0]
    assert (letter.failure_type, letter.field, letter.record_id) == ("identity_rejected", "identities.0.value",
                                                                     "order-77")
    assert "00000" in letter.error
    anna = await find_profile(hub.store, "ecom_customer_id", "S-9")
    assert anna is not None and {(i.kind, i.value) for i in anna.identities} == {
        ("email", "kept@x.ru"), ("ecom_customer_id", "S-9")}
    assert anna.golden["first_name"] == "Анна"
    # A record none of whose identities is usable still goes to the DLQ as a whole.
    out = await stage.handle(records(event(("phone", "00000"), at=1)))
    assert [d.failure_type for d in out.dead] == ["normalization_error"] and not out.messages


def test_blocked_values_extend_the_built_in_list(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('own_phones = ["8 (495) 765-43-21"]\n[blocked]\nemail = ["info@shop.ru"]\n')
    rules = load_rules(path)
    blocked = rules.blocked_set()
    for key in [("email", "info@shop.ru"), ("phone", "+74957654321"), ("email", "test@test.ru"),
                ("email", "noemail@mail.ru"), ("email", "no@yandex.ru"), ("email", "none@gmail.com"),
                ("email", "email@email.ru"), ("email", "vasya@test.com"), ("phone", "+79000000000"),
                ("phone", "+79165555555"), ("phone", "+71234567890"), ("phone", "+79999999999")]:
        assert key in blocked, key
    for key in [("email", "ivan.petrov@mail.ru"), ("phone", "+79161234567"), ("email", "anna@example.com")]:
        assert key not in blocked, key
    path.write_text('replace_builtin = true\n[blocked]\nemail = ["info@shop.ru"]\n')
    only = load_rules(path).blocked_set()
    assert ("email", "info@shop.ru") in only and ("email", "test@test.ru") not in only
    assert ("phone", "+79000000000") not in only


CSV = """id,email,phone,ecom_customer_id,first_name,birth_date
1,anna@x.ru,8 (916) 555-12-34,S-1,Анна,1990-01-02
2,ANNA@x.ru ,,S-1,Аня,
3,boris@x.ru,00000,S-2,Борис,1980-03-04
4,not-an-email,,,Bad,
5,vera@x.ru,8 (916) 555-12-34,S-3,Вера,1960-05-06
"""


async def test_import_twice_without_a_time_column_and_its_reconciliation(hub: Hub, tmp_path: Path,
                                                                        pg_dsn: str, redis_url: str,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "legacy.csv"
    path.write_text(CSV)
    first = await BulkImporter(hub, source="legacy_shop").run([path])
    rec = first.reconciliation()["sources"]["legacy_shop"]
    # 5 read: 4 stored (record 3 without its junk phone), 1 to the DLQ (no usable identity at all).
    assert (rec["records_read"], rec["events_stored"], rec["duplicates_skipped"], rec["records_to_dlq"]) == \
        (5, 4, 0, 1)
    assert rec["identities_rejected"] == {"phone does not normalize": 1}
    assert rec["balanced"] and rec["new_profiles"] == 3 and rec["merged_into_existing_profiles"] == 0
    # Вера shares Анна's phone with another shop id and another birth date: refused, both profiles named.
    assert [(r["rule"], r["kind"], r["value"], len(r["profiles"])) for r in rec["refused_links"]] == [
        ("shared_identity", "phone", "+79165551234", 2)]
    # identities: anna@x.ru, +79165551234, S-1, boris@x.ru, S-2, vera@x.ru, S-3 (the shared phone stays Анна's)
    assert rec["identities_attached"] == 7
    assert first.reconciliation()["input_sha256"] == first.input_sha256 and len(first.input_sha256) == 64
    dead = [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.dlq)]
    assert sorted(d["failure_type"] for d in dead) == ["identity_rejected", "normalization_error"]
    assert any(d["failure_type"] == "identity_rejected" and d["record_id"] == "3" and d["field"] == "phone"
               for d in dead)

    # The file has no time column: every run stamps its own time, and still nothing is stored twice.
    monkeypatch.setenv("CDP_HUB_POSTGRES_DSN", pg_dsn)
    monkeypatch.setenv("CDP_HUB_REDIS_URL", redis_url)
    monkeypatch.setenv("CDP_HUB_DATA_DIR", str(tmp_path / "cli"))
    report = tmp_path / "report.json"
    code = await asyncio.to_thread(main, ["import", str(path), "--source", "legacy_shop", "--report", str(report),
                                          "--quiet"])
    assert code == 0
    again = orjson.loads(report.read_bytes())["sources"]["legacy_shop"]
    assert (again["records_read"], again["events_stored"], again["duplicates_skipped"], again["records_to_dlq"]) \
        == (5, 0, 4, 1)
    assert again["balanced"] and again["new_profiles"] == 0
    assert "records read 5 = events stored 0 + duplicates skipped 4 + records to the DLQ 1" in capsys.readouterr().out
    assert await hub.store.fetchval("SELECT count(*) FROM events") == 4


# -- the property: for any stream of records --------------------------------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=UTC)
NAMES = ["Анна", "Аня", "Ольга", "Мария", "Маша", "Игорь", None]
# A record as a source system sends it: at most one account id (the system's own key), phones and e-mails
# from a small pool (so families, namesakes and typed-in values collide), a first name and a birth date.
record_strategy = st.tuples(
    st.tuples(st.sampled_from([None, *ACCOUNT_KINDS]), st.integers(0, 4)).flatmap(
        lambda account: st.lists(st.tuples(st.sampled_from(["phone", "email"]), st.integers(0, 4)), max_size=3).map(
            lambda contacts: ([account] if account[0] is not None else []) + contacts)).filter(bool),
    st.sampled_from(NAMES),
    st.sampled_from([None, "1990-01-01", "1991-01-01"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(record_strategy, min_size=1, max_size=40))
def test_no_profile_holds_two_account_ids_of_a_system_nor_a_refused_records_trait(
        stream: list[tuple[list[tuple[str, int]], str | None, str | None]]) -> None:
    values = {"phone": "+7916000000{}", "email": "u{}@x.ru"}
    frag = GraphFragment(IdentityRules(), T0)
    rules = IdentityRules()
    blocked = rules.blocked_set()
    seen: list[tuple[uuid.UUID, list[tuple[str, str]], str | None]] = []
    for n, (idents, name, birth) in enumerate(stream):
        keys = sorted({(k, values.get(k, "{}").format(i)) for k, i in idents}, key=lambda k: -rules.priority(k[0]))
        traits = {k: v for k, v in (("first_name", name), ("birth_date", birth)) if v}
        ev = parse_event({"type": "customer.updated", "source": "crm", "source_record_id": f"r{n}",
                          "occurred_at": (T0 + timedelta(minutes=n)).isoformat(), "traits": traits,
                          "identities": [{"kind": k, "value": v} for k, v in keys]})
        usable = [k for k in keys if k not in blocked]
        frag.apply(BatchItem(ev, usable))
        seen.append((ev.event_id, usable, name))
    # The final partition: every record's profile (merges followed to the end).
    profile_of = {eid: frag.canon(pid) for eid, pid in frag.result.profile_of.items()}
    accounts: dict[tuple[uuid.UUID, str], set[str]] = defaultdict(set)
    for pid_key, held in frag.limited.items():
        if frag.canon(pid_key) != pid_key:
            continue
        for kind, vals in held.items():
            accounts[(pid_key, kind)] |= vals
    assert all(len(v) <= 1 for v in accounts.values()), accounts
    # ... and the records each profile holds (whose traits make its golden record) carry one account id per
    # system between them (a record that itself carries two is left out: it can only be refused its second).
    from_records: dict[tuple[uuid.UUID, str], set[str]] = defaultdict(set)
    for eid, usable, _ in seen:
        own = [(kind, value) for kind, value in usable if kind in ACCOUNT_KINDS]
        if len(own) == len({kind for kind, _ in own}):
            for kind, value in own:
                from_records[(profile_of[eid], kind)].add(value)
    assert all(len(v) <= 1 for v in from_records.values()), from_records
    # A refused record's traits never reach the profile it was refused from.
    for conflict in frag.result.conflicts:
        if conflict.rule != "shared_identity":
            continue
        refused_from = {frag.canon(p) for p in conflict.profile_ids} - {profile_of[conflict.event_id]}
        assert profile_of[conflict.event_id] not in refused_from
        assert len({frag.canon(p) for p in conflict.profile_ids}) == 2
