"""The canonical event schema: normalization, ids, errors, export and compatibility."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdp_hub.catalogue import exported_schemas
from cdp_hub.errors import NormalizationError, SchemaViolation
from cdp_hub.schema import Event, NormalizationOptions, deterministic_event_id, parse_event, uuid7
from cdp_hub.schema.export import (
    compare_schemas,
    dumps,
    event_json_schema,
    validate_at_edge,
)
from cdp_hub.schema.identities import normalize_email, normalize_identity, normalize_phone

ROOT = Path(__file__).resolve().parent.parent


def order(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "type": "order.placed",
        "source": "shop",
        "source_record_id": "o-1",
        "occurred_at": "2026-03-01T10:00:00+03:00",
        "identities": [{"kind": "email", "value": " Anna.Petrova@Mail.RU "}],
        "properties": {"order_id": "o-1", "total": "1990.00", "currency": "RUB",
                       "items": [{"sku": "A-1", "quantity": 1, "price": "1990.00"}]},
    }
    base.update(over)
    return base


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8 (916) 123-45-67", "+79161234567"),
        ("+7 916 123 45 67", "+79161234567"),
        ("9161234567", "+79161234567"),
        ("7-916-123-45-67", "+79161234567"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_phones_become_e164_with_the_default_region(raw: str, expected: str) -> None:
    assert normalize_phone(raw, "RU") == expected


def test_other_identity_kinds_normalize() -> None:
    assert normalize_email("  Foo.Bar@Example.COM ") == "foo.bar@example.com"
    assert normalize_email("f.o.o+promo@googlemail.com", gmail_remove_dots=True) == "foo@gmail.com"
    assert normalize_identity("loyalty_card", "1234 5678-9012") == ("loyalty_card", "123456789012")
    assert normalize_identity("CRM_ID", " 42 ") == ("crm_id", "42")
    with pytest.raises(NormalizationError):
        normalize_email("not-an-email")
    with pytest.raises(NormalizationError):
        normalize_phone("12", "RU")


def test_event_is_normalized_and_utc() -> None:
    e = parse_event(order())
    assert e.identities[0].value == "anna.petrova@mail.ru"
    assert e.occurred_at == datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
    assert e.properties["total"] == "1990.00"
    assert json.loads(e.to_json())["schema_version"] == "cdp.event/1"


def test_default_region_is_configurable() -> None:
    e = parse_event(order(identities=[{"kind": "phone", "value": "020 7946 0958"}]),
                    options=NormalizationOptions(default_region="GB"))
    assert e.identities[0].value == "+442079460958"


def test_event_id_is_deterministic_for_source_records_and_time_ordered_otherwise() -> None:
    a, b = parse_event(order()), parse_event(order())
    assert a.event_id == b.event_id == deterministic_event_id("shop", "o-1", "order.placed")
    assert parse_event(order(type="order.paid")).event_id != a.event_id
    anon = [parse_event(order(source_record_id=None)).event_id for _ in range(3)]
    assert len(set(anon)) == 3
    ids = [uuid7() for _ in range(50)]
    assert all(i.version == 7 for i in ids)
    stamps = [i.int >> 80 for i in ids]  # the 48-bit millisecond timestamp leads: ids sort by time
    assert stamps == sorted(stamps) and len(set(ids)) == len(ids)


def test_unknown_payload_fields_are_kept() -> None:
    e = parse_event(order(properties={"order_id": "1", "gift_wrap": True}))
    assert e.properties["gift_wrap"] is True


def test_errors_name_the_field_the_value_and_the_record() -> None:
    with pytest.raises(NormalizationError) as bad_phone:
        parse_event(order(identities=[{"kind": "email", "value": "a@b.ru"}, {"kind": "phone", "value": "call me"}]))
    assert bad_phone.value.field == "identities.1.value"
    assert bad_phone.value.record_id == "o-1" and bad_phone.value.source == "shop"
    assert "call me" in str(bad_phone.value)

    with pytest.raises(SchemaViolation) as bad_total:
        parse_event(order(properties={"order_id": "1", "total": "lots"}))
    assert bad_total.value.field == "properties.total"
    assert bad_total.value.value == "lots"

    with pytest.raises(SchemaViolation) as bad_type:
        parse_event(order(type="order.teleported"))
    assert bad_type.value.field == "type"

    with pytest.raises(SchemaViolation) as no_ids:
        parse_event(order(identities=[]))
    assert no_ids.value.field == "identities"


def test_duplicate_identities_collapse() -> None:
    e = parse_event(order(identities=[{"kind": "email", "value": "A@b.ru"}, {"kind": "email", "value": "a@B.ru"}]))
    assert len(e.identities) == 1


def test_json_round_trip() -> None:
    e = parse_event(order())
    again = Event.from_json(e.to_json())
    assert again == e


def test_committed_schemas_match_the_models() -> None:
    for name, schema in exported_schemas().items():
        committed = (ROOT / "schemas" / name).read_bytes()
        assert committed == dumps(schema), f"schemas/{name} is stale: run `cdp-hub schema export`"


def test_compatibility_check_classifies_changes() -> None:
    old = event_json_schema()
    assert compare_schemas(old, copy.deepcopy(old)).kind == "identical"

    additive = copy.deepcopy(old)
    additive["$defs"]["OrderPayload"]["properties"]["coupon"] = {"type": "string"}
    additive["properties"]["type"]["enum"].append("acme.gift_card_issued")
    diff = compare_schemas(old, additive)
    assert diff.kind == "additive" and diff.acceptable

    breaking = copy.deepcopy(old)
    del breaking["$defs"]["Traits"]["properties"]["city"]
    breaking["$defs"]["OrderPayload"]["required"].append("currency")
    diff = compare_schemas(old, breaking)
    assert diff.kind == "breaking" and not diff.acceptable
    assert any("city" in b for b in diff.breaking)
    assert any("currency: field is now required" in b for b in diff.breaking)

    breaking["title"] = "cdp.event/2"
    assert compare_schemas(old, breaking).acceptable


def test_edge_validation_names_json_path_and_value() -> None:
    validate_at_edge(order())
    with pytest.raises(SchemaViolation) as exc:
        validate_at_edge(order(properties={"order_id": "1", "currency": "rubles"}))
    assert exc.value.field == "$.properties.currency"
    assert exc.value.value == "rubles"
    with pytest.raises(SchemaViolation) as exc:
        validate_at_edge(order(identities="anna@mail.ru"))
    assert exc.value.field == "$.identities"


def test_profile_id_round_trips() -> None:
    pid = uuid.uuid4()
    e = parse_event(order(profile_id=str(pid)))
    assert Event.from_json(e.to_json()).profile_id == pid
