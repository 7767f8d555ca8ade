"""Small, fast helpers a connector's :meth:`~cdp_hub.Connector.normalize` uses to read source records.

Source systems write the same things in many ways: timestamps as ISO 8601, epoch seconds or milliseconds,
or Russian ``DD.MM.YYYY HH:MM`` in local time; money as ``"1234.50"``, ``1234.5`` or ``"1 234,50"``; genders
as ``"female"``, ``"Ж"`` or ``"Женский"``. These helpers read them all and raise a
:class:`~cdp_hub.errors.RecordError` naming the field and the offending value, so that the record goes to
the dead-letter queue with a reason a human can act on.

They are deliberately plain functions (no pydantic) because they sit on the hot path of every record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from cdp_hub.errors import SchemaViolation

__all__ = [
    "MISSING",
    "add_identity",
    "dig",
    "gender",
    "keep_unknown",
    "parse_date",
    "parse_datetime",
    "parse_decimal",
    "require",
    "text",
]

MISSING: Any = object()
"""Sentinel for :func:`dig`'s default."""

_RU_DATETIME = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SPACES = re.compile(r"[\s\u00a0\u202f']")
_ZONES: dict[str, tzinfo] = {}


def _zone(name: str | tzinfo | None) -> tzinfo:
    if name is None:
        return UTC
    if isinstance(name, tzinfo):
        return name
    zone = _ZONES.get(name)
    if zone is None:
        zone = _ZONES[name] = ZoneInfo(name)
    return zone


def dig(record: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """The value at a dotted ``path`` (``"customer.default_address.city"``), or ``default`` when absent."""
    if "." not in path and type(record) is dict:  # the common case: a top-level field of a JSON object
        value = record.get(path)
        return default if value is None else value
    value = record
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return default
        if value is MISSING or value is None:
            return default
    return value


def require(record: Mapping[str, Any], path: str) -> Any:
    """Like :func:`dig`, but a missing or empty value is a record error naming ``path``."""
    # dig's own first case, inline: most required fields are top-level fields of a JSON object.
    value = record.get(path) if type(record) is dict and "." not in path else dig(record, path)
    if value is None or value == "":
        raise SchemaViolation(f"required field {path!r} is missing", field=path, value=None)
    return value


def text(value: Any) -> str | None:
    """A stripped string, or ``None`` for ``None``/empty/whitespace. Numbers become their decimal text."""
    if type(value) is str:  # the common case first: this runs for most fields of every record
        value = value.strip()
        return value or None
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def add_identity(identities: list[dict[str, str]], kind: str, value: Any) -> None:
    """Append ``{kind, value}`` unless the value is empty (normalization happens in the schema)."""
    value = text(value)
    if value is not None:
        identities.append({"kind": kind, "value": value})


def parse_datetime(value: Any, *, field: str, tz: str | tzinfo | None = None) -> datetime:
    """A timezone-aware datetime from ISO 8601, epoch seconds/milliseconds or ``DD.MM.YYYY[ HH:MM[:SS]]``.

    ``tz`` is the source's local zone, applied to values written without an offset (ERP exports write
    local time); ISO values with an offset keep theirs.
    """
    if type(value) is str and value:  # the common case first: JSON sources write ISO 8601 strings
        raw = value.strip()
        if not raw.isdigit():
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                pass
            else:
                return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_zone(tz))
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_zone(tz))
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 10_000_000_000 else value  # ms since epoch from JS-based systems
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str) and value:
        raw = value.strip()
        if raw.isdigit():
            return parse_datetime(int(raw), field=field, tz=tz)
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            m = _RU_DATETIME.match(raw)
            if m is None:
                raise SchemaViolation(f"{field}: not a date/time: {value!r}", field=field, value=value) from None
            d, mo, y, h, mi, s = m.groups()
            try:
                parsed = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
            except ValueError as exc:
                raise SchemaViolation(f"{field}: {exc}: {value!r}", field=field, value=value) from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_zone(tz))
    raise SchemaViolation(f"{field}: not a date/time: {value!r}", field=field, value=value)


def parse_date(value: Any, *, field: str) -> date | None:
    """A calendar date from ``YYYY-MM-DD`` or ``DD.MM.YYYY``; ``None`` for an empty value."""
    if value is None or value == "":
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        raw = value.strip()
        if _ISO_DATE.match(raw):
            try:
                return date.fromisoformat(raw)
            except ValueError:
                pass
        else:
            m = _RU_DATETIME.match(raw)
            if m is not None:
                try:
                    return date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
                except ValueError:
                    pass
            elif "T" in raw:
                return parse_datetime(raw, field=field).date()
    raise SchemaViolation(f"{field}: not a date: {value!r}", field=field, value=value)


def parse_decimal(value: Any, *, field: str) -> Decimal | None:
    """A decimal from ``1234.5``, ``"1234.50"`` or Russian ``"1 234,50"``; ``None`` for an empty value."""
    if type(value) is str and value and "," not in value:
        try:  # "1299.80" as most APIs write it: no cleaning needed
            out = Decimal(value)
        except InvalidOperation:
            pass
        else:
            if out.is_finite():
                return out
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        raw = _SPACES.sub("", value)
        if "," in raw:
            # "1.234,50" (dots as thousands) or "1234,50": the comma is the decimal separator.
            raw = raw.replace(".", "").replace(",", ".")
        try:
            out = Decimal(raw)
        except InvalidOperation:
            pass
        else:
            if out.is_finite():
                return out
    raise SchemaViolation(f"{field}: not a number: {value!r}", field=field, value=value)


_GENDERS = {
    "f": "female", "female": "female", "w": "female", "woman": "female", "ж": "female", "жен": "female",
    "женский": "female", "m": "male", "male": "male", "man": "male", "м": "male", "муж": "male",
    "мужской": "male", "other": "other", "x": "other",
}


def gender(value: Any) -> str | None:
    """``female``/``male``/``other`` from the usual English and Russian spellings; ``None`` if unknown."""
    if not isinstance(value, str):
        return None
    return _GENDERS.get(value.strip().lower().rstrip("."))


def keep_unknown(record: Mapping[str, Any], known: Iterable[str] | frozenset[str], into: dict[str, Any],
                 *, prefix: str = "") -> None:
    """Copy the record's scalar fields not in ``known`` into ``into`` (unknown source fields are kept).

    Nested objects are left out on purpose: they are the source's internal structure (links, metadata),
    not facts about the customer or the event.
    """
    if isinstance(known, frozenset | set):
        if known.issuperset(record):  # the usual case: no unknown field (no set built to find out)
            return
        keys: Iterable[str] = record.keys() - known
    else:
        keys = [k for k in record if k not in known]
    for key in keys:  # usually none or a few: the set difference runs in C
        value = record[key]
        if value is None or value == "":
            continue
        if isinstance(value, str | int | float | bool | Decimal):
            into.setdefault(prefix + key, value)
