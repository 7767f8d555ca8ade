"""The ERP connector passes the conformance kit (1C OData documents with $skip/$top, DLQ)."""

from __future__ import annotations

from typing import Any

from cdp_hub.testing import ConnectorTests
from connectors.erp import ErpConnector


def receipt(n: int, phone: str = "8 916 123 45 67") -> dict[str, Any]:
    return {"Ref_Key": f"00000000-0000-4000-8000-{n:012d}", "Number": f"S001-{n:06d}",
            "Date": f"2026-11-{n:02d}T14:00:00", "ВидДокумента": "ЧекККМ", "Posted": True, "DeletionMark": False,
            "Магазин": {"Код": "S001"}, "Клиент": {"Код": f"{10000 + n:09d}", "Телефон": phone},
            "СуммаДокумента": 179.8, "Товары": [{"Артикул": "MLK", "Количество": 2, "Цена": 89.9}]}


class TestErpConnector(ConnectorTests):
    connector_class = ErpConnector
    config = {"base_url": "https://erp.test/retail",
              "auth": {"type": "basic", "username": "cdp", "password": "1c-password"}}
    stream = "receipts"
    records = [receipt(n) for n in range(1, 6)]
    broken_record = receipt(9, phone="8 (000) 12")
