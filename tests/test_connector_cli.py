"""`cdp-hub connectors list|spec|check|state`, `cdp-hub sync` and `cdp-hub ingest-file` end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import respx

from cdp_hub.cli import main
from cdp_hub.testing import MockApi
from connectors.loyalty import LoyaltyConnector


@pytest.fixture
def config_file(tmp_path: Path, pg_dsn: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("CDP_HUB_"):
            monkeypatch.delenv(key)
    path = tmp_path / "cdp-hub.toml"
    path.write_text(f'''
bus = "memory"
postgres_dsn = "{pg_dsn}"
redis_url = "{redis_url}"
data_dir = "{tmp_path / 'data'}"

[connectors.club]
type = "loyalty"

[connectors.club.config]
base_url = "https://loyalty.test"
page_size = 2
max_attempts = 1
auth = {{ type = "api_key", key = "very-secret-key" }}
''', encoding="utf-8")
    return path


def txn(n: int) -> dict[str, object]:
    return {"transaction_id": f"T{n}", "card_number": "2775000000000043", "type": "accrual", "points": n,
            "created_at": f"2026-11-0{n}T10:00:00Z"}


def test_list_and_spec(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    assert main(["-c", str(config_file), "connectors", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    types = {t["name"]: t for t in listing["types"]}
    assert {"ecommerce", "crm", "erp", "loyalty", "mobile", "tracking"} <= set(types)
    assert types["loyalty"]["streams"] == ["cards", "transactions", "tier_changes"]
    assert types["mobile"]["streams"] == []
    assert listing["instances"] == [{"instance": "club", "type": "loyalty", "enabled": True}]

    assert main(["-c", str(config_file), "connectors", "spec", "club"]) == 0
    spec = json.loads(capsys.readouterr().out)
    assert spec["additionalProperties"] is False and "base_url" in spec["properties"]
    assert spec["properties"]["webhook_secret"]["anyOf"][0]["format"] == "password"
    assert "discriminator" in spec["properties"]["auth"]["anyOf"][0]
    assert main(["-c", str(config_file), "connectors", "spec", "nope"]) == 3  # configuration


def test_check_sync_state(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    records = [txn(n) for n in range(1, 6)]
    with respx.mock(assert_all_called=False) as router:
        connector = LoyaltyConnector({"base_url": "https://loyalty.test", "page_size": 2})
        for stream, data in (("cards", []), ("transactions", records), ("tier_changes", [])):
            MockApi(connector, stream, data, page_size=2).install(router)
        assert main(["-c", str(config_file), "connectors", "check", "club"]) == 0
        assert "club: ok" in capsys.readouterr().out
        assert main(["-c", str(config_file), "sync", "club", "--stream", "transactions"]) == 0
        out = capsys.readouterr()
        [summary] = json.loads(out.out)
        assert summary["records"] == 5 and summary["events"] == 5 and summary["pages"] == 3
        # Not a terminal: a plain progress line on stderr (no total: a source does not say how many are left).
        assert out.err.startswith("cdp-hub sync club: 5 records, ")
        assert main(["-c", str(config_file), "connectors", "state", "club"]) == 0
        state = json.loads(capsys.readouterr().out)
        assert state["transactions"]["cursor"] == "2026-11-05T10:00:00Z"
        assert main(["-c", str(config_file), "sync", "club", "--stream", "transactions"]) == 0
        [again] = json.loads(capsys.readouterr().out)
        assert again["started_from"] == "2026-11-05T09:50:00+00:00" and again["records"] == 1  # 10 min lookback
        assert main(["-c", str(config_file), "sync", "club", "--stream", "transactions", "--full-refresh"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["records"] == 5
        assert main(["-c", str(config_file), "connectors", "state", "club", "--reset"]) == 0
        capsys.readouterr()
        assert main(["-c", str(config_file), "connectors", "state", "club"]) == 0
        assert json.loads(capsys.readouterr().out) == {}

    with respx.mock() as router:
        router.get(url__startswith="https://loyalty.test/").respond(401)
        assert main(["-c", str(config_file), "connectors", "check", "club"]) == 3  # credentials: configuration
    err = capsys.readouterr().err
    assert "credentials were rejected" in err and "very-secret-key" not in err


def test_ingest_file_and_push_only_check(capsys: pytest.CaptureFixture[str], config_file: Path,
                                         tmp_path: Path) -> None:
    export = tmp_path / "clients.csv"
    export.write_bytes("Код;Телефон;ДатаИзменения\n000001;8 (916) 123-45-67;01.11.2026\n000002;12;01.11.2026\n"
                       .encode("cp1251"))
    assert main(["-c", str(config_file), "ingest-file", "erp", str(export), "--stream", "customers"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    size = export.stat().st_size
    assert out.err.startswith(f"cdp-hub ingest-file erp: {size}/{size} bytes (100%), ")  # progress by bytes read
    assert result["events"] == 1 and result["dead_letters"] == 1
    assert result["first_errors"][0]["field"] == "identities.1.value"
    assert main(["-c", str(config_file), "ingest-file", "erp", str(tmp_path / "missing.csv")]) == 3
    assert main(["-c", str(config_file), "connectors", "check", "mobile"]) == 0
    assert "push-only" in capsys.readouterr().out
