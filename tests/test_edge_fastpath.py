"""The HTTP edge's fast path (cdp_hub/schema/fastpath.py) gives the very event the Event model gives, and leaves
every case it is not sure about to the model."""

from __future__ import annotations

import copy
import random
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdp_hub.bus.events import event_dict_message
from cdp_hub.connector.tracking import TrackingConnector
from cdp_hub.errors import RecordError
from cdp_hub.schema.events import (
    DEFAULT_OPTIONS,
    Event,
    deterministic_event_id,
    deterministic_event_id_text,
    parse_event,
)
from cdp_hub.schema.fastpath import event_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from ingest_http import bodies  # bench/ is not a package

RECEIVED = datetime(2026, 11, 20, 10, 0, 5, tzinfo=UTC)


def _sdk_messages() -> list[dict[str, Any]]:
    """Messages as the SDKs send them, with the cases the mapping treats specially."""
    ctx = {"traits": {"email": " Anna.Petrova@Example.RU ", "phone": "8 (916) 123-45-67", "city": "Москва"},
           "library": {"name": "analytics-python", "version": "2.3.2"}, "campaign": {"name": "black-friday"}}
    return [
        {"type": "identify", "userId": "42", "messageId": "m1", "context": ctx,
         "traits": {"firstName": "Анна", "birthday": "1990-05-17", "gender": "F", "vip": True,
                    "address": {"city": "Казань", "postalCode": "420000", "country": "ru"}}},
        {"type": "track", "anonymousId": "a-1", "messageId": "m2", "event": "Order Completed",
         "properties": {"order_id": "5001", "total": 0, "currency": "RUB",
                        "products": [{"product_id": "SKU1", "price": 10, "quantity": 0}]}},
        {"type": "track", "userId": 7, "messageId": "m3", "event": "Checkout Started",
         "properties": {"cart_id": "c1", "value": "99.5", "products": []}},
        {"type": "page", "userId": "u", "messageId": "m4", "context": {"page": {"url": "https://x.ru/a/b?c=1"}}},
        {"type": "screen", "userId": "u", "messageId": "m5", "name": "Cart",
         "context": {"app": {"version": "5"}, "device": {"id": "d1", "token": "tok"}}},
        {"type": "group", "userId": "u", "messageId": "m6", "groupId": "g1", "traits": {"name": "ACME"}},
        {"type": "alias", "userId": "u2", "previousId": "a-9", "messageId": "m7"},
        {"type": "track", "userId": "u", "messageId": "m8", "event": "order.placed",
         "properties": {"order_id": "1", "total": 5}},
        {"type": "track", "userId": "u", "messageId": "m9", "event": "Products Searched",
         "properties": {"query": "молоко"}},
        {"type": "identify", "userId": "u", "messageId": "m10", "traits": {"email": "x@y.ru", "country": "RUS"}},
    ]


def _corpus() -> list[dict[str, Any]]:
    return _sdk_messages() + [m for batch in bodies(3, 100, seed=7) for m in batch]


def _same(fast: dict[str, Any], model: Event) -> None:
    from_fast = Event.from_json(orjson.dumps(fast))
    assert from_fast.model_dump(exclude={"received_at"}) == model.model_dump(exclude={"received_at"})
    assert from_fast.received_at == RECEIVED


@pytest.mark.parametrize("message", _corpus(), ids=lambda m: m["messageId"])
def test_the_fast_path_gives_the_models_event(message: dict[str, Any]) -> None:
    connector = TrackingConnector({}, instance="web")
    for draft in connector.drafts(copy.deepcopy(message)):
        fast = event_dict(copy.deepcopy(draft), DEFAULT_OPTIONS, RECEIVED)
        try:
            model = parse_event(draft)
        except RecordError:
            assert fast is None  # what the model refuses, the fast path never passes
            continue
        if fast is not None:
            _same(fast, model)


def test_the_fast_path_takes_the_usual_messages() -> None:
    """Not a path that always steps aside: the bench's and the SDKs' ordinary messages go the fast way."""
    connector = TrackingConnector({}, instance="web")
    drafts = [d for m in _corpus() for d in connector.drafts(copy.deepcopy(m))]
    taken = [d for d in drafts if event_dict(copy.deepcopy(d), DEFAULT_OPTIONS, RECEIVED) is not None]
    assert len(taken) >= len(drafts) - 1  # m10's three-letter country is the model's to refuse


BASE: dict[str, Any] = {"type": "customer.updated", "source": "web", "source_record_id": "r1",
                        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
                        "identities": [{"kind": "email", "value": "a@b.ru"}]}


@pytest.mark.parametrize("change", [
    {"type": "no.such.type"}, {"source": "Web Shop"}, {"source_record_id": "x" * 257},
    {"occurred_at": datetime(2026, 1, 1)}, {"occurred_at": "2026-01-01T00:00:00Z"}, {"identities": []},
    {"identities": [{"kind": "email", "value": "not an e-mail"}]}, {"identities": [{"kind": "crm_id", "value": " "}]},
    {"identities": [{"kind": "crm_id", "value": "x" * 600}]}, {"traits": {"gender": "robot"}},
    {"traits": {"birth_date": "yesterday"}}, {"event_id": "5f0c1a9e-0000-4000-8000-000000000000"},
    {"profile_id": "5f0c1a9e-0000-4000-8000-000000000000"}, {"context": {"ip": 5}},
    {"type": "order.placed", "properties": {"order_id": "1", "total": "lots"}},
])
def test_anything_unusual_is_left_to_the_model(change: dict[str, Any]) -> None:
    draft = {**BASE, **change}
    fast = event_dict(copy.deepcopy(draft), DEFAULT_OPTIONS, RECEIVED)
    try:
        model = parse_event(draft)
    except RecordError:
        assert fast is None
        return
    if fast is not None:  # accepted by both: the same event (else the model alone decided, as it should)
        _same(fast, model)


def test_a_random_corpus_agrees() -> None:
    rng = random.Random(3)
    connector = TrackingConnector({}, instance="web")
    for message in [m for batch in bodies(2, 100, seed=rng.randrange(1000)) for m in batch]:
        message["traits"] = {"birthday": date(1980 + rng.randrange(30), 1 + rng.randrange(12), 1).isoformat(),
                             "email": f"U{rng.randrange(99)}@Mail.RU", "lastName": rng.choice(["", "Иванов"])}
        for draft in connector.drafts(message):
            fast = event_dict(copy.deepcopy(draft), DEFAULT_OPTIONS, RECEIVED)
            assert fast is not None
            _same(fast, parse_event(draft))


def test_the_event_id_as_text_is_the_uuid5_as_text() -> None:
    rng = random.Random(11)
    for _ in range(500):
        source = rng.choice(["web", "app", "shop-1"])
        rid = "".join(rng.choice("abcЖ9-\x1f ") for _ in range(rng.randrange(1, 40)))
        typ = rng.choice(["order.placed", "customer.updated", "screen.viewed"])
        assert deterministic_event_id_text(source, rid, typ) == str(deterministic_event_id(source, rid, typ))


def test_the_partition_key_is_the_strongest_identity_as_before() -> None:
    """event_key's rule (the first kind of the priority list, the last value of that kind; else the first kind
    seen, with its last value), against a plain restatement of it."""

    def expected(identities: list[tuple[str, str]]) -> bytes:
        by_kind = dict(identities)
        for kind in ("crm_id", "ecom_customer_id", "erp_customer_id", "loyalty_card", "email", "phone",
                     "device_id", "push_token", "anonymous_id"):
            if kind in by_kind:
                return f"{kind}:{by_kind[kind]}".encode()
        kind, value = next(iter(by_kind.items()))
        return f"{kind}:{value}".encode()

    rng = random.Random(5)
    kinds = ["email", "phone", "anonymous_id", "crm_id", "vk_id", "max_id", "device_id"]
    for _ in range(2000):
        identities = [(rng.choice(kinds), f"v{rng.randrange(5)}") for _ in range(rng.randrange(1, 6))]
        event = {"identities": [{"kind": k, "value": v} for k, v in identities], "type": "customer.updated",
                 "source": "web"}
        assert event_dict_message("t", event).key == expected(identities), identities
    with pytest.raises(IndexError):
        event_dict_message("t", {"identities": [], "type": "customer.updated", "source": "web"})
