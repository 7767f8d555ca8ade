"""The embedded mode loses nothing: on the in-process bus every command that publishes runs the stages in its
own process until what it published is stored, before it saves a checkpoint or marks a letter replayed.

Each command runs as the user runs it (``cdp-hub ...`` through :func:`cdp_hub.cli.main`, its own process
state, its own in-process bus that dies with the call); what it leaves in PostgreSQL is read afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import respx

from cdp_hub.cli import main
from cdp_hub.config import Settings
from cdp_hub.connector.state import PgStateStore
from cdp_hub.store import DeadLetterRepository, EventRepository, ProfileRepository, Store
from cdp_hub.testing import MockApi
from connectors.loyalty import LoyaltyConnector


@pytest.fixture
def config_file(tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("CDP_HUB_"):
            monkeypatch.delenv(key)
    path = tmp_path / "cdp-hub.toml"
    # fakeredis: the commands' hot state needs no per-test prefix on the shared Redis.
    path.write_text(f'''
bus = "memory"
postgres_dsn = "{pg_dsn}"
redis_url = "fakeredis://"
data_dir = "{tmp_path / 'data'}"
poll_timeout_ms = 20

[connectors.club]
type = "loyalty"

[connectors.club.config]
base_url = "https://loyalty.test"
page_size = 2
max_attempts = 1
auth = {{ type = "api_key", key = "k" }}
''', encoding="utf-8")
    return path


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[Store]:
    store = Store(pg_dsn, pool_size=2)
    await store.start()
    yield store
    await store.stop()


async def dead_letters(store: Store, source: str) -> list[Any]:
    """Archived dead letters of ``source`` not replayed yet (delivery adds its own: no channel is configured)."""
    return await DeadLetterRepository(store).recent(limit=50, failure_type=None, source=source,
                                                    include_replayed=False)


async def stored_events(store: Store) -> dict[str, int]:
    """Stored events by ``source/type``, of the source systems only (not the hub's own, such as decisions)."""
    return {f"{r['source']}/{r['type']}": r["n"] for r in await EventRepository(store).count_by_source_and_type()
            if not r["source"].startswith("cdp-hub")}


def cli(config: Path, *argv: str) -> int:
    return main(["-c", str(config), *argv])


def txn(n: int) -> dict[str, object]:
    return {"transaction_id": f"T{n}", "card_number": "2775000000000043", "type": "accrual", "points": n,
            "created_at": f"2026-11-0{n}T10:00:00Z"}


async def test_sync_stores_every_page_in_the_profiles_before_its_checkpoint_moves(
        config_file: Path, db: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen_at_checkpoint: list[tuple[str, int]] = []
    real_put = PgStateStore.put

    async def spy_put(self: PgStateStore, connector: str, stream: str, state: dict[str, Any]) -> None:
        # What is in PostgreSQL at the moment the checkpoint moves (a query of the command's own pool).
        counts = {r["source"]: r["n"] for r in await EventRepository(self.store).count_by_source_and_type()}
        seen_at_checkpoint.append((state["cursor"], counts.get("club", 0)))
        await real_put(self, connector, stream, state)

    monkeypatch.setattr(PgStateStore, "put", spy_put)
    with respx.mock(assert_all_called=False) as router:
        connector = LoyaltyConnector({"base_url": "https://loyalty.test", "page_size": 2})
        MockApi(connector, "transactions", [txn(n) for n in range(1, 6)], page_size=2).install(router)
        code = await asyncio.to_thread(cli, config_file, "sync", "club", "--stream", "transactions")
    assert code == 0
    [summary] = json.loads(capsys.readouterr().out)
    assert summary["events"] == 5
    # Pages of 2: each checkpoint covers only records whose events the resolver has stored already.
    assert seen_at_checkpoint[:3] == [("2026-11-02T10:00:00Z", 2), ("2026-11-04T10:00:00Z", 4),
                                      ("2026-11-05T10:00:00Z", 5)]
    assert all(stored == 5 for _, stored in seen_at_checkpoint[3:])
    assert sum(n for key, n in (await stored_events(db)).items() if key.startswith("club/")) == 5
    assert await ProfileRepository(db).count_live() == 1  # one card: one customer


async def test_a_failing_stage_keeps_the_checkpoint_where_it_was(
        config_file: Path, db: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from cdp_hub.resolver.stage import ResolverStage

    async def broken(self: ResolverStage, batch: Any) -> Any:
        raise RuntimeError("the database is gone")

    monkeypatch.setattr(ResolverStage, "process", broken)
    monkeypatch.setattr("cdp_hub.pipeline.embedded.SETTLE_TIMEOUT_SECONDS", 1.0)
    with respx.mock(assert_all_called=False) as router:
        connector = LoyaltyConnector({"base_url": "https://loyalty.test", "page_size": 2})
        MockApi(connector, "transactions", [txn(n) for n in range(1, 4)], page_size=2).install(router)
        code = await asyncio.to_thread(cli, config_file, "sync", "club", "--stream", "transactions")
    assert code == 1
    assert "were not stored" in capsys.readouterr().err
    assert await PgStateStore(db).all("club") == []  # the next sync starts over: nothing is skipped


async def test_ingest_file_and_dlq_replay_store_everything_before_they_return(
        config_file: Path, db: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "clients.csv"
    export.write_bytes("Код;Телефон;ДатаИзменения\n000001;8 (916) 123-45-67;01.11.2026\n000002;12;01.11.2026\n"
                       .encode("cp1251"))
    assert await asyncio.to_thread(cli, config_file, "ingest-file", "erp", str(export), "--stream", "customers") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["events"] == 1 and result["dead_letters"] == 1
    # The process is gone; the event is in the profiles and the dead letter in the archive.
    # (the hub's own message.decided events, the welcome decided for each new profile, are counted apart)
    assert sum(n for key, n in (await stored_events(db)).items() if key.startswith("erp/")) == 1
    [letter] = await dead_letters(db, "erp")
    dlq_id = letter.envelope["dlq_id"]

    fixed = dict(json.loads(letter.envelope["payload"]) if isinstance(letter.envelope["payload"], str)
                 else letter.envelope["payload"])
    phone_field = next(k for k, v in fixed.items() if v == "12")
    fixed[phone_field] = "8 (916) 765-43-21"
    fixes = tmp_path / "fixes.jsonl"
    fixes.write_text(json.dumps({"dlq_id": dlq_id, "payload": fixed}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert await asyncio.to_thread(cli, config_file, "dlq", "replay", "--fixes", str(fixes)) == 0
    assert "replayed 1" in capsys.readouterr().out
    assert sum(n for key, n in (await stored_events(db)).items() if key.startswith("erp/")) == 2
    assert await ProfileRepository(db).count_live() == 2
    assert await dead_letters(db, "erp") == []  # marked replayed, and its record is stored


async def test_import_archives_its_dead_letters_before_it_returns(
        config_file: Path, db: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "legacy.csv"
    path.write_text("id,email,phone,updated_at\n1,anna@x.ru,,2024-01-01T10:00:00Z\n"
                    "2,not-an-email,,2024-01-01T10:00:00Z\n", encoding="utf-8")
    assert await asyncio.to_thread(cli, config_file, "import", str(path), "--source", "legacy", "--json") == 0
    assert json.loads(capsys.readouterr().out)["dlq"] == 1
    [letter] = await dead_letters(db, "legacy")
    assert letter.envelope["stage"] == "import" and letter.envelope["field"] == "email"


async def test_on_kafka_nothing_runs_in_the_command(tmp_path: Path, pg_dsn: str) -> None:
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.embedded import downstream, settle_nothing

    settings = Settings(bus="kafka", postgres_dsn=pg_dsn, redis_url="fakeredis://", data_dir=tmp_path)
    hub = Hub(settings)  # not started: downstream must not need the broker on Kafka
    async with downstream(hub) as settle:
        assert settle is settle_nothing
    await hub.http.aclose()
