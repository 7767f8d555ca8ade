"""The five built-in connectors map their sources' record shapes to canonical events and identities."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from cdp_hub.errors import NormalizationError, RecordError, SchemaViolation
from cdp_hub.schema.events import Event, deterministic_event_id
from connectors.crm import CrmConnector
from connectors.ecommerce import EcommerceConnector
from connectors.erp import ErpConnector
from connectors.loyalty import LoyaltyConnector
from connectors.mobile import MobileConnector


def ids(event: Event) -> set[tuple[str, str]]:
    return {(i.kind, i.value) for i in event.identities}


def by_type(events: list[Event]) -> dict[str, Event]:
    return {e.type: e for e in events}


# -- e-commerce -------------------------------------------------------------------------------------------

ORDER: dict[str, Any] = {
    "id": 5200000001, "name": "#1001", "email": " Anna.Petrova@Mail.RU ", "phone": None,
    "created_at": "2026-11-12T14:03:05+03:00", "processed_at": "2026-11-12T14:05:00+03:00",
    "financial_status": "partially_refunded", "currency": "RUB", "total_price": "1299.80",
    "total_discounts": "100.00", "source_name": "web", "gift_message": "С днём рождения!",
    "customer": {"id": 7100000042, "email": "anna.petrova@mail.ru", "first_name": "Анна", "last_name": "Петрова"},
    "billing_address": {"city": "Казань", "zip": "420000", "country_code": "ru", "phone": "8 (916) 123-45-67"},
    "line_items": [
        {"sku": "MLK-032-1L", "title": "Молоко 3,2% 1 л", "quantity": 2, "price": "89.90"},
        {"sku": "", "variant_id": 4711, "title": "Кофе", "quantity": 1, "price": "1120.00"},
    ],
    "cancelled_at": None,
    "refunds": [{"id": 93, "created_at": "2026-11-14T10:00:00+03:00", "note": "брак",
                 "refund_line_items": [{"line_item": {"sku": "MLK-032-1L", "price": "89.90"}, "quantity": 1,
                                        "subtotal": "89.90"}]}],
}


def test_ecommerce_order_maps_to_placed_paid_and_returned() -> None:
    events = EcommerceConnector(instance="shop").to_events(ORDER)
    assert [e.type for e in events] == ["order.placed", "order.paid", "order.returned"]
    placed, paid, returned = events
    assert ids(placed) == {("ecom_customer_id", "7100000042"), ("email", "anna.petrova@mail.ru"),
                           ("phone", "+79161234567")}
    assert placed.occurred_at == datetime(2026, 11, 12, 11, 3, 5, tzinfo=UTC)
    assert placed.source == "shop" and placed.source_record_id == "5200000001"
    assert placed.event_id == deterministic_event_id("shop", "5200000001", "order.placed")
    assert placed.properties["order_id"] == "5200000001"
    assert placed.properties["total"] == "1299.80"
    assert placed.properties["items"][1]["sku"] == "4711"  # no sku: the variant id stands in
    assert placed.properties["gift_message"] == "С днём рождения!"  # an unknown field is kept
    assert placed.traits.city == "Казань" and placed.traits.country == "RU"
    assert paid.occurred_at == datetime(2026, 11, 12, 11, 5, tzinfo=UTC)
    assert returned.source_record_id == "5200000001/refunds/93"
    assert returned.properties["total"] == "89.90" and returned.properties["reason"] == "брак"


def test_ecommerce_guest_checkout_with_phone_only_and_cancellation() -> None:
    guest = {**ORDER, "email": None, "customer": None, "billing_address": None, "phone": "+7 916 123-45-67",
             "financial_status": "pending", "refunds": [], "cancelled_at": "2026-11-12T15:00:00+03:00",
             "cancel_reason": "customer"}
    events = by_type(EcommerceConnector().to_events(guest))
    assert set(events) == {"order.placed", "order.cancelled"}
    assert ids(events["order.placed"]) == {("phone", "+79161234567")}
    assert events["order.cancelled"].properties["reason"] == "customer"


def test_ecommerce_order_without_any_identity_is_a_record_error() -> None:
    anonymous = {**ORDER, "email": None, "customer": None, "billing_address": None}
    with pytest.raises(SchemaViolation) as exc:
        EcommerceConnector().to_events(anonymous)
    assert exc.value.record_id == "5200000001" and exc.value.field == "email"


def test_ecommerce_customer_with_consents_and_kept_fields() -> None:
    customer = {
        "id": 7100000042, "email": "anna@example.ru", "phone": "+79161234567", "first_name": "Анна",
        "last_name": "Петрова", "updated_at": "2026-11-01T10:00:00+03:00", "orders_count": 3,
        "default_address": {"city": "Москва", "zip": "101000", "country_code": "RU"},
        "email_marketing_consent": {"state": "subscribed", "consent_updated_at": "2026-10-01T09:00:00+03:00"},
        "sms_marketing_consent": {"state": "not_subscribed"},
    }
    events = EcommerceConnector().to_events(customer)
    assert [e.type for e in events] == ["customer.updated", "consent.changed"]
    updated, consent = events
    assert updated.traits.first_name == "Анна" and updated.traits.postal_code == "101000"
    assert updated.traits.model_extra == {"shop_orders_count": 3}
    assert consent.properties["channel"] == "email" and consent.properties["status"] == "opted_in"
    # a later update of the same customer is a new event; the same update re-read is the same event
    again = EcommerceConnector().to_events(dict(customer))
    assert again[0].event_id == updated.event_id
    later = EcommerceConnector().to_events({**customer, "updated_at": "2026-11-02T10:00:00+03:00"})
    assert later[0].event_id != updated.event_id


def test_ecommerce_abandoned_checkout_and_product_view() -> None:
    checkout = {"id": 1, "token": "ck-abc", "email": "ivan@example.ru", "customer": None,
                "updated_at": "2026-11-19T10:00:00Z", "completed_at": None, "total_price": "250.00",
                "currency": "RUB", "abandoned_checkout_url": "https://shop.example.ru/recover/1",
                "line_items": [{"sku": "A", "quantity": 1, "price": "250.00"}]}
    cart = EcommerceConnector().to_events(checkout)[0]
    assert cart.type == "cart.updated" and cart.properties["cart_id"] == "ck-abc"
    assert cart.properties["checkout_url"].endswith("/recover/1")
    assert EcommerceConnector().to_events({**checkout, "completed_at": "2026-11-19T11:00:00Z"}) == []

    view = {"id": "sh-1", "name": "product_viewed", "timestamp": "2026-11-19T10:00:00.000Z", "clientId": "c-1",
            "data": {"productVariant": {"sku": "MLK", "title": "Молоко", "price": {"amount": 89.9,
                                                                                  "currencyCode": "RUB"}}},
            "context": {"document": {"location": {"href": "https://shop.example.ru/p/mlk"}}}}
    viewed = EcommerceConnector().to_events(view)[0]
    assert viewed.type == "product.viewed" and ids(viewed) == {("anonymous_id", "c-1")}
    assert viewed.properties["price"] == "89.9" and viewed.context.page_url == "https://shop.example.ru/p/mlk"


# -- CRM ----------------------------------------------------------------------------------------------------

CONTACT: dict[str, Any] = {
    "id": "30042", "createdAt": "2026-01-10T08:00:00.000Z", "updatedAt": "2026-11-10T08:00:00.000Z",
    "archived": False,
    "properties": {"email": "  Ivan.Sidorov@Yandex.ru", "phone": "8 (926) 555-12-34", "mobilephone": None,
                   "firstname": "Иван", "lastname": "Сидоров", "city": "Самара", "date_of_birth": "1985-03-12",
                   "gender": "male", "lifecyclestage": "customer", "hs_email_optout": "true",
                   "hs_object_id": "30042", "hs_merged_object_ids": "80042;30042"},
}


def test_crm_contact_traits_consent_and_merge() -> None:
    events = CrmConnector(instance="crm").to_events(CONTACT)
    assert [e.type for e in events] == ["customer.updated", "consent.changed", "customer.updated"]
    updated, optout, merge = events
    assert ids(updated) == {("crm_id", "30042"), ("email", "ivan.sidorov@yandex.ru"), ("phone", "+79265551234")}
    assert updated.traits.birth_date is not None and updated.traits.birth_date.isoformat() == "1985-03-12"
    assert updated.traits.gender == "male" and updated.traits.model_extra == {"lifecyclestage": "customer"}
    assert optout.properties == {"channel": "email", "status": "opted_out", "purpose": "marketing"}
    assert merge.properties["merged_identities"] == [{"kind": "crm_id", "value": "80042"}]
    assert merge.source_record_id == "30042/merge/80042"


def test_crm_archived_contact_is_a_deletion() -> None:
    events = CrmConnector().to_events({**CONTACT, "archived": True, "archivedAt": "2026-11-11T00:00:00Z"})
    assert [e.type for e in events] == ["customer.deleted"]


def test_crm_subscriptions_and_webhooks() -> None:
    crm = CrmConnector()
    sub = crm.to_events({"id": "s1", "contactId": "30042", "channel": "SMS", "status": "SUBSCRIBED",
                         "timestamp": "2026-11-10T08:00:00Z", "subscriptionType": "marketing"})[0]
    assert sub.type == "consent.changed" and sub.properties["channel"] == "sms"
    assert sub.properties["status"] == "opted_in"
    push_out = crm.to_events({"id": "s2", "contactId": "30042", "channel": "push", "status": "unsubscribed",
                              "timestamp": "2026-11-10T08:00:00Z"})[0]
    assert push_out.properties["channel"] == "push" and push_out.properties["status"] == "opted_out"
    assert crm.to_events({"id": "s3", "contactId": "1", "channel": "EMAIL", "status": "NOT_SUBSCRIBED",
                          "timestamp": "2026-11-10T08:00:00Z"}) == []
    with pytest.raises(SchemaViolation, match="unknown consent channel"):
        crm.to_events({"id": "s4", "contactId": "1", "channel": "FAX", "status": "SUBSCRIBED",
                       "timestamp": "2026-11-10T08:00:00Z"})

    merge = crm.to_events({"eventId": 7, "subscriptionType": "contact.merge", "primaryObjectId": 30042,
                           "mergedObjectIds": [80042, 90042], "newObjectId": 30042, "occurredAt": 1763000000000})[0]
    assert merge.properties["merged_identities"] == [{"kind": "crm_id", "value": "80042"},
                                                     {"kind": "crm_id", "value": "90042"}]
    assert merge.occurred_at == datetime.fromtimestamp(1763000000, UTC)
    deleted = crm.to_events({"eventId": 8, "subscriptionType": "contact.privacyDeletion", "objectId": 30042,
                             "occurredAt": 1763000000000})[0]
    assert deleted.type == "customer.deleted" and deleted.properties["privacy"] is True
    change = crm.to_events({"eventId": 9, "subscriptionType": "contact.propertyChange", "objectId": 30042,
                            "propertyName": "email", "propertyValue": "new@example.ru",
                            "occurredAt": 1763000000000})[0]
    assert ids(change) == {("crm_id", "30042"), ("email", "new@example.ru")}


# -- ERP ----------------------------------------------------------------------------------------------------

RECEIPT: dict[str, Any] = {
    "Ref_Key": "2f1e0c44-0000-4000-8000-000000000001", "Number": "S012-000123", "Date": "2026-11-12T14:03:05",
    "ВидДокумента": "ЧекККМ", "Posted": True, "DeletionMark": False,
    "Магазин": {"Код": "S012", "Наименование": "Магазин №12"},
    "Клиент": {"Код": "000010042", "Телефон": "8 916 123 45 67", "НомерКарты": "2775 0000 0000 0043"},
    "СуммаДокумента": 269.7, "Валюта": "RUB",
    "Товары": [{"НомерСтроки": 1, "Артикул": "MLK-032-1L", "Номенклатура": "Молоко", "Количество": 3,
                "Цена": 89.9, "Сумма": 269.7}],
}


def test_erp_receipt_local_time_and_identities() -> None:
    placed = ErpConnector(instance="erp").to_events(RECEIPT)[0]
    assert placed.type == "order.placed"
    assert placed.occurred_at == datetime(2026, 11, 12, 11, 3, 5, tzinfo=UTC)  # Moscow local -> UTC
    assert ids(placed) == {("erp_customer_id", "000010042"), ("phone", "+79161234567"),
                           ("loyalty_card", "2775000000000043")}
    assert placed.properties["store_id"] == "S012" and placed.properties["channel"] == "offline"
    assert placed.properties["total"] == "269.7" and placed.properties["items"][0]["quantity"] == "3"


def test_erp_return_links_to_the_receipt_and_anonymous_sales_map_to_nothing() -> None:
    erp = ErpConnector()
    ret = erp.to_events({**RECEIPT, "Ref_Key": "r-1", "Number": "S012-000130",
                         "ВидДокумента": "ВозвратТоваровОтПокупателя", "ДокументОснование": "S012-000123"})[0]
    assert ret.type == "order.returned" and ret.properties["order_id"] == "S012-000123"
    assert ret.properties["return_id"] == "S012-000130"
    assert erp.to_events({**RECEIPT, "Клиент": None}) == []
    assert erp.to_events({**RECEIPT, "Posted": False}) == []
    assert erp.to_events({**RECEIPT, "DeletionMark": True})[0].type == "order.cancelled"
    with pytest.raises(SchemaViolation, match="unknown document type"):
        erp.to_events({**RECEIPT, "ВидДокумента": "ПоступлениеТоваров"})


def test_erp_customer_master_row_with_russian_formats() -> None:
    row = {"Код": "000010042", "Наименование": "Петрова Анна Сергеевна", "Фамилия": "Петрова", "Имя": "Анна",
           "Отчество": "Сергеевна", "Телефон": "8 (916) 123-45-67", "ЭлПочта": "", "ДатаРождения": "07.03.1990",
           "Пол": "Женский", "Город": "Тверь", "НомерКарты": "", "ДатаИзменения": "01.11.2026 09:30:00",
           "Скидка": "5,5"}
    event = ErpConnector().to_events(row)[0]
    assert event.type == "customer.updated"
    assert ids(event) == {("erp_customer_id", "000010042"), ("phone", "+79161234567")}
    assert event.traits.birth_date is not None and event.traits.birth_date.isoformat() == "1990-03-07"
    assert event.traits.gender == "female" and event.traits.middle_name == "Сергеевна"
    assert event.occurred_at == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert event.traits.model_extra == {"erp_Скидка": "5,5"}


def test_erp_csv_receipt_rows_with_decimal_commas() -> None:
    doc = {"ВидДокумента": "Чек", "НомерДокумента": "S001-1", "ДатаДокумента": "12.11.2026 14:03",
           "КодМагазина": "S001", "КодКлиента": "000010042", "Телефон": "", "НомерКарты": "",
           "Строки": [{"Артикул": "A", "Номенклатура": "Сыр", "Количество": "1,000", "Цена": "1 329,00",
                       "Сумма": "1 329,00"},
                      {"Артикул": "B", "Номенклатура": "Хлеб", "Количество": "2", "Цена": "65,50",
                       "Сумма": "131,00"}]}
    event = ErpConnector().to_events(doc)[0]
    assert event.properties["total"] == "1460.00"
    assert [i["price"] for i in event.properties["items"]] == ["1329.00", "65.50"]


# -- loyalty -------------------------------------------------------------------------------------------------


def test_loyalty_card_linked_to_phone() -> None:
    card = {"card_number": "2775 0000 0000 0043", "status": "active", "issued_at": "2026-01-01T10:00:00Z",
            "phone": "+7 (916) 123-45-67", "tier": "Серебряный", "balance": 350,
            "holder": {"first_name": "Анна", "last_name": "Петрова", "birth_date": "1990-03-07", "gender": "F"}}
    event = LoyaltyConnector().to_events(card)[0]
    assert event.type == "customer.updated"
    assert ids(event) == {("loyalty_card", "2775000000000043"), ("phone", "+79161234567")}
    assert event.traits.loyalty_tier == "Серебряный" and event.traits.gender == "female"


@pytest.mark.parametrize(("kind", "points", "expected"), [
    ("accrual", 120, "loyalty.points_earned"),
    ("redemption", 50, "loyalty.points_redeemed"),
    ("expiration", 30, "loyalty.points_expired"),
    ("adjustment", -10, "loyalty.points_redeemed"),
])
def test_loyalty_transactions(kind: str, points: int, expected: str) -> None:
    txn = {"transaction_id": "T1", "card_number": "2775000000000043", "type": kind, "points": points,
           "balance_after": 400, "created_at": "2026-11-01T10:00:00Z"}
    event = LoyaltyConnector().to_events(txn)[0]
    assert event.type == expected and Decimal(event.properties["points"]) == abs(points)
    assert event.source_record_id == "T1"


def test_loyalty_tier_change() -> None:
    change = {"id": "TC-1", "card_number": "2775000000000043", "old_level": "Базовый",
              "new_level": "Золотой", "changed_at": "2026-11-01T10:00:00Z"}
    event = LoyaltyConnector().to_events(change)[0]
    assert event.type == "loyalty.tier_changed" and event.properties["to_tier"] == "Золотой"
    assert event.traits.loyalty_tier == "Золотой"


# -- mobile --------------------------------------------------------------------------------------------------

BATCH: dict[str, Any] = {
    "batch_id": "b-1", "app": {"id": "ru.example.shop", "version": "5.2.1"},
    "device": {"id": "DEV-1", "platform": "android", "os_version": "14", "locale": "ru-RU"},
    "user": {"customer_id": 7100000042},
    "events": [
        {"id": "e1", "name": "app_install", "ts": 1763000000000, "params": {"referrer": "google-play"}},
        {"id": "e2", "name": "push_token", "ts": 1763000005000, "params": {"token": "fcm:aaa"}},
        {"id": "e3", "name": "deep_link", "ts": 1763000010000,
         "params": {"url": "shopapp://promo?utm_source=email&utm_campaign=bf2026"}},
        {"id": "e4", "name": "screen_view", "ts": 1763000020000, "params": {"screen": "catalog"}},
        {"id": "e5", "name": "push_token", "ts": 1763000030000,
         "params": {"token": "fcm:bbb", "previous_token": "fcm:aaa"}},
    ],
}


def test_mobile_batch_maps_every_event() -> None:
    events = MobileConnector().to_events(BATCH)
    assert [e.type for e in events] == ["app.installed", "push.token_registered", "app.opened",
                                        "screen.viewed", "push.token_registered"]
    assert all(("device_id", "DEV-1") in ids(e) for e in events)
    assert all(("ecom_customer_id", "7100000042") in ids(e) for e in events)
    assert events[1].identity("push_token") == "fcm:aaa"
    assert events[2].properties["deep_link"].startswith("shopapp://promo") and events[2].context.campaign == "bf2026"
    assert events[4].properties["previous_token"] == "fcm:aaa"
    assert [e.source_record_id for e in events] == ["e1", "e2", "e3", "e4", "e5"]
    assert events[0].context.app_version == "5.2.1" and events[0].properties["platform"] == "android"


def test_mobile_split_isolates_a_bad_event() -> None:
    mobile = MobileConnector()
    bad = {**BATCH, "events": [*BATCH["events"], {"id": "e6", "name": "screen_view", "ts": 1, "params": {}}]}
    with pytest.raises(SchemaViolation) as exc:
        mobile.to_events(bad)
    assert exc.value.field == "events.5.params.screen"
    units = mobile.split(bad)
    assert len(units) == 6 and units[0]["device"]["id"] == "DEV-1"
    good = [mobile.to_events(u) for u in units[:5]]
    assert all(len(g) == 1 for g in good)
    with pytest.raises(SchemaViolation):
        mobile.to_events(units[5])


def test_mobile_unknown_event_names() -> None:
    odd = {**BATCH, "events": [{"id": "x", "name": "wishlist_add", "ts": 1763000000000}]}
    with pytest.raises(SchemaViolation, match="unmapped app event"):
        MobileConnector().to_events(odd)
    assert MobileConnector({"unknown_events": "skip"}).to_events(odd) == []


# -- shared behaviour ------------------------------------------------------------------------------------------


def test_bad_phone_names_the_identity_field() -> None:
    with pytest.raises(NormalizationError) as exc:
        LoyaltyConnector().to_events({"card_number": "1", "issued_at": "2026-01-01T00:00:00Z", "phone": "123"})
    assert exc.value.field == "identities.1.value" and exc.value.record_id == "card/1@2026-01-01T00:00:00Z"


@pytest.mark.parametrize("connector", [EcommerceConnector, CrmConnector, ErpConnector, LoyaltyConnector,
                                       MobileConnector])
def test_connectors_reject_unknown_config_and_unknown_streams(connector: type[Any]) -> None:
    from cdp_hub.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no_such_option"):
        connector({"no_such_option": 1})
    if connector is not MobileConnector:
        with pytest.raises(RecordError, match="unknown"):
            connector().to_events({"id": "1"}, stream="nope")
