"""The hot-path shortcuts behave exactly like the slow paths they skip (bench/normalize.py measures them)."""

from __future__ import annotations

import copy
import pickle
import random
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal

import phonenumbers
import pytest
from pydantic import ValidationError

from cdp_hub.connector import base as connector_base
from cdp_hub.connector.mapping import keep_unknown, parse_datetime, parse_decimal, require
from cdp_hub.demo.data import generate
from cdp_hub.errors import NormalizationError, RecordError
from cdp_hub.schema import events, identities
from cdp_hub.schema.events import EVENT_NAMESPACE, Event, Identity, deterministic_event_id, parse_event, uuid7
from cdp_hub.schema.identities import (
    CORE_IDENTITY_KINDS,
    DEFAULT_OPTIONS,
    NormalizationOptions,
    normalize_identity,
    normalize_phone,
    register_identity_kind,
)
from connectors.ecommerce import EcommerceConnector


def libphonenumber(value: str, region: str = "RU") -> str | None:
    try:
        parsed = phonenumbers.parse(value.strip(), region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def test_e164_plus7_fast_path_matches_libphonenumber() -> None:
    rng = random.Random(3)
    samples = [f"+7{prefix:03d}{rng.randrange(10**7):07d}" for prefix in range(1000)]
    samples += [" +79161234567 ", "+7 916 123-45-67", "+7916123456", "+791612345678", "+7９１６1234567",
                "+70000000000"]
    for value in samples:
        for region in ("RU", "KZ", "US"):
            expected = libphonenumber(value, region)
            if expected is None:
                with pytest.raises(NormalizationError):
                    normalize_phone.__wrapped__(value, region)
            else:
                assert normalize_phone.__wrapped__(value, region) == expected, (value, region)


def test_ru_mobile_local_notation_fast_path_matches_libphonenumber() -> None:
    rng = random.Random(5)
    separators = ["", " ", "-", "(", ")", " (", ") ", "--"]

    def written(digits: str) -> str:
        return "".join(ch + (rng.choice(separators) if rng.random() < 0.4 else "") for ch in digits)

    samples = []
    for prefix in range(900, 1000):
        for lead in ("8", "+7"):
            samples.append(written(f"{lead}{prefix}{rng.randrange(10**7):07d}"))
    samples += ["8 (916) 123-45-67", "+7 (916) 123-45-67", "8-916-123-45-67", " 89161234567 ", "8 (916) 123-45-6",
                "8 (816) 123-45-67", "8 (916) 123-45-67 доб. 5", "7 916 123 45 67", "8(916)1234567(",
                "+7+9161234567", "8 (９16) 123-45-67"]
    for value in samples:
        for region in ("RU", "KZ", "US"):
            expected = libphonenumber(value, region)
            if expected is None:
                with pytest.raises(NormalizationError):
                    normalize_phone.__wrapped__(value, region)
            else:
                assert normalize_phone.__wrapped__(value, region) == expected, (value, region)


@pytest.mark.parametrize("value", ["1299.80", "0", "-5.5", " 12 ", "1_000", "1e3", "1 234,50", "1.234,50",
                                   "12,5", "NaN", "Infinity", "abc", ""])
def test_decimal_fast_path_matches_the_general_path(value: str) -> None:
    def general(v: str) -> Decimal | str | None:
        import re
        from decimal import InvalidOperation

        if v == "":
            return None
        raw = re.sub(r"[\s\u00a0\u202f']", "", v)
        if "," in raw:
            raw = raw.replace(".", "").replace(",", ".")
        try:
            out = Decimal(raw)
        except InvalidOperation:
            return "error"
        return out if out.is_finite() else "error"

    try:
        got: Decimal | str | None = parse_decimal(value, field="x")
    except RecordError:
        got = "error"
    assert got == general(value)


def test_sibling_events_copied_equal_fully_validated_ones() -> None:
    connector = EcommerceConnector(instance="shop")
    compared = 0
    for record in generate(300)["ecommerce"]:
        try:
            fast = connector.to_events(record)
        except RecordError:
            continue
        drafts = connector.normalize(record)
        for draft in drafts:
            draft.setdefault("source", "shop")
            draft.setdefault("source_record_id", connector.record_id(record))
        slow = [parse_event(d) for d in drafts]
        assert len(fast) == len(slow)
        for a, b in zip(fast, slow, strict=True):
            assert a.model_dump(mode="json", exclude={"received_at"}) == \
                   b.model_dump(mode="json", exclude={"received_at"})
            compared += 1
    assert compared > 500


def test_event_id_is_byte_identical_to_stdlib_uuid5() -> None:
    rng = random.Random(11)
    alphabet = "abcXYZ019-_./#@ \x1fЁёжЖ€😀"
    names = [("shop", "6000000000", "order.placed"), ("", "", ""), ("erp", "чек/42", "order.returned"),
             ("crm", "x" * 4000, "customer.updated")]
    names += [("".join(rng.choices(alphabet, k=rng.randrange(0, 12))),
               "".join(rng.choices(alphabet, k=rng.randrange(0, 300))),
               "".join(rng.choices(alphabet, k=rng.randrange(0, 30)))) for _ in range(3000)]
    for source, rid, typ in names:
        got = deterministic_event_id(source, rid, typ)
        expected = uuid.uuid5(EVENT_NAMESPACE, f"{source}\x1f{rid}\x1f{typ}")
        assert got.bytes == expected.bytes, (source, rid, typ)
        assert got == expected and hash(got) == hash(expected) and str(got) == str(expected)
        assert got.version == 5 and got.variant == uuid.RFC_4122 and got.is_safe is expected.is_safe
    restored = pickle.loads(pickle.dumps(got))
    assert restored == expected and restored.is_safe is expected.is_safe


def test_event_id_of_unencodable_name_fails_like_uuid5() -> None:
    with pytest.raises(UnicodeEncodeError):
        uuid.uuid5(EVENT_NAMESPACE, "shop\x1f\ud800\x1forder.placed")
    with pytest.raises(UnicodeEncodeError):
        deterministic_event_id("shop", "\ud800", "order.placed")


def test_uuid7_is_a_valid_version_7_uuid() -> None:
    ids = [uuid7() for _ in range(200)]
    for value in ids:
        assert uuid.UUID(int=value.int) == value and uuid.UUID(str(value)) == value
        assert value.version == 7 and value.variant == uuid.RFC_4122 and value.is_safe is uuid.SafeUUID.unknown
    assert len(set(ids)) == len(ids)
    assert [v.int >> 80 for v in ids] == sorted(v.int >> 80 for v in ids)  # millisecond prefix never goes back


def test_identity_fast_validator_checks_fields_but_does_not_normalize_again() -> None:
    fast = events._NORMALIZED_IDENTITIES
    assert fast is not None, "the fast path of Event.identities is off: pydantic builds Identity differently"
    # Values arrive normalized; a second normalization would be wrong for a normalizer that is not idempotent.
    got = fast.validate_python([{"kind": "EMAIL", "value": " A@B.CO"}])
    assert got == [Identity.model_construct(kind="EMAIL", value=" A@B.CO")] and type(got[0]) is Identity
    assert got[0].model_fields_set == {"kind", "value"}
    for bad in ({"kind": "email", "value": ""}, {"kind": "email", "value": "x" * 513}, {"kind": 1, "value": "x"},
                {"kind": "email", "value": "a@b.co", "extra": 1}, {"kind": "email"}):
        with pytest.raises(ValidationError):
            fast.validate_python([bad])


def _outcome(data: dict[str, object], options: NormalizationOptions) -> object:
    try:
        event = parse_event(data, options=options)
    except RecordError as exc:
        return type(exc).__name__, str(exc), exc.field, exc.value, exc.record_id, exc.source
    dump = event.model_dump(mode="json", exclude={"received_at"})
    return dump, sorted(event.model_fields_set), [sorted(i.model_fields_set) for i in event.identities]


IDENTITY_CASES: list[list[object]] = [
    [{"kind": "email", "value": "Anna@Mail.RU "}],
    [{"kind": "Email ", "value": "anna@mail.ru"}, {"kind": "email", "value": "ANNA@mail.ru"},
     {"kind": "phone", "value": "8 (916) 123-45-67"}, {"kind": "phone", "value": "+79161234567"}],
    [{"kind": "ecom_customer_id", "value": " 42 "}, {"kind": "loyalty_card", "value": "1234 5678-90"},
     {"kind": "acme.member", "value": " m-1 "}, {"kind": "email", "value": "a.b.c+x@googlemail.com"}],
    [{"kind": "email", "value": "not-an-email"}],
    [{"kind": "phone", "value": "12"}],
    [{"kind": "email", "value": "a@b.co"}, {"kind": "phone", "value": "+7 916"}],
    [{"kind": "crm_id", "value": "   "}],
    [{"kind": "Bad Kind", "value": "x"}],
    [{"kind": "email\n", "value": "a@b.co"}],
    [{"kind": "crm_id", "value": "x" * 513}],
    [{"kind": "crm_id", "value": "x" * 512}],
    [{"kind": "crm_id", "value": "1", "extra": "kept out"}],
    [{"kind": "crm_id"}],
    [{"kind": "crm_id", "value": 42}],
    [{"kind": 7, "value": "x"}, {"kind": "email", "value": "bad"}],
    [{"kind": "crm_id", "value": "1"}, "crm_id:2"],
    [{"kind": "test.long", "value": "y"}],
    [{"kind": "test.twice", "value": "ab"}, {"kind": "test.twice", "value": "ab"}],
]


@pytest.fixture
def kinds_registry() -> Iterator[None]:
    """Identity kinds a test registers are forgotten after it."""
    normalizers, canonical = dict(identities._NORMALIZERS), set(identities._CANONICAL_KINDS)
    yield
    identities._NORMALIZERS.clear()
    identities._NORMALIZERS.update(normalizers)
    identities._CANONICAL_KINDS.clear()
    identities._CANONICAL_KINDS.update(canonical)


@pytest.mark.parametrize("given", IDENTITY_CASES)
@pytest.mark.parametrize("options", [DEFAULT_OPTIONS, NormalizationOptions(gmail_remove_dots=True)])
@pytest.mark.usefixtures("kinds_registry")
def test_identity_fast_path_matches_item_by_item_validation(given: list[object], options: NormalizationOptions) -> None:
    register_identity_kind("test.long", lambda v, o: v * 600)  # normalizes into a value too long for the schema
    register_identity_kind("test.twice", lambda v, o: v + "!")  # not idempotent: must run once per identity

    def event(ids: object) -> dict[str, object]:
        return {"type": "customer.updated", "source": "shop", "source_record_id": "r1",
                "occurred_at": "2026-01-02T03:04:05+03:00", "identities": ids}

    # A tuple is not a list: it takes the item-by-item way (Identity._normalize per item), the reference.
    assert _outcome(event(copy.deepcopy(given)), options) == _outcome(event(tuple(given)), options)


@pytest.mark.usefixtures("kinds_registry")
def test_canonical_kinds_skip_the_kind_normalization_with_the_same_result() -> None:
    register_identity_kind("acme.member")
    values = {"email": " A.B@Mail.RU", "phone": "8 916 123-45-67", "loyalty_card": "12 34-56"}
    for kind in (*CORE_IDENTITY_KINDS, "acme.member"):
        assert kind in identities._CANONICAL_KINDS
        value = values.get(kind, " V-1 ")
        # " kind" is not canonical: it takes the strip/lower/match way, the reference.
        assert normalize_identity(kind, value) == normalize_identity(f" {kind}", value)
        assert normalize_identity(kind.upper(), value) == normalize_identity(f" {kind}", value)
    register_identity_kind("acme.member\n")  # _KIND_RE's "$" lets a final newline through: not canonical
    assert "acme.member\n" not in identities._CANONICAL_KINDS
    assert normalize_identity("acme.member\n", "x") == ("acme.member", "x")
    with pytest.raises(NormalizationError):
        normalize_identity("e mail", "x")


class _Str(str):
    """A str subclass: the mapping helpers' ``type(value) is str`` fast paths skip it (the general way)."""


DATETIMES = ["2026-10-09T15:21:31+03:00", "2026-10-09T15:21:31Z", " 2026-10-09T15:21:31.123456+05:30 ",
             "2026-10-09T15:21:31", "2026-10-09", "2026-10-09 15:21", "1700000000", " 1700000000000 ",
             "09.10.2026", "9.1.2026 7:05", "09.10.2026 15:21:31", "31.02.2026", "2026-02-31T00:00:00",
             "garbage", "", "   ", "12.2026", "+1700000000", "１７００００００００"]


@pytest.mark.parametrize("value", DATETIMES)
@pytest.mark.parametrize("tz", [None, "Europe/Moscow"])
def test_datetime_string_fast_path_matches_the_general_path(value: str, tz: str | None) -> None:
    def outcome(v: str) -> object:
        try:
            return parse_datetime(v, field="created_at", tz=tz)
        except RecordError as exc:
            return str(exc), exc.field, exc.value

    assert outcome(value) == outcome(_Str(value))


@pytest.mark.parametrize("value", ["1299.80", "0", "-5.5", " 12 ", "1e3", "1 234,50", "12,5", "NaN", "abc", ""])
def test_decimal_string_fast_path_matches_the_general_path(value: str) -> None:
    def outcome(v: str) -> object:
        try:
            return parse_decimal(v, field="total_price")
        except RecordError as exc:
            return str(exc), exc.field, exc.value

    assert outcome(value) == outcome(_Str(value))


@pytest.mark.parametrize("record", [{"id": 1, "email": "a@b.co"}, {"id": 1, "note": "x", "score": 2.5},
                                    {"id": 1, "nested": {"a": 1}, "empty": "", "none": None, "flag": False}, {}])
def test_keep_unknown_fast_path_matches_the_general_path(record: dict[str, object]) -> None:
    known = frozenset({"id", "email"})
    fast: dict[str, object] = {"note": "first"}
    general: dict[str, object] = {"note": "first"}
    keep_unknown(record, known, fast, prefix="")
    keep_unknown(record, sorted(known), general, prefix="")  # not a set: the per-key way
    assert fast == general


def test_require_reads_top_level_and_dotted_fields() -> None:
    record = {"id": 0, "customer": {"id": "c1"}, "blank": "", "none": None}
    assert require(record, "id") == 0
    assert require(record, "customer.id") == "c1"
    for path in ("blank", "none", "missing", "customer.missing"):
        with pytest.raises(RecordError, match=f"required field '{path}' is missing"):
            require(record, path)


def test_sibling_copy_is_what_pydantic_copy_gives() -> None:
    event = parse_event({"type": "order.placed", "source": "shop", "source_record_id": "o1",
                         "occurred_at": "2026-01-02T03:04:05+03:00", "identities": [{"kind": "email", "value": "a@b.co"}],
                         "properties": {"order_id": "o1", "total": "10.50"}})
    fields = {**event.__dict__, "type": "order.paid", "properties": dict(event.properties)}
    fast = connector_base._shallow_copy(event, fields)
    reference = event.__copy__()
    reference.__dict__.update(fields)
    assert type(fast) is Event and fast == reference and fast.__dict__ is fields
    for slot in ("__pydantic_extra__", "__pydantic_fields_set__", "__pydantic_private__"):
        assert getattr(fast, slot) == getattr(reference, slot), slot
    assert fast.__pydantic_fields_set__ is not event.__pydantic_fields_set__
    assert fast.to_json() == reference.to_json() and event.type == "order.placed"


@pytest.mark.parametrize("value", ["+79161234567", " +79161234567", "+79161234567\n", "+7916123456", "+7 916 123 45 67",
                                   "89161234567", "+7９１６1234567", "+70000000000", "+14155550123", "12", ""])
@pytest.mark.parametrize("region", ["RU", "KZ", "US"])
def test_phone_identity_skips_the_cache_with_the_same_result(value: str, region: str) -> None:
    def outcome(normalize: Callable[[], object]) -> object:
        try:
            return normalize()
        except NormalizationError as exc:
            return str(exc), exc.field, exc.value

    options = NormalizationOptions(default_region=region)
    reference = outcome(lambda: normalize_phone.__wrapped__(value, region))
    assert outcome(lambda: normalize_identity("phone", value, options)[1]) == reference
    got = outcome(lambda: normalize_identity("phone", _Str(value), options)[1])
    assert got == reference and type(got) is type(reference)  # a str subclass comes back as a plain str
