"""The product catalogue: product.updated events through the resolver's catalogue step, on real PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from cdp_hub.bus.base import Record
from cdp_hub.errors import SchemaViolation
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import build_stage
from cdp_hub.schema.events import Event, parse_event
from cdp_hub.schema.export import validate_at_edge
from cdp_hub.store import ProductRepository

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
_offsets = itertools.count()


def product(sku: str, at: datetime, *, rid: str | None = None, **props: Any) -> dict[str, Any]:
    return {"type": "product.updated", "source": "shop", "source_record_id": rid or f"{sku}@{at.isoformat()}",
            "occurred_at": at.isoformat(), "properties": {"sku": sku, **props}}


def view(email: str, sku: str, at: datetime) -> dict[str, Any]:
    return {"type": "product.viewed", "source": "shop", "source_record_id": f"v-{email}-{sku}-{at.isoformat()}",
            "occurred_at": at.isoformat(), "identities": [{"kind": "email", "value": email}],
            "properties": {"sku": sku}}


def order(email: str, skus: list[str], at: datetime, oid: str) -> dict[str, Any]:
    return {"type": "order.placed", "source": "shop", "source_record_id": oid, "occurred_at": at.isoformat(),
            "identities": [{"kind": "email", "value": email}],
            "properties": {"order_id": oid, "items": [{"sku": s, "quantity": 1} for s in skus]}}


def records(hub: Hub, *events: dict[str, Any]) -> list[Record]:
    return [Record(hub.topics.events, 0, next(_offsets), None, orjson.dumps(e)) for e in events]


def out_events(out: Any) -> list[Event]:
    return [Event.from_json(m.value) for m in out.messages]


def test_a_catalogue_event_needs_no_identity_and_a_person_event_still_does() -> None:
    event = parse_event(product("SOFA-1", T0, name="Диван", price="49990"))
    assert event.identities == [] and event.properties["sku"] == "SOFA-1"
    validate_at_edge(product("SOFA-1", T0, price="1"))
    with pytest.raises(SchemaViolation) as exc:
        parse_event({"type": "order.placed", "source": "shop", "occurred_at": T0.isoformat(),
                     "properties": {"order_id": "1"}})
    assert exc.value.field == "identities"
    with pytest.raises(SchemaViolation):
        validate_at_edge({"type": "order.placed", "source": "shop", "occurred_at": T0.isoformat(),
                          "identities": [], "properties": {"order_id": "1"}})


async def test_product_updates_fill_the_catalogue_without_creating_profiles(hub: Hub) -> None:
    resolver = build_stage(hub, "resolver")
    out = await resolver.handle(records(
        hub,
        product("SOFA-1", T0, name="Диван Осло", category_path=["Мебель", "Диваны"], brand="Nord",
                price="49990", old_price="59990", currency="RUB", availability={"msk": 3, "spb": 0},
                image_url="https://shop.example/i/sofa.jpg", product_url="https://shop.example/p/sofa", durable=True),
        # a later partial update (an ERP export: price and stock only) keeps what it does not name
        product("SOFA-1", T0 + timedelta(hours=1), price="47990", availability={"msk": 2}),
    ))
    assert out.dead == [] and out.messages == []
    row = (await ProductRepository(hub.store).get(["SOFA-1"]))["SOFA-1"]
    assert row["name"] == "Диван Осло" and row["category"] == "Диваны" and row["category_path"] == ["Мебель", "Диваны"]
    assert row["price"] == Decimal("47990") and row["stock_total"] == 2 and row["durable"] is True
    assert await hub.store.fetchval("SELECT count(*) FROM profiles") == 0

    # an update older than the stored one (late, or a replay of an old file) changes nothing
    await resolver.handle(records(hub, product("SOFA-1", T0 - timedelta(days=1), price="1")))
    assert (await ProductRepository(hub.store).get(["SOFA-1"]))["SOFA-1"]["price"] == Decimal("47990")


async def test_a_price_drop_is_told_to_recent_viewers_who_did_not_buy(hub: Hub) -> None:
    resolver = build_stage(hub, "resolver")
    await resolver.handle(records(
        hub,
        product("LAMP-1", T0, name="Лампа", price="2990", currency="RUB", availability={"msk": 5}),
        view("anna@example.com", "LAMP-1", T0 + timedelta(days=1)),
        view("boris@example.com", "LAMP-1", T0 + timedelta(days=1)),
        order("boris@example.com", ["LAMP-1"], T0 + timedelta(days=2), "o-1"),
        view("old@example.com", "LAMP-1", T0 - timedelta(days=60)),
    ))
    drop = product("LAMP-1", T0 + timedelta(days=3), rid="lamp-drop", price="1990", name="Лампа",
                   image_url="https://shop.example/i/lamp.jpg")
    out = await resolver.handle(records(hub, drop))
    derived = out_events(out)
    assert [e.type for e in derived] == ["product.price_dropped"]
    [event] = derived
    assert event.identity("email") == "anna@example.com" and event.profile_id is not None
    assert event.properties["price"] == "1990" and event.properties["previous_price"] == "2990"
    assert event.properties["image_url"] == "https://shop.example/i/lamp.jpg"
    assert out.messages[0].topic == hub.topics.profile_events and out.messages[0].key == str(event.profile_id).encode()

    # the batch replayed after a crash: the same event (same id), though the price is already stored
    again = out_events(await resolver.handle(records(hub, drop)))
    assert [e.event_id for e in again] == [event.event_id]


async def test_back_in_stock_is_derived_when_stock_returns(hub: Hub) -> None:
    resolver = build_stage(hub, "resolver")
    await resolver.handle(records(
        hub,
        product("BED-1", T0, name="Кровать", price="30000", availability={"msk": 0}),
        view("anna@example.com", "BED-1", T0 + timedelta(hours=1)),
    ))
    assert out_events(await resolver.handle(records(hub, product("BED-1", T0 + timedelta(hours=2),
                                                                 availability={"msk": 0})))) == []
    out = out_events(await resolver.handle(records(hub, product("BED-1", T0 + timedelta(hours=3),
                                                                availability={"msk": 4}))))
    assert [e.type for e in out] == ["product.back_in_stock"]
    assert out[0].properties["sku"] == "BED-1" and out[0].properties["price"] == "30000"


async def test_a_price_drop_reaches_the_triggers_stage_as_a_profile_event(hub: Hub) -> None:
    resolver = build_stage(hub, "resolver")
    await resolver.handle(records(hub, product("CUP-1", T0, price="500"),
                                  view("anna@example.com", "CUP-1", T0 + timedelta(hours=1))))
    out = await resolver.handle(records(hub, product("CUP-1", T0 + timedelta(hours=2), price="400")))
    [message] = out.messages
    triggers = build_stage(hub, "triggers", scenarios=[])
    decoded = triggers.decode(Record(message.topic, 0, 0, message.key, message.value))
    assert decoded.type == "product.price_dropped"


def test_the_shop_maps_each_variant_of_a_product_to_a_catalogue_event() -> None:
    from connectors.ecommerce import EcommerceConnector

    shop = EcommerceConnector(instance="shop", config={"storefront_url": "https://shop.example",
                                                       "durable_categories": ["Диваны"]})
    record = {"id": 801, "title": "Диван Осло", "product_type": "Мебель > Диваны", "vendor": "Nord",
              "handle": "divan-oslo", "status": "active", "updated_at": "2026-05-01T10:00:00+03:00",
              "image": {"src": "https://cdn.example/oslo.jpg"},
              "variants": [{"sku": "OSLO-GREY", "title": "Серый", "price": "49990.00", "compare_at_price": "59990.00",
                            "inventory_quantity": 3},
                           {"sku": "OSLO-BLUE", "title": "Синий", "price": "49990.00", "inventory_quantity": -1},
                           {"sku": None, "title": "Образец", "price": "0"}]}
    assert shop.stream_of(record) == "products"
    grey, blue = shop.to_events(record)
    assert grey.type == "product.updated" and grey.identities == []
    assert grey.properties == {
        "sku": "OSLO-GREY", "name": "Диван Осло (Серый)", "category_path": ["Мебель", "Диваны"], "brand": "Nord",
        "price": "49990.00", "old_price": "59990.00", "currency": "RUB", "availability": {"online": "3"},
        "image_url": "https://cdn.example/oslo.jpg", "product_url": "https://shop.example/products/divan-oslo",
        "durable": True, "active": True}
    assert blue.properties["availability"] == {"online": "0"}  # oversold: nothing on hand
    assert grey.event_id == shop.to_events(record)[0].event_id  # the same version again: the same event


def test_the_erp_product_export_assembles_stock_per_store() -> None:
    from connectors.erp import ErpConnector

    erp = ErpConnector(instance="erp", config={"durable_groups": ["Кровати"]})
    rows = [
        {"Артикул": "BED-160", "Наименование": "Кровать Сканди 160", "Группа": "Мебель/Кровати", "Бренд": "Nord",
         "Цена": "39 990,00", "СтараяЦена": "", "КодМагазина": "MSK-01", "Остаток": "2",
         "ДатаИзменения": "01.05.2026 10:00:00"},
        {"Артикул": "BED-160", "Наименование": "Кровать Сканди 160", "Группа": "Мебель/Кровати", "Бренд": "Nord",
         "Цена": "39 990,00", "СтараяЦена": "", "КодМагазина": "SPB-02", "Остаток": "0",
         "ДатаИзменения": "01.05.2026 10:00:00"},
        {"Артикул": "MATT-160", "Наименование": "Матрас 160", "Группа": "Мебель/Матрасы", "Цена": "19990",
         "КодМагазина": "MSK-01", "Остаток": "5", "ДатаИзменения": "01.05.2026 11:00:00"},
    ]
    records = list(erp.assemble(rows))
    assert len(records) == 2 and erp.stream_of(records[0]) == "products"
    [bed] = erp.to_events(records[0])
    assert bed.type == "product.updated" and bed.identities == []
    assert bed.occurred_at == datetime(2026, 5, 1, 7, 0, tzinfo=UTC)  # Moscow time, stored in UTC
    assert bed.properties["availability"] == {"MSK-01": "2", "SPB-02": "0"}
    assert bed.properties["price"] == "39990.00" and bed.properties["durable"] is True
    assert bed.properties["category_path"] == ["Мебель", "Кровати"]
    [matt] = erp.to_events(records[1])
    assert matt.properties["durable"] is False and "old_price" not in matt.properties


def test_the_edge_refuses_catalogue_events_from_public_sources_and_derived_events_from_anyone() -> None:
    from cdp_hub.edge.policy import SourcePolicy
    from cdp_hub.errors import PolicyViolation

    update = parse_event(product("SOFA-1", T0, price="1"))
    assert SourcePolicy.of("erp", "trusted", None).admit(update) is update
    with pytest.raises(PolicyViolation, match="cannot change the catalogue"):
        SourcePolicy.of("web", "public", None).admit(update)
    derived = parse_event({"type": "product.price_dropped", "source": "web", "occurred_at": T0.isoformat(),
                           "identities": [{"kind": "email", "value": "a@example.com"}],
                           "properties": {"sku": "SOFA-1", "change_id": "x"}})
    for policy in (SourcePolicy.of("web", "public", None), SourcePolicy.of("erp", "trusted", None)):
        with pytest.raises(PolicyViolation, match="internal event type"):
            policy.admit(derived)
