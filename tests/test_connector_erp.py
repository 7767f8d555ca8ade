"""The ERP connector passes the conformance kit (1C OData documents with $skip/$top, DLQ)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import respx

from cdp_hub.connector.sync import sync
from cdp_hub.errors import RecordError
from cdp_hub.hub import Hub
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


# -- the order lifecycle over two syncs of a fake 1C OData service --------------------------------------------

ERP_URL = "https://erp.test/retail"
LIFECYCLE_CONFIG = {"base_url": ERP_URL, "auth": {"type": "basic", "username": "cdp", "password": "1c-password"},
                    "page_size": 2, "start_date": "2026-11-01T00:00:00+03:00",
                    "tracking_urls": {"СДЭК": "https://www.cdek.ru/ru/tracking?order_id={tracking_number}"}}
SOFA_LINE = {"НомерСтроки": 1, "Артикул": "SOFA-OSLO-3", "Номенклатура": "Диван Осло трёхместный", "Количество": 1,
             "Цена": 49990, "Сумма": 49990, "ГарантияМесяцев": 18}
CUSHION_LINE = {"НомерСтроки": 2, "Артикул": "CUSH-LIN-45", "Номенклатура": "Подушка льняная 45×45",
                "Количество": 2, "Цена": 1490, "Сумма": 2980}


def customer_order(key: str, number: str, changed: str, *, site: str | None = None, **fields: Any) -> dict[str, Any]:
    """A 1C ЗаказКлиента as the OData service returns it with $expand=Клиент,Магазин."""
    return {"Ref_Key": key, "Number": number, "Date": "2026-11-10T12:40:00", "Posted": True, "DeletionMark": False,
            "ДатаИзменения": changed, "НомерНаСайте": site, "Валюта": "RUB", "СуммаДокумента": 52970,
            "Клиент": {"Код": "000010042", "Телефон": "8 (916) 123-45-67", "ЭлПочта": "anna.petrova@mail.ru",
                       "НомерКарты": ""},
            "Магазин": None, "ДатаОплаты": None, "ДатаОтгрузки": None, "Перевозчик": None, "ТрекНомер": "",
            "СсылкаОтслеживания": "", "ДоставкаС": None, "ДоставкаПо": None, "ДатаСогласованияДоставки": None,
            "ДатаДоставки": None, "Товары": [SOFA_LINE, CUSHION_LINE], **fields}


A, B, C, D = (f"6f1c2b3a-0000-4000-8000-00000000000{n}" for n in range(1, 5))
# First sync: A (from the website) has shipped, B has a delivery slot, C was ordered and paid in a store, and D
# is broken (its delivery window ends before it starts).
ORDERS_1 = [
    customer_order(C, "ЗК-000103", "2026-11-12T09:05:00", Магазин={"Код": "S012"}, ДатаОплаты="2026-11-12T09:05:00",
                   Date="2026-11-12T09:00:00", Товары=[CUSHION_LINE], СуммаДокумента=2980),
    customer_order(A, "ЗК-000101", "2026-11-12T10:00:00", site="5200000101", ДатаОтгрузки="2026-11-12T10:00:00",
                   Перевозчик={"Наименование": "СДЭК"}, ТрекНомер="1234567890"),
    customer_order(B, "ЗК-000102", "2026-11-12T11:00:00", site="5200000102", ДоставкаС="2026-11-14T10:00:00",
                   ДоставкаПо="2026-11-14T14:00:00", ДатаСогласованияДоставки="2026-11-12T11:00:00"),
    customer_order(D, "ЗК-000104", "2026-11-12T11:30:00", ДоставкаС="2026-11-14T18:00:00",
                   ДоставкаПо="2026-11-14T09:00:00"),
]
# Second sync: A was delivered (the sofa has an 18-month warranty), B's slot moved to the evening of the 15th,
# and A's cushions came back (a return based on the order).
ORDERS_2 = [
    *ORDERS_1[:1],
    {**ORDERS_1[1], "ДатаИзменения": "2026-11-13T15:00:00", "ДатаДоставки": "2026-11-13T15:00:00"},
    {**ORDERS_1[2], "ДатаИзменения": "2026-11-13T09:00:00", "ДоставкаС": "2026-11-15T18:00:00",
     "ДоставкаПо": "2026-11-15T21:00:00", "ДатаСогласованияДоставки": "2026-11-13T09:00:00"},
    ORDERS_1[3],
]
RETURNS_2 = [{"Ref_Key": "7a000000-0000-4000-8000-000000000001", "Number": "ВЗ-000007", "Date": "2026-11-14T12:00:00",
              "Posted": True, "DeletionMark": False, "СуммаДокумента": 2980, "Магазин": {"Код": "S012"},
              "Клиент": {"Код": "000010042", "Телефон": "8 (916) 123-45-67"},
              "ДокументОснование": {"Ref_Key": A, "Number": "ЗК-000101", "НомерНаСайте": "5200000101"},
              "Товары": [CUSHION_LINE]}]


class FakeOData:
    """The 1C OData service: entity sets filtered by `$filter=<field> ge datetime'...'`, paged by $skip/$top."""

    def __init__(self) -> None:
        self.entities: dict[str, list[dict[str, Any]]] = {}
        self.filters: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        entity = request.url.path.rsplit("/", 1)[-1]
        records = self.entities.get(entity, [])
        params = request.url.params
        order_field = params["$orderby"].split()[0]
        if flt := params.get("$filter"):
            self.filters.append(flt)
            field, _, rest = flt.partition(" ge datetime'")
            since = rest.split("'")[0]
            records = [r for r in records if r[field] >= since]  # 1C local times compare as text
        records = sorted(records, key=lambda r: r[order_field])
        skip, top = int(params.get("$skip", 0)), int(params.get("$top", 100))
        return httpx.Response(200, json={"odata.metadata": "...", "value": records[skip:skip + top]})


async def _published(hub: Hub, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in await hub.bus.read_all(topic)]


async def test_order_lifecycle_over_two_syncs(hub: Hub) -> None:
    api = FakeOData()
    erp = ErpConnector(LIFECYCLE_CONFIG, instance="erp", http=hub.http)
    with respx.mock(assert_all_called=False) as router:
        router.route(url__startswith=ERP_URL).mock(side_effect=api)
        api.entities = {"Document_ЗаказКлиента": ORDERS_1}
        first = await sync(hub, erp)
        events_1 = await _published(hub, hub.topics.events)
        api.entities = {"Document_ЗаказКлиента": ORDERS_2, "Document_ВозвратТоваровОтПокупателя": RETURNS_2}
        await sync(hub, erp)
        events_all = await _published(hub, hub.topics.events)
    steps_1 = sorted((e["type"], e["properties"]["order_id"]) for e in events_1)
    assert steps_1 == [("order.delivery_scheduled", "5200000102"), ("order.paid", "ЗК-000103"),
                       ("order.placed", "ЗК-000103"), ("order.shipped", "5200000101")]
    by_type = {e["type"]: e for e in events_1}
    store = by_type["order.paid"]
    assert store["properties"]["store_id"] == "S012" and store["occurred_at"].startswith("2026-11-12T06:05:00")
    shipped = by_type["order.shipped"]["properties"]
    assert shipped["carrier"] == "СДЭК" and shipped["tracking_number"] == "1234567890"
    assert shipped["tracking_url"] == "https://www.cdek.ru/ru/tracking?order_id=1234567890"
    assert {i["value"] for i in by_type["order.shipped"]["identities"]} >= {"+79161234567", "anna.petrova@mail.ru"}
    slot = by_type["order.delivery_scheduled"]["properties"]
    assert slot["delivery_slot_start"].startswith("2026-11-14T07:00:00")  # Moscow 10:00
    assert slot["delivery_slot_end"].startswith("2026-11-14T11:00:00")
    # The broken order went to the dead-letter queue naming its field and record; the page went on.
    [dead] = first[2].ingest.errors
    assert dead.field == "ДоставкаПо" and dead.record_id == D and dead.stream == "orders"

    # The second sync re-reads changed orders (and, in the lookback window, unchanged ones): steps already sent
    # come again under the same ids, so only the new steps are new events.
    ids_1 = {e["event_id"] for e in events_1}
    new = [e for e in events_all if e["event_id"] not in ids_1]
    assert sorted((e["type"], e["properties"]["order_id"]) for e in new) == [
        ("order.delivered", "5200000101"), ("order.delivery_scheduled", "5200000102"),
        ("order.returned", "5200000101")]
    again = [e["type"] for e in events_all if e["event_id"] in ids_1]
    assert again.count("order.shipped") == 2 and again.count("order.paid") == 1  # C did not change
    delivered = next(e for e in new if e["type"] == "order.delivered")["properties"]
    assert delivered["warranty_until"].startswith("2028-05-13T12:00:00")  # 18 months after the delivery
    assert [i.get("warranty_until", "")[:10] for i in delivered["items"]] == ["2028-05-13", ""]
    moved = next(e for e in new if e["type"] == "order.delivery_scheduled")
    assert moved["properties"]["delivery_slot_start"].startswith("2026-11-15T15:00:00")
    assert moved["occurred_at"].startswith("2026-11-13T06:00:00")
    returned = next(e for e in new if e["type"] == "order.returned")["properties"]
    assert returned["return_id"] == "ВЗ-000007" and returned["total"] == "2980"
    # The second sync asked only for orders changed since the first one's checkpoint (less the 10-minute lookback).
    assert api.filters[-1] == "ДатаИзменения ge datetime'2026-11-12T11:20:00' and Posted eq true"


def test_order_step_ids_are_deterministic_and_a_new_slot_is_a_new_event() -> None:
    erp = ErpConnector(LIFECYCLE_CONFIG, instance="erp")
    first = {e.type: e.event_id for e in erp.to_events(ORDERS_1[2], stream="orders")}
    again = {e.type: e.event_id for e in erp.to_events(ORDERS_1[2], stream="orders")}
    moved = {e.type: e.event_id for e in erp.to_events(ORDERS_2[2], stream="orders")}
    assert first == again and first["order.delivery_scheduled"] != moved["order.delivery_scheduled"]


@pytest.mark.parametrize(("change", "field"), [
    ({"Клиент": None}, "Клиент"),
    ({"Клиент": {"Код": "", "Телефон": None}}, "Клиент.Код"),
    ({"ДатаИзменения": None}, "ДатаИзменения"),
    ({"ДатаОтгрузки": "вчера"}, "ДатаОтгрузки"),
    ({"СсылкаОтслеживания": "javascript:alert(1)", "ДатаОтгрузки": "2026-11-12T10:00:00"}, "СсылкаОтслеживания"),
    ({"Товары": [{**SOFA_LINE, "ГарантияМесяцев": "1,5"}], "ДатаДоставки": "2026-11-13T15:00:00"},
     "Товары.0.ГарантияМесяцев"),
    ({"Товары": [{"Номенклатура": "без артикула"}]}, "Товары.0.Артикул"),
    ({"Товары": "SOFA"}, "Товары"),
])
def test_malformed_orders_name_the_field_and_the_record(change: dict[str, Any], field: str) -> None:
    record = customer_order(A, "ЗК-000101", "2026-11-12T10:00:00", **change)
    with pytest.raises(RecordError) as caught:
        ErpConnector(LIFECYCLE_CONFIG, instance="erp").to_events(record, stream="orders")
    assert caught.value.field == field and caught.value.record_id == A


@pytest.mark.parametrize(("change", "field"), [
    ({"Товары": "MLK"}, "Товары"),
    ({"Товары": ["MLK"]}, "Товары.0"),
    ({"Товары": [{"Артикул": "MLK"}, {"Номенклатура": "без артикула"}]}, "Товары.1.Артикул"),
    ({"Товары": [{"Артикул": "MLK", "Количество": "два"}]}, "Товары.0.Количество"),
    ({"Клиент": "000010001"}, "Клиент"),
])
def test_malformed_receipts_name_the_field_and_the_record(change: dict[str, Any], field: str) -> None:
    record = {**receipt(1), **change}
    with pytest.raises(RecordError) as caught:
        ErpConnector(instance="erp").to_events(record)
    assert caught.value.field == field and caught.value.record_id == record["Ref_Key"]


def test_receipt_and_order_lines_map_alike() -> None:
    """A goods line becomes the same order item whether it comes on a till receipt or a customer order."""
    lines = [SOFA_LINE, CUSHION_LINE, {"Артикул": "MLK", "Номенклатура": "", "Количество": -2, "Цена": "89,90"}]
    erp = ErpConnector(LIFECYCLE_CONFIG, instance="erp")
    sale = erp.to_events({**receipt(1), "Товары": lines})[0]
    order = erp.to_events(customer_order(A, "ЗК-000101", "2026-11-12T10:00:00", Товары=lines), stream="orders")[0]
    assert sale.properties["items"] == order.properties["items"]
    assert sale.properties["items"][2] == {"sku": "MLK", "quantity": "2", "price": "89.90"}  # no empty name


def test_till_receipts_are_paid_and_carry_the_store() -> None:
    events = ErpConnector(instance="erp").to_events(receipt(1))
    assert [e.type for e in events] == ["order.placed", "order.paid"]
    assert {e.properties["store_id"] for e in events} == {"S001"}
    assert events[0].event_id != events[1].event_id
    sale = ErpConnector(instance="erp").to_events({**receipt(1), "ВидДокумента": "РеализацияТоваровУслуг"})
    assert [e.type for e in sale] == ["order.placed"]  # a sale on account is not paid yet


def test_an_order_the_erp_withdraws_is_cancelled_once() -> None:
    erp = ErpConnector(LIFECYCLE_CONFIG, instance="erp")
    own = erp.to_events({**ORDERS_1[0], "DeletionMark": True}, stream="orders")
    assert [e.type for e in own] == ["order.cancelled"]
    assert erp.to_events({**ORDERS_1[1], "DeletionMark": True}, stream="orders") == []  # the shop cancels its own


async def test_an_infobase_without_customer_orders_still_syncs_its_receipts(
        hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Document_ЗаказКлиента"):
            return httpx.Response(404, json={"odata.error": {"message": {"value": "Not found"}}})
        return httpx.Response(200, json={"value": [receipt(1)] if "ЧекККМ" in request.url.path else []})

    erp = ErpConnector(LIFECYCLE_CONFIG, instance="erp", http=hub.http)
    with respx.mock(assert_all_called=False) as router:
        router.route(url__startswith=ERP_URL).mock(side_effect=answer)
        results = await sync(hub, erp)
    assert [(r.stream, r.ingest.events) for r in results] == [("receipts", 2), ("returns", 0), ("orders", 0)]
    assert "has no Document_ЗаказКлиента" in caplog.text
