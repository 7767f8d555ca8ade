"""The CRM connector passes the conformance kit (contacts with cursor-token pages, webhooks, DLQ)."""

from __future__ import annotations

from typing import Any

from cdp_hub.testing import ConnectorTests
from connectors.crm import CrmConnector


def contact(n: int, **props: Any) -> dict[str, Any]:
    return {"id": str(30000 + n), "createdAt": "2026-01-01T00:00:00.000Z",
            "updatedAt": f"2026-11-{n:02d}T08:00:00.000Z", "archived": False,
            "properties": {"email": f"client{n}@example.ru", "phone": f"8 (916) 000-00-{n:02d}",
                           "firstname": "Иван", "lastname": "Сидоров", **props}}


class TestCrmConnector(ConnectorTests):
    connector_class = CrmConnector
    config = {"base_url": "https://crm.test", "auth": {"type": "bearer", "token": "pat-test"}}
    stream = "contacts"
    records = [contact(n) for n in range(1, 6)]
    broken_record = contact(9, phone="12", email=None)
