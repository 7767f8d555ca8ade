"""The loyalty connector passes the conformance kit (transactions with page numbers, webhooks, DLQ)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import respx

from cdp_hub.connector.sync import sync
from cdp_hub.errors import ConfigurationError, RecordError
from cdp_hub.hub import Hub
from cdp_hub.testing import ConnectorTests
from cdp_hub.testing.mockapi import MockApi
from connectors.loyalty import LoyaltyConnector


def txn(n: int, **extra: Any) -> dict[str, Any]:
    return {"transaction_id": f"T{n:08d}", "card_number": "2775000000000043", "type": "accrual",
            "points": 10 * n, "balance_after": 100 + 10 * n, "created_at": f"2026-11-{n:02d}T10:00:00Z", **extra}


class TestLoyaltyConnector(ConnectorTests):
    connector_class = LoyaltyConnector
    config = {"base_url": "https://loyalty.test", "auth": {"type": "api_key", "key": "lk-test"}}
    stream = "transactions"
    records = [txn(n) for n in range(1, 6)]
    broken_record = {k: v for k, v in txn(9).items() if k != "card_number"}


# -- tiers up and down, points with an expiry, over two syncs -------------------------------------------------

TIERS = ["Базовый", "Серебряный", "Золотой", "Платиновый"]
LOYALTY_CONFIG = {**TestLoyaltyConnector.config, "page_size": 2, "tiers": TIERS}


def change(n: int, card: str, old: str | None, new: str, at: str, **extra: Any) -> dict[str, Any]:
    return {"id": f"TC-{n:05d}", "card_number": card, "old_level": old, "new_level": new, "changed_at": at,
            "reason": "purchase_volume", **extra}


CARD_1, CARD_2, CARD_3 = "2775000000000043", "2775000000000050", "2775000000000068"
CHANGES_1 = [
    change(1, CARD_1, "Базовый", "Серебряный", "2026-11-10T09:00:00Z"),
    change(2, CARD_2, "Золотой", "Серебряный", "2026-11-10T09:00:01Z", reason="yearly_requalification"),
    change(3, CARD_3, None, "Базовый", "2026-11-10T09:30:00Z", reason="enrolment"),
    change(4, CARD_3, "Базовый", "Бриллиантовый", "2026-11-10T10:00:00Z"),  # not one of the programme's tiers
    change(5, CARD_2, "серебряный", "Серебряный", "2026-11-10T11:00:00Z"),  # same tier, other spelling
]
CHANGES_2 = [*CHANGES_1, change(6, CARD_1, "Серебряный", "ЗОЛОТОЙ", "2026-11-20T09:00:00Z")]
TXNS_1 = [txn(1, card_number=CARD_1, points=350, expires_at="2027-05-01T00:00:00+03:00", receipt_id="S012-000123"),
          txn(2, card_number=CARD_1, type="redemption", points=-100)]
TXNS_2 = [*TXNS_1, txn(20, card_number=CARD_1, points=120, created_at="2026-11-20T10:00:00Z",
                       expires_at="2027-05-20T00:00:00+03:00")]


async def test_tiers_up_and_down_and_points_with_expiry_over_two_syncs(hub: Hub) -> None:
    loyalty = LoyaltyConnector(LOYALTY_CONFIG, instance="loyalty", http=hub.http)
    changes = MockApi(loyalty, "tier_changes", CHANGES_1, page_size=2)
    txns = MockApi(loyalty, "transactions", TXNS_1, page_size=2)
    with respx.mock(assert_all_called=False) as router:
        changes.install(router)
        txns.install(router)
        first = await sync(hub, loyalty, stream="tier_changes")
        await sync(hub, loyalty, stream="transactions")
        events_1 = [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.events)]
        changes.records, txns.records = CHANGES_2, TXNS_2
        await sync(hub, loyalty, stream="tier_changes")
        await sync(hub, loyalty, stream="transactions")
        events_2 = [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.events)]
    tiers = {e["source_record_id"]: e["properties"] for e in events_1 if e["type"] == "loyalty.tier_changed"}
    assert {rid: p.get("direction") for rid, p in tiers.items()} == {
        "TC-00001": "up", "TC-00002": "down", "TC-00003": None, "TC-00005": None}
    # the unknown tier went to the dead-letter queue naming its field and record; the page went on
    [dead] = first[0].ingest.errors
    assert (dead.field, dead.record_id) == ("new_level", "TC-00004") and "Бриллиантовый" in dead.error
    earned = next(e for e in events_1 if e["type"] == "loyalty.points_earned")
    assert datetime.fromisoformat(earned["properties"]["expires_at"]) == datetime(2027, 4, 30, 21, tzinfo=UTC)
    assert earned["properties"]["points"] == "350" and earned["properties"]["order_id"] == "S012-000123"
    assert [e["type"] for e in events_1].count("loyalty.points_redeemed") == 1
    # The second sync sends only what is new; records read again keep their ids.
    seen = {e["event_id"] for e in events_1}
    new = [e for e in events_2 if e["event_id"] not in seen]
    assert sorted((e["type"], e["source_record_id"]) for e in new) == [
        ("loyalty.points_earned", "T00000020"), ("loyalty.tier_changed", "TC-00006")]
    upgrade = next(e for e in new if e["type"] == "loyalty.tier_changed")
    assert upgrade["properties"]["direction"] == "up" and upgrade["traits"]["loyalty_tier"] == "ЗОЛОТОЙ"


def test_an_unknown_old_tier_is_a_record_error_too() -> None:
    loyalty = LoyaltyConnector(LOYALTY_CONFIG, instance="loyalty")
    with pytest.raises(RecordError) as caught:
        loyalty.to_events(change(7, CARD_1, "VIP", "Золотой", "2026-11-10T09:00:00Z"))
    assert (caught.value.field, caught.value.record_id) == ("old_level", "TC-00007")


def test_without_a_tier_order_there_is_no_direction() -> None:
    event = LoyaltyConnector(TestLoyaltyConnector.config).to_events(CHANGES_1[0])[0]
    assert event.properties.get("direction") is None and event.properties["to_tier"] == "Серебряный"


@pytest.mark.parametrize("tiers", [["Gold", "gold"], ["Gold", " "]])
def test_the_tier_order_is_checked(tiers: list[str]) -> None:
    with pytest.raises(ConfigurationError):
        LoyaltyConnector({**TestLoyaltyConnector.config, "tiers": tiers})


@pytest.mark.parametrize(("record", "field"), [
    (txn(1, expires_at="скоро"), "expires_at"),
    (txn(1, points="много"), "points"),
    ({k: v for k, v in txn(1).items() if k != "created_at"}, "created_at"),
])
def test_malformed_transactions_name_the_field(record: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as caught:
        LoyaltyConnector(LOYALTY_CONFIG).to_events(record)
    assert (caught.value.field, caught.value.record_id) == (field, "T00000001")
