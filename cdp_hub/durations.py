"""One duration syntax for the whole hub: settings, connector and channel options, scenarios, segments, jobs
and CLI flags all read durations through :func:`parse_duration`.

    "90s"  "15m"  "2h"  "7d"  "2w"        a number and a unit (s, m, h, d, w)
    "1h30m"  "1d12h"  "2m30s"             units combined, largest first
    "PT15M"  "P1D"  "P1DT2H30M"  "PT0.5S" ISO 8601 (days and smaller; no years or months: their length varies)
    90  2.5  "90"                         a plain number is seconds

Errors name the field (``max_trigger_age: bad duration '10 minutes': ...``) and show what is accepted.
:data:`Duration` (a ``timedelta``) and :data:`Seconds` (a ``float``) are the pydantic types of options that
take a duration.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["DURATION_PATTERN", "Duration", "DurationText", "Seconds", "parse_duration", "parse_seconds"]

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
