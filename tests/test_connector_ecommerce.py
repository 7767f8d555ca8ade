"""The e-commerce connector passes the conformance kit (pull of orders, webhooks, DLQ)."""

from __future__ import annotations

from typing import Any

from cdp_hub.testing import ConnectorTests
from connectors.ecommerce import EcommerceConnector


def order(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": 5200000000 + n, "name": f"#{1000 + n}", "email": f"buyer{n}@example.ru", "phone": None,
            "customer": {"id": 7100000000 + n, "first_name": "Анна"}, "currency": "RUB",
            "created_at": f"2026-11-{n:02d}T10:00:00+03:00", "updated_at": f"2026-11-{n:02d}T12:00:00+03:00",
            "financial_status": "paid", "total_price": "199.80",
            "line_items": [{"sku": "MLK-032-1L", "title": "Молоко", "quantity": 2, "price": "99.90"}], **extra}


class TestEcommerceConnector(ConnectorTests):
    connector_class = EcommerceConnector
    config = {"base_url": "https://shop.test",
              "auth": {"type": "api_key", "header": "X-Shop-Access-Token", "key": "shpat_test"}}
    stream = "orders"
    records = [order(n) for n in range(1, 6)]
    broken_record = order(9, email=None, customer=None, phone="8 (000) 12")
