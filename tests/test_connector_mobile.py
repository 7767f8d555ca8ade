"""The mobile-app connector (push only) passes the conformance kit: batches, webhooks, DLQ per event."""

from __future__ import annotations

from typing import Any

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
