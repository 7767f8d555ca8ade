"""The mobile-app connector (push only) passes the conformance kit: batches, webhooks, DLQ per event."""

from __future__ import annotations

from typing import Any

import pytest

from cdp_hub.errors import RecordError
from cdp_hub.testing import ConnectorTests
from connectors.mobile import MobileConnector


def batch(n: int, *events: dict[str, Any]) -> dict[str, Any]:
    return {"batch_id": f"b-{n}", "app": {"id": "ru.example.shop", "version": "5.2.1"},
            "device": {"id": f"DEV-{n}", "platform": "ios", "os_version": "18.1"}, "user": {},
            "events": list(events) or [
                {"id": f"e{n}-1", "name": "app_open", "ts": 1763000000000 + n, "params": {}},
                {"id": f"e{n}-2", "name": "screen_view", "ts": 1763000001000 + n, "params": {"screen": "home"}},
                {"id": f"e{n}-3", "name": "push_token", "ts": 1763000002000 + n, "params": {"token": f"apns:{n}"}},
            ]}


class TestMobileConnector(ConnectorTests):
    connector_class = MobileConnector
    records = [batch(n) for n in range(1, 4)]
    broken_record = batch(9, {"id": "ok", "name": "app_open", "ts": 1763000000000},
                          {"id": "bad", "name": "screen_view", "ts": 1763000000000, "params": {}})


def test_wishes_and_searches_in_the_app() -> None:
    record = batch(5, {"id": "w1", "name": "add_to_wishlist", "ts": 1763000000000,
                       "params": {"sku": "SOFA-OSLO-3", "name": "Диван Осло", "price": "49 990,00"}},
                   {"id": "s1", "name": "search", "ts": 1763000001000,
                    "params": {"query": "диван угловой", "results_count": 12}})
    wish, search = MobileConnector().to_events(record)
    assert wish.type == "wishlist.added" and wish.properties["sku"] == "SOFA-OSLO-3"
    assert wish.properties["price"] == "49990.00" and wish.source_record_id == "w1"
    assert search.type == "search.performed" and search.properties["results_count"] == 12


@pytest.mark.parametrize(("event", "field"), [
    ({"id": "w2", "name": "add_to_wishlist", "ts": 1763000000000, "params": {"name": "без артикула"}}, "params.sku"),
    ({"id": "w3", "name": "add_to_wishlist", "ts": 1763000000000, "params": {"sku": "A", "price": "дорого"}},
     "params.price"),
    ({"id": "s2", "name": "search", "ts": 1763000000000, "params": {"query": "диван", "results_count": "много"}},
     "properties.results_count"),
])
def test_malformed_app_events_name_the_field(event: dict[str, Any], field: str) -> None:
    connector = MobileConnector()
    [unit] = connector.split(batch(6, event))
    with pytest.raises(RecordError) as caught:
        connector.to_events(unit)
    assert caught.value.field == field and caught.value.record_id == event["id"]
