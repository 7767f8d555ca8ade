"""One duration syntax for the whole hub: settings, connector and channel options, scenarios, segments, jobs
and CLI flags all read durations through :func:`parse_duration`.

    "90s"  "15m"  "2h"  "7d"  "2w"        a number and a unit (s, m, h, d, w)
    "1h30m"  "1d12h"  "2m30s"             units combined, largest first
    "PT15M"  "P1D"  "P1DT2H30M"  "PT0.5S" ISO 8601 (days and smaller; no years or months: their length varies)
    90  2.5  "90"                         a plain number is seconds

Errors name the field (``max_trigger_age: bad duration '10 minutes': ...``) and show what is accepted.
:data:`Duration` (a ``timedelta``) and :data:`Seconds` (a ``float``) are the pydantic types of options that
take a duration.

Local times of day ("send at 10:00, the customer's time") count from the same send time, so they live here too:

    parse_time_of_day("19:30")                 24-hour HH:MM ─▶ time(19, 30); anything else a ValueError naming the field
    check_time_zone("Asia/Vladivostok")        an IANA name, or a ValueError naming the field
    customer_zone(profile timezone, fallback)  the profile's zone when it is a known one, else the fallback
                                               (a trait is customer data: a bad one never fails a send)
    next_local_time(after, at, zone)           the first instant at or after ``after`` whose clock reads ``at``
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator

__all__ = ["DEFAULT_TIMEZONE", "DURATION_PATTERN", "TIME_OF_DAY_PATTERN", "Duration", "DurationText", "Seconds",
           "check_time_zone", "customer_zone", "next_local_time", "parse_duration", "parse_seconds",
           "parse_time_of_day"]

DURATION_PATTERN = (r"^\s*(?:\d+(?:\.\d+)?\s*[wdhmsWDHMS]\s*)+$"
                    r"|^\s*[Pp](?:\d+(?:\.\d+)?[WwDd])*(?:[Tt](?:\d+(?:\.\d+)?[HhMmSs])+)?\s*$"
                    r"|^\s*\d+(?:\.\d+)?\s*$")
"""The syntax as a regular expression, for JSON Schemas of YAML files (editors check it as you type);
:func:`parse_duration` is the authority (it also rejects units out of order)."""

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_COMPACT = re.compile(r"^(?:(\d+(?:\.\d+)?)w)?(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                      r"(?:(\d+(?:\.\d+)?)s)?$")
_ISO = re.compile(r"^P(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
                  r"(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_NUMBER = re.compile(r"^\d+(?:\.\d+)?$")

TIME_OF_DAY_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$"
"""A local time of day, 24-hour ``HH:MM`` (``"09:00"``, ``"19:30"``), for JSON Schemas and validators."""
DEFAULT_TIMEZONE = "Europe/Moscow"
"""The zone of a customer whose profile has none, unless the scenario says otherwise (quiet hours, a journey's
wait, a send-time variant and the birthday scan use the same)."""
MAX_ZONE_NAME = 64
"""Longer is no zone (the longest IANA name has 32 characters): never looked up, never cached."""
_TIME_OF_DAY = re.compile(TIME_OF_DAY_PATTERN)

HELP = "use e.g. '90s', '15m', '2h', '7d', '1h30m', ISO 8601 'PT15M', or a number of seconds"


def parse_duration(value: str | int | float | timedelta, *, field: str | None = None) -> timedelta:
    """``value`` as a ``timedelta`` (see the module doc for the syntax); ``ValueError`` naming ``field``."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):  # True is an int to Python, not a duration to anyone
        raise ValueError(_error(value, field))
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(_error(value, field, "a duration cannot be negative"))
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(_error(value, field))
    text = value.strip()
    if _NUMBER.match(text):
        return timedelta(seconds=float(text))
    compact = text.lower().replace(" ", "")
    match = _COMPACT.match(compact) if compact else None
    if match and any(match.groups()):
        return timedelta(seconds=sum(float(n) * unit for n, unit in zip(match.groups(), _UNITS.values(), strict=True)
                                     if n))
    iso = _ISO.match(text.upper())
    if iso and any(iso.groups()) and not text.upper().endswith("T"):
        weeks, days, hours, minutes, seconds = (float(n) if n else 0.0 for n in iso.groups())
        return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    raise ValueError(_error(value, field))


def parse_seconds(value: str | int | float | timedelta, *, field: str | None = None) -> float:
    """:func:`parse_duration` in seconds."""
    return parse_duration(value, field=field).total_seconds()


def parse_time_of_day(value: object, *, field: str | None = None) -> time:
    """``"HH:MM"`` (24-hour) as a ``time``; ``ValueError`` naming ``field``."""
    if isinstance(value, str) and _TIME_OF_DAY.match(value):
        hour, minute = value.split(":")
        return time(int(hour), int(minute))
    where = f"{field}: " if field else ""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        # YAML 1.1 reads an unquoted 10:00 as the base-60 number 600: say so, and how to write it.
        written = f"{value // 60:02d}:{value % 60:02d}"
        raise ValueError(f"{where}bad time of day {value!r} (YAML reads an unquoted {written} as the number "
                         f"{value}): quote it, \"{written}\"")
    raise ValueError(f"{where}bad time of day {value!r}: use 24-hour HH:MM, e.g. '10:00' or '19:30'")


def check_time_zone(value: object, *, field: str | None = None) -> str:
    """``value`` when it is an IANA time zone name this machine knows; ``ValueError`` naming ``field``."""
    if isinstance(value, str) and value:
        try:
            ZoneInfo(value)
            return value
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    where = f"{field}: " if field else ""
    raise ValueError(f"{where}unknown time zone {value!r} (an IANA name such as Europe/Moscow or Asia/Vladivostok)")


def customer_zone(name: object, fallback: str = DEFAULT_TIMEZONE) -> ZoneInfo:
    """The zone of a customer: ``name`` (their profile's ``timezone`` trait) when it names a known zone, else
    ``fallback`` (a checked setting). A trait is customer data: missing, misspelt or hostile, it falls back."""
    zone = _known_zone(name) if isinstance(name, str) and 0 < len(name) <= MAX_ZONE_NAME else None
    return zone if zone is not None else ZoneInfo(fallback)


@functools.lru_cache(maxsize=1024)
def _known_zone(name: str) -> ZoneInfo | None:
    """``ZoneInfo(name)``, or None for no zone. Cached both ways: an unknown name costs file lookups (about 90 µs)
    on every message of a customer who has it; the bound keeps hostile variety from growing the cache."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def next_local_time(after: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The first instant at or after ``after`` (aware) when the clock in ``zone`` reads ``at``, in UTC.

    On a daylight-saving change day a time the clock skips (02:30 when it jumps from 02:00 to 03:00) is the
    instant it would have been by the old offset (03:30 by the new clock); a time the clock reads twice (when it
    goes back) is its first reading."""
    day = after.astimezone(zone).date()
    candidate = datetime.combine(day, at, tzinfo=zone)
    if candidate < after:  # today's has passed: tomorrow's (a calendar day, whatever its length)
        candidate = datetime.combine(day + timedelta(days=1), at, tzinfo=zone)
    return candidate.astimezone(UTC)


def _error(value: object, field: str | None, why: str = "") -> str:
    where = f"{field}: " if field else ""
    return f"{where}bad duration {value!r}: {why or HELP}"


def _to_timedelta(value: Any) -> Any:
    return parse_duration(value)


def _to_seconds(value: Any) -> Any:
    return parse_seconds(value)


def _check_text(value: Any) -> Any:
    if value is not None:
        parse_duration(value)
    return value if value is None else str(value)


Duration = Annotated[timedelta, BeforeValidator(_to_timedelta)]
"""An option holding a duration, as a ``timedelta``; pydantic's error names the field."""

Seconds = Annotated[float, BeforeValidator(_to_seconds)]
"""An option holding a duration, as seconds (``"30s"``, ``"2m"``, ``30``)."""

DurationText = Annotated[str, BeforeValidator(_check_text)]
"""An option kept as written (``"24h"``), checked at load time so that a bad one names its field."""
