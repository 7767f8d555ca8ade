"""The loyalty connector passes the conformance kit (transactions with page numbers, webhooks, DLQ)."""

from __future__ import annotations

from typing import Any

from cdp_hub.testing import ConnectorTests
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
