"""Bulk import: CSV/JSONL into golden records, set-wise, with existing profiles, rules and the DLQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from cdp_hub.bus.memory import MemoryBus
from cdp_hub.cli import main
from cdp_hub.config import Settings
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import build_stage
from cdp_hub.resolver import IdentityRules, find_profile
from cdp_hub.resolver.bulk import BulkImporter

from .test_resolver import event, records

CSV = """id,email,phone,crm_id,first_name,last_name,birth_date,city,updated_at
1,anna@x.ru,8 (916) 111-22-33,,Anna,Ivanova,1990-05-01,Moscow,2024-01-01T10:00:00Z
2,ANNA@x.ru ,,,Anna,Ivanova,,Kazan,2024-02-01T10:00:00Z
3,,+7 916 111 22 33,C-7,Anya,,,,2024-03-01T10:00:00Z
4,boris@x.ru,,,Boris,,,Omsk,2024-01-05T10:00:00Z
5,not-an-email,,,Bad,,,,2024-01-05T10:00:00Z
6,test@test.ru,,,Junk,,,,2024-01-05T10:00:00Z
7,boris@x.ru,,,Boris,,1985-13-40,,2024-01-05T10:00:00Z
"""


@pytest.fixture
async def hub(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Hub]:
    settings = Settings(postgres_dsn=pg_dsn, redis_url=redis_url, data_dir=tmp_path / "data")
    h = Hub(settings, bus=MemoryBus(), metrics=Metrics())
    await h.start()
    yield h
    await h.stop()


async def test_csv_import_builds_golden_records_and_dead_letters(hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "legacy.csv"
    path.write_text(CSV)
    summary = await BulkImporter(hub, source="legacy_crm").run([path])
    assert (summary.records, summary.loaded, summary.dead) == (7, 4, 3)
    assert (summary.profiles_created, summary.merges, summary.streamed) == (2, 0, 0)
    dead = await hub.bus.read_all(hub.topics.dlq)
    reasons = [orjson.loads(r.value) for r in dead]
    assert [(d["failure_type"], d["field"]) for d in reasons] == [
        ("normalization_error", "email"), ("resolution_error", "identities"), ("schema_violation", "traits.birth_date")]
    assert all(d["stage"] == "import" and d["source"] == "legacy_crm" for d in reasons)
    # The tables it wrote have fresh planner statistics (a manual ANALYZE; autovacuum's counts elsewhere).
    analyzed = await hub.store.fetch("SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL")
    assert {"profiles", "identities", "profile_traits", "merges", "event_ids", "consents"} <= {
        r["relname"] for r in analyzed}
    assert "analyze" in summary.phases

    anna = await find_profile(hub.store, "crm_id", "C-7")
    assert anna is not None
    assert {(i.kind, i.value) for i in anna.identities} == {
        ("email", "anna@x.ru"), ("phone", "+79161112233"), ("crm_id", "C-7")}
    assert anna.golden == {"first_name": "Anya", "last_name": "Ivanova", "birth_date": "1990-05-01",
                           "city": "Kazan"}  # most recent non-empty value per trait
    assert {t.value for t in anna.traits if t.trait == "first_name"} == {"Anna", "Anya"}
    assert len(anna.recent_events) == 3 and anna.recent_events[0].source == "legacy_crm"

    # Importing the same file again changes nothing.
    again = await BulkImporter(hub, source="legacy_crm").run([path])
    assert (again.loaded, again.duplicates, again.profiles_created) == (0, 4, 0)
    assert await hub.store.fetchval("SELECT count(*) FROM events") == 4


async def test_import_joins_and_merges_existing_profiles_and_follows_the_rules(hub: Hub, tmp_path: Path) -> None:
    stage = build_stage(hub, "resolver")
    await stage.handle(records(event(("email", "old1@x.ru"), traits={"first_name": "Vera"})))
    await stage.handle(records(event(("phone", "+79162223344"), at=1)))
    await stage.handle(records(event(("crm_id", "A"), ("email", "a@x.ru"), at=2)))
    await stage.handle(records(event(("crm_id", "B"), ("email", "b@x.ru"), at=3)))
    old1 = await find_profile(hub.store, "email", "old1@x.ru")
    assert old1 is not None
    path = tmp_path / "more.jsonl"
    path.write_text("\n".join(orjson.dumps(r).decode() for r in [
        # Links two existing profiles: they merge, the older survives.
        {"id": "j1", "email": "old1@x.ru", "phone": "+7 916 222-33-44", "city": "Sochi",
         "updated_at": "2025-01-01T00:00:00Z"},
        # Would give one profile two crm ids: resolved event by event; the record goes to B's profile, and
        # the e-mail that led to A's is recorded as shared between them.
        {"id": "j2", "email": "a@x.ru", "crm_id": "B"},
        # A canonical event works too.
        {"type": "customer.updated", "source": "shop", "source_record_id": "e1",
         "occurred_at": "2025-02-01T00:00:00Z", "identities": [{"kind": "email", "value": "new@x.ru"}],
         "traits": {"first_name": "Nina"}},
        "not an object",
    ]) + "\n{broken json\n")
    summary = await BulkImporter(hub, source="legacy_shop", rules=IdentityRules()).run([path])
    assert (summary.records, summary.dead, summary.streamed) == (5, 2, 1)
    assert summary.merges == 1 and summary.conflicts == 1 and summary.profiles_created == 1
    merged = await find_profile(hub.store, "phone", "+79162223344")
    assert merged is not None and merged.profile_id == old1.profile_id
    assert merged.golden == {"first_name": "Vera", "city": "Sochi"}
    assert await hub.store.fetchval("SELECT rule FROM identity_conflicts") == "shared_identity"
    nina = await find_profile(hub.store, "email", "new@x.ru")
    assert nina is not None and nina.golden == {"first_name": "Nina"}


async def test_import_cli_prints_a_summary(hub: Hub, pg_dsn: str, redis_url: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "legacy.csv"
    path.write_text(CSV)
    monkeypatch.setenv("CDP_HUB_POSTGRES_DSN", pg_dsn)
    monkeypatch.setenv("CDP_HUB_REDIS_URL", redis_url)
    monkeypatch.setenv("CDP_HUB_DATA_DIR", str(tmp_path / "cli"))
    code = await asyncio.to_thread(main, ["import", str(path), "--source", "legacy_crm", "--json"])
    assert code == 0
    out = orjson.loads(capsys.readouterr().out)
    assert (out["records"], out["dlq"], out["profiles_created"]) == (7, 3, 2)
    assert await asyncio.to_thread(main, ["import", str(tmp_path / "nope.csv"), "--source", "x"]) == 3  # configuration
    assert "file not found" in capsys.readouterr().err


def test_fast_russian_phone_path_gives_what_the_schema_gives() -> None:
    import random
    from datetime import UTC, datetime

    from cdp_hub.resolver.bulk.importer import _RU_PHONE, RecordBuilder
    from cdp_hub.schema.identities import DEFAULT_OPTIONS, normalize_identity

    builder = RecordBuilder("s", "customer.updated", IdentityRules(), DEFAULT_OPTIONS, datetime.now(UTC), "t")
    rng = random.Random(3)
    fast = 0
    for _ in range(6000):
        d = "".join(rng.choice("0123456789") for _ in range(10))
        prefix = rng.choice(["+7", "8", "+7 ", "8 ", "+7-", "7", "", "+8", " 8"])
        shape = rng.choice(["{a}{b}{c}", "({a}) {b}{c}", "{a} {b}-{c}", "({a}){b}-{c}", "({a} {b}{c}"])
        text = prefix + shape.format(a=d[:3], b=d[3:6], c=f"{d[6:8]}-{d[8:]}")
        if _RU_PHONE.match(text) is None:
            continue
        fast += 1
        assert builder._normalize("phone", text) == normalize_identity("phone", text), text
    assert fast > 1000  # the fast path was exercised


CONSENT_CSV = """id,email,phone,crm_id,first_name,consent_email,consent_sms,consent_email_transactional,consent_at,consent_evidence,updated_at
1,anna@x.ru,,,Anna,yes,no,,2019-03-01T12:00:00Z,paper form 2019/17,2024-01-01T10:00:00Z
2,,+7 916 111 22 33,C-7,,,,opted_out,,,2024-02-01T10:00:00Z
3,anna@x.ru,+7 916 111 22 33,,,,,,,,2024-02-02T10:00:00Z
4,boris@x.ru,,,Boris,,,,,,2024-01-05T10:00:00Z
5,vera@x.ru,,,Vera,maybe,,,,,2024-01-05T10:00:00Z
"""


async def test_import_records_consent_with_its_evidence(hub: Hub, tmp_path: Path) -> None:
    from cdp_hub.store import ConsentRepository

    path = tmp_path / "crm_export.csv"
    path.write_text(CONSENT_CSV)
    jsonl = tmp_path / "more.jsonl"
    # Boris's every-channel consent (Russian "да"); and a record the rules make the streaming resolver judge
    # (two crm ids for one e-mail): its consent is recorded once its event is stored.
    jsonl.write_text("\n".join(orjson.dumps(r).decode() for r in [
        {"id": "b2", "email": "boris@x.ru", "consent_all": "да", "consent_at": "2020-06-01T00:00:00Z"},
        {"id": "k1", "email": "kira@x.ru", "crm_id": "K1"},
        {"id": "k2", "email": "kira@x.ru", "crm_id": "K2", "consent_sms": "1"},
        {"id": "f1", "email": "fax@x.ru", "consent_fax": "yes"},
    ]) + "\n")
    summary = await BulkImporter(hub, source="legacy_crm").run([path, jsonl])
    assert (summary.records, summary.dead) == (9, 2)
    dead = [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.dlq)]
    assert sorted((d["failure_type"], d["field"]) for d in dead) == [("schema_violation", "consent_email"),
                                                                    ("schema_violation", "consent_fax")]
    assert summary.streamed == 2  # k1, k2
    # anna: e-mail yes, sms no (record 1), e-mail transactional blocked (record 2, linked by the phone);
    # boris: all four channels; kira (K2): sms, through the streaming resolver.
    assert summary.consents_recorded == 3 + 4 + 1

    consents = ConsentRepository(hub.store)
    anna = await find_profile(hub.store, "email", "anna@x.ru")
    boris = await find_profile(hub.store, "email", "boris@x.ru")
    kira = await find_profile(hub.store, "crm_id", "K2")  # the e-mail is shared: two profiles
    assert anna is not None and boris is not None and kira is not None
    current = await consents.current([anna.profile_id, boris.profile_id, kira.profile_id])
    assert current[anna.profile_id] == {("email", "marketing"): "opted_in", ("sms", "marketing"): "opted_out",
                                        ("email", "transactional"): "opted_out"}
    assert current[boris.profile_id] == {(ch, "marketing"): "opted_in" for ch in ("email", "sms", "push", "messenger")}
    assert current[kira.profile_id] == {("sms", "marketing"): "opted_in"}
    history = await consents.history(anna.profile_id)
    given = next(s for s in history if (s["channel"], s["purpose"]) == ("email", "marketing"))
    assert given["source"] == "legacy_crm" and given["occurred_at"].isoformat() == "2019-03-01T12:00:00+00:00"
    assert given["evidence"] == {"method": "import", "file": "crm_export.csv", "record": "1",
                                 "reference": "paper form 2019/17"}
    # Without consent_at, the record's time.
    transactional = next(s for s in history if s["purpose"] == "transactional")
    assert transactional["occurred_at"].isoformat() == "2024-02-01T10:00:00+00:00"
    assert transactional["evidence"] == {"method": "import", "file": "crm_export.csv", "record": "2"}

    # The same files again: nothing new (statements are per record event, channel and purpose).
    again = await BulkImporter(hub, source="legacy_crm").run([path, jsonl])
    assert again.consents_recorded == 0
    assert await hub.store.fetchval("SELECT count(*) FROM consents") == 8
