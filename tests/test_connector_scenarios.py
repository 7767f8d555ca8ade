"""End to end: connector syncs through the running pipeline fire the retail catalogue's scenarios.

An ERP (1C OData, faked with respx) and a loyalty platform are synced into a hub on the real Kafka, PostgreSQL
and Redis that runs the resolver, triggers and delivery stages with the catalogue written by ``scenarios init``
(outbox channels stand in for the providers): the ERP's shipment sends the ``order_shipped`` SMS with the
tracking link, the loyalty platform's tier change up sends ``tier_upgrade``, its change down sends nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx

from cdp_hub.connector.sync import sync
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline, build_stage, trigger_options
from cdp_hub.testing.mockapi import MockApi
from cdp_hub.triggers.catalogues import write_catalogue
from connectors.erp import ErpConnector
from connectors.loyalty import LoyaltyConnector

from .conftest import _drop_keys, _test_hotstate, hub_settings

KINDS = {"email": "email", "sms": "phone", "push": "push_token", "messenger": "phone"}
MOSCOW = ZoneInfo("Europe/Moscow")
M = timedelta(minutes=1)


@pytest.fixture
async def catalogue_hub(tmp_path: Path, pg_dsn: str, redis_url: str, kafka_bootstrap: str) -> AsyncIterator[Hub]:
    catalogue = tmp_path / "catalogue"
    write_catalogue("retail", catalogue)
    settings = hub_settings(
        tmp_path, bus="kafka", pg_dsn=pg_dsn, redis_url=redis_url, kafka_bootstrap=kafka_bootstrap,
        scenarios_dir=catalogue / "scenarios", templates_dir=catalogue / "templates",
        segments_dir=catalogue / "segments", default_locale="ru",
        channels={ch: {"type": "outbox", "config": {"directory": str(tmp_path / "outbox" / ch), "kind": ch,
                                                    "address_kind": kind}} for ch, kind in KINDS.items()})
    hub = Hub(settings, metrics=Metrics(), hotstate=_test_hotstate(redis_url))
    await hub.start()
    yield hub
    await _drop_keys(hub.hotstate)
    await hub.stop()


def outbox(tmp_path: Path) -> list[dict[str, Any]]:
    found = []
    for channel in KINDS:
        for file in sorted((tmp_path / "outbox" / channel).glob("*.json")):
            found.append({**json.loads(file.read_text(encoding="utf-8")), "kind": channel})
    return found


def local(at: datetime) -> str:
    """A 1C timestamp: Moscow local time without an offset."""
    return at.astimezone(MOSCOW).strftime("%Y-%m-%dT%H:%M:%S")


async def test_connector_syncs_fire_catalogue_scenarios(catalogue_hub: Hub, tmp_path: Path) -> None:
    hub = catalogue_hub
    now = datetime.now(UTC).replace(microsecond=0)
    shipped = {"Ref_Key": "6f1c2b3a-0000-4000-8000-000000000001", "Number": "ЗК-000101", "Posted": True,
               "DeletionMark": False, "Date": local(now - timedelta(days=2)), "ДатаИзменения": local(now - 10 * M),
               "НомерНаСайте": "5200000101", "СуммаДокумента": 49990, "Валюта": "RUB",
               "Клиент": {"Код": "000010042", "Телефон": "8 (916) 123-45-67", "ЭлПочта": "anna.petrova@mail.ru"},
               "ДатаОтгрузки": local(now - 10 * M), "Перевозчик": {"Наименование": "СДЭК"}, "ТрекНомер": "1234567890",
               "Товары": [{"Артикул": "SOFA-OSLO-3", "Номенклатура": "Диван Осло", "Количество": 1, "Цена": 49990}]}
    erp = ErpConnector({"base_url": "https://erp.test/retail", "tracking_urls": {
        "СДЭК": "https://www.cdek.ru/ru/tracking?order_id={tracking_number}"}}, instance="erp", http=hub.http)
    loyalty = LoyaltyConnector({"base_url": "https://loyalty.test", "tiers": ["Базовый", "Серебряный", "Золотой"]},
                               instance="loyalty", http=hub.http)
    iso = (now - 5 * M).isoformat()
    cards = [{"card_number": "2775000000000043", "status": "active", "issued_at": iso, "updated_at": iso,
              "phone": "+7 926 555-12-34", "tier": "Серебряный", "holder": {"email": "ivan.sidorov@yandex.ru"}},
             {"card_number": "2775000000000050", "status": "active", "issued_at": iso, "updated_at": iso,
              "phone": "+7 926 555-12-35", "tier": "Золотой", "holder": {"email": "olga.ivanova@yandex.ru"}}]
    changes = [{"id": "TC-1", "card_number": "2775000000000043", "old_level": "Серебряный",
                "new_level": "Золотой", "changed_at": (now - 2 * M).isoformat()},
               {"id": "TC-2", "card_number": "2775000000000050", "old_level": "Золотой",
                "new_level": "Серебряный", "changed_at": (now - 2 * M).isoformat()}]
    pipeline = Pipeline(hub, stages=[build_stage(hub, "resolver"),
                                     build_stage(hub, "triggers", trigger_options=trigger_options(hub, daily_jobs=False)),
                                     build_stage(hub, "delivery")])
    task = asyncio.create_task(pipeline.run())
    try:
        with respx.mock(assert_all_called=False) as router:
            router.route(url__startswith="https://erp.test/retail/odata").mock(side_effect=lambda request: httpx.Response(
                200, json={"value": [shipped] if request.url.path.endswith("/Document_ЗаказКлиента") else []}))
            MockApi(loyalty, "cards", cards, page_size=100).install(router)
            MockApi(loyalty, "tier_changes", changes, page_size=100).install(router)
            await sync(hub, erp)
            await sync(hub, loyalty, stream="cards")
            await pipeline.drain(idle_polls=4, timeout=60)  # the cards' profiles exist before their tiers change
            await sync(hub, loyalty, stream="tier_changes")
        await pipeline.drain(idle_polls=4, timeout=60)
    finally:
        pipeline.stop()
        await asyncio.wait_for(task, 30)
    sent = {(m["scenario"], m["to"]): m for m in outbox(tmp_path)}
    sms = sent[("order_shipped", "+79161234567")]
    assert sms["kind"] == "sms"
    assert sms["text"] == "Заказ 5200000101 отправлен. Отследить: https://www.cdek.ru/ru/tracking?order_id=1234567890"
    upgrade = sent[("tier_upgrade", "ivan.sidorov@yandex.ru")]
    assert upgrade["kind"] == "email" and upgrade["subject"] == "Ваш новый уровень: Золотой"
    assert [key for key in sent if key[1] == "olga.ivanova@yandex.ru"] == []  # a lower tier: no congratulations

