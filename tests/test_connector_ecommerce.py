"""The e-commerce connector passes the conformance kit (pull of orders, webhooks, DLQ)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import respx

from cdp_hub.connector.ingest import Ingestor
from cdp_hub.connector.sync import sync
from cdp_hub.connector.webhooks import sign_webhook
from cdp_hub.errors import RecordError
from cdp_hub.hub import Hub
from cdp_hub.schema.events import Event
from cdp_hub.testing import ConnectorTests
from cdp_hub.testing.mockapi import MockApi
from connectors.ecommerce import EcommerceConnector


def order(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": 5200000000 + n, "name": f"#{1000 + n}", "email": f"buyer{n}@example.ru", "phone": None,
            "customer": {"id": 7100000000 + n, "first_name": "Анна"}, "currency": "RUB",
            "created_at": f"2026-11-{n:02d}T10:00:00+03:00", "updated_at": f"2026-11-{n:02d}T12:00:00+03:00",
            "financial_status": "paid", "total_price": "199.80",
            "line_items": [{"sku": "MLK-032-1L", "title": "Молоко", "quantity": 2, "price": "99.90"}], **extra}


def ids(event: Event) -> set[tuple[str, str]]:
    return {(i.kind, i.value) for i in event.identities}


class TestEcommerceConnector(ConnectorTests):
    connector_class = EcommerceConnector
    config = {"base_url": "https://shop.test",
              "auth": {"type": "api_key", "header": "X-Shop-Access-Token", "key": "shpat_test"}}
    stream = "orders"
    records = [order(n) for n in range(1, 6)]
    broken_record = order(9, email=None, customer=None, phone="8 (000) 12")


# -- orders moving through their statuses over two syncs ------------------------------------------------------

SHOP = "https://shop.test"
SHOP_CONFIG = {**TestEcommerceConnector.config, "page_size": 2, "storefront_url": "https://shop.example.ru"}
SOFA = {"sku": "SOFA-OSLO-3", "title": "Диван Осло трёхместный", "quantity": 1, "price": "49990.00",
        "product_type": "Мебель > Диваны"}


def shop_order(n: int, updated: str, status: str, **extra: Any) -> dict[str, Any]:
    return {**order(n, line_items=[SOFA], total_price="49990.00"), "updated_at": updated, "financial_status": status,
            "created_at": f"2026-11-{n:02d}T10:00:00+03:00", **extra}


# First sync: #1011 waits for payment (a payment link), #1012 is paid, #1013 waits too.
ORDERS_1 = [
    shop_order(11, "2026-11-11T10:00:00+03:00", "pending", payment_url="https://shop.example.ru/pay/5200000011"),
    shop_order(12, "2026-11-12T10:05:00+03:00", "paid", paid_at="2026-11-12T10:05:00+03:00"),
    shop_order(13, "2026-11-13T10:00:00+03:00", "pending", payment_url="https://shop.example.ru/pay/5200000013"),
]
# Second sync: #1011 got paid, #1012 was refunded (returned), #1013 was cancelled unpaid.
ORDERS_2 = [
    {**ORDERS_1[0], "updated_at": "2026-11-14T09:00:00+03:00", "financial_status": "paid",
     "paid_at": "2026-11-14T09:00:00+03:00"},
    {**ORDERS_1[1], "updated_at": "2026-11-14T12:00:00+03:00", "financial_status": "refunded",
     "refunds": [{"id": 9301, "created_at": "2026-11-14T12:00:00+03:00", "note": "не подошёл по цвету",
                  "refund_line_items": [{"line_item": SOFA, "quantity": 1, "subtotal": "49990.00"}]}]},
    {**ORDERS_1[2], "updated_at": "2026-11-14T13:00:00+03:00", "cancelled_at": "2026-11-14T13:00:00+03:00",
     "cancel_reason": "customer"},
]


async def test_orders_move_through_their_statuses_over_two_syncs(hub: Hub) -> None:
    shop = EcommerceConnector(SHOP_CONFIG, instance="shop", http=hub.http)
    api = MockApi(shop, "orders", ORDERS_1, page_size=2)
    with respx.mock(assert_all_called=False) as router:
        api.install(router)
        await sync(hub, shop, stream="orders")
        first = [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.events)]
        api.records = ORDERS_2
        await sync(hub, shop, stream="orders")
        both = [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.events)]
    assert sorted((e["properties"]["order_number"], e["type"]) for e in first) == [
        ("#1011", "order.placed"), ("#1012", "order.paid"), ("#1012", "order.placed"), ("#1013", "order.placed")]
    placed = {e["properties"]["order_number"]: e["properties"] for e in first if e["type"] == "order.placed"}
    assert placed["#1011"]["payment_url"] == "https://shop.example.ru/pay/5200000011"
    assert "payment_url" not in placed["#1012"]  # paid: nothing to remind of
    # The second sync reads the three changed orders again: their old steps keep their ids (the store drops
    # them), the new ones are new events, at the time the shop gives for them.
    seen = {e["event_id"] for e in first}
    new = [e for e in both if e["event_id"] not in seen]
    assert sorted((e["type"], e["properties"]["order_id"]) for e in new) == [
        ("order.cancelled", "5200000013"), ("order.paid", "5200000011"), ("order.returned", "5200000012")]
    paid = next(e for e in new if e["type"] == "order.paid")
    assert paid["occurred_at"].startswith("2026-11-14T06:00:00")
    assert next(e for e in new if e["type"] == "order.returned")["properties"]["items"][0]["sku"] == "SOFA-OSLO-3"
    assert len(both) - len(first) == len(new) + 4  # the four steps of the first sync, sent again
    assert sorted(e["event_id"] for e in both if e["event_id"] in seen) == sorted(2 * list(seen))


def test_payment_url_must_be_a_web_link() -> None:
    with pytest.raises(RecordError) as caught:
        EcommerceConnector(instance="shop").to_events({**ORDERS_1[0], "payment_url": "javascript:alert(1)"})
    assert caught.value.field == "payment_url" and caught.value.record_id == "5200000011"


# -- storefront events (the web pixel's webhooks) -------------------------------------------------------------

VARIANT = {"id": "gid://shopify/ProductVariant/4471", "sku": "SOFA-OSLO-3", "title": "Серый",
           "price": {"amount": 49990.0, "currencyCode": "RUB"},
           "product": {"id": "gid://shopify/Product/812", "title": "Диван Осло трёхместный", "type": "Диваны"}}
PAGE = {"document": {"location": {"href": "https://shop.example.ru/products/sofa-oslo"}},
        "navigator": {"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X)"}}


def pixel(event_id: str, name: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "name": name, "type": "standard", "timestamp": "2026-11-19T10:15:42.120Z",
            "clientId": "c7d1e0f2-5b1a-4c8e-9a31-4f4d2e6c1b00", "data": data, "context": PAGE, **extra}


SEARCH = pixel("sh-101", "search_submitted", {"searchResult": {"query": "диван угловой",
                                                               "productVariants": [VARIANT, VARIANT, VARIANT]}})
CART = pixel("sh-102", "cart_viewed", {"cart": {
    "id": "Z2NwLWV1cm9wZS13ZXN0NDox", "totalQuantity": 3,
    "cost": {"totalAmount": {"amount": 52970.0, "currencyCode": "RUB"}},
    "lines": [{"quantity": 1, "cost": {"totalAmount": {"amount": 49990.0, "currencyCode": "RUB"}},
               "merchandise": VARIANT},
              {"quantity": 2, "cost": {"totalAmount": {"amount": 2980.0, "currencyCode": "RUB"}},
               "merchandise": {"id": "gid://shopify/ProductVariant/5120", "sku": "CUSH-LIN-45", "title": "45×45",
                               "price": {"amount": 1490.0, "currencyCode": "RUB"},
                               "product": {"title": "Подушка льняная", "type": "Подушки"}}}]}},
    customerId="7100000042")
WISH = {**pixel("sh-103", "product_added_to_wishlist", {}), "type": "custom", "data": None,
        "customData": {"productVariant": VARIANT}}


def test_storefront_webhooks_map_searches_carts_and_wishes() -> None:
    shop = EcommerceConnector({**SHOP_CONFIG, "webhook_secret": "pixel-secret"}, instance="shop")
    events = []
    for topic, record in (("pixel/search_submitted", SEARCH), ("pixel/cart_viewed", CART),
                          ("pixel/product_added_to_wishlist", WISH)):
        body = orjson.dumps(record)
        headers = {**sign_webhook(shop.webhook, "pixel-secret", body), "X-Shop-Topic": topic}
        stream, records = shop.parse_webhook(headers, body)
        assert stream == "storefront"
        events += shop.to_events(records[0], stream=stream)
    search, cart, wish = events
    assert search.type == "search.performed" and search.source_record_id == "sh-101"
    assert search.properties["query"] == "диван угловой" and search.properties["results_count"] == 3
    assert ids(search) == {("anonymous_id", "c7d1e0f2-5b1a-4c8e-9a31-4f4d2e6c1b00")}
    assert cart.type == "cart.updated" and cart.properties["cart_id"] == "Z2NwLWV1cm9wZS13ZXN0NDox"
    assert [(i["sku"], i["quantity"], i["price"]) for i in cart.properties["items"]] == [
        ("SOFA-OSLO-3", "1", "49990.0"), ("CUSH-LIN-45", "2", "1490.0")]
    assert cart.properties["total"] == "52970.0" and cart.properties["checkout_url"] == "https://shop.example.ru/cart"
    assert ("ecom_customer_id", "7100000042") in ids(cart)
    assert wish.type == "wishlist.added" and wish.properties["sku"] == "SOFA-OSLO-3"
    assert wish.properties["name"] == "Диван Осло трёхместный" and wish.properties["price"] == "49990.0"
    assert wish.context.page_url == "https://shop.example.ru/products/sofa-oslo"
    # the same pixel event sent twice is one event
    assert shop.to_events(SEARCH, stream="storefront")[0].event_id == search.event_id


@pytest.mark.parametrize(("record", "field"), [
    ({**SEARCH, "data": {"searchResult": {"query": "  ", "productVariants": []}}}, "data.searchResult.query"),
    ({**SEARCH, "data": {"searchResult": {"query": "диван", "productVariants": "много"}}},
     "data.searchResult.productVariants"),
    ({**CART, "data": {"cart": {"lines": []}}}, "data.cart.id"),
    ({**CART, "data": {"cart": {"id": "c1", "lines": [{"quantity": 1, "merchandise": {"title": "?"}}]}}},
     "data.cart.lines.0.merchandise.sku"),
    ({**CART, "data": {"cart": {"id": "c1", "lines": [{"quantity": "два", "merchandise": VARIANT}]}}},
     "data.cart.lines.0.quantity"),
    ({**WISH, "customData": {}}, "data.productVariant"),
    ({**SEARCH, "clientId": None}, "clientId"),
    ({**SEARCH, "name": "page_viewed"}, "name"),
    ({**SEARCH, "timestamp": "вчера"}, "timestamp"),
])
def test_malformed_storefront_events_name_the_field_and_the_event(record: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordError) as caught:
        EcommerceConnector(instance="shop").to_events(record, stream="storefront")
    assert caught.value.field == field and caught.value.record_id == record["id"]


async def test_a_bad_storefront_event_goes_to_the_dlq_and_the_rest_go_on(hub: Hub) -> None:
    shop = EcommerceConnector(instance="shop")
    broken = {**CART, "id": "sh-999", "data": {"cart": {"id": "c1", "lines": "?"}}}
    result = await Ingestor(hub).ingest(shop, [SEARCH, broken, WISH], stream="storefront")
    assert result.events == 2 and result.dead == 1
    assert (result.errors[0].field, result.errors[0].record_id) == ("data.cart.lines", "sh-999")


def test_optional_parts_of_a_storefront_event_may_be_anything() -> None:
    odd = {**SEARCH, "context": "https://evil.example/", "data": {"searchResult": {"query": "диван"}}}
    [event] = EcommerceConnector(instance="shop").to_events(odd, stream="storefront")
    assert event.properties["query"] == "диван" and event.properties.get("results_count") is None
    assert event.context.page_url is None
    view = pixel("sh-104", "product_viewed", {"productVariant": {**VARIANT, "price": "дёшево", "product": 7}})
    [viewed] = EcommerceConnector(instance="shop").to_events(view, stream="storefront")
    assert viewed.properties["sku"] == "SOFA-OSLO-3" and viewed.properties.get("price") is None
