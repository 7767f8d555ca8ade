"""Streams: the named record sets a pull connector reads (``orders``, ``contacts``), and their cursors.

A stream yields pages of raw records. Incremental streams name a ``cursor_field`` (``updated_at``); the sync
engine (:mod:`cdp_hub.connector.sync`) checkpoints the largest cursor value it has published and the next
sync asks the source for records from ``checkpoint - lookback`` on, so late updates written with an older
timestamp are still picked up. Re-read records map to the same event ids, so the overlap costs nothing
downstream.

:class:`cdp_hub.connector.rest.RestStream` implements :meth:`Stream.pages` for REST APIs; a stream over
anything else (a database, an SFTP folder) subclasses :class:`Stream` directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from cdp_hub.connector.mapping import dig, parse_datetime
from cdp_hub.errors import ConfigurationError, RecordError

if TYPE_CHECKING:
    from cdp_hub.connector.base import Connector, SourceRecord

__all__ = ["Stream"]


class Stream:
    """One named stream of a connector. Subclasses set the class attributes and implement :meth:`pages`."""

    name: ClassVar[str] = ""
    """The stream's name (``orders``); also the ``stream`` passed to ``normalize``."""
    primary_key: ClassVar[str | None] = "id"
    """Field naming a record (dotted path)."""
    cursor_field: ClassVar[str | None] = None
    """Field whose growth marks new and updated records (dotted path); ``None``: full reads only."""
    cursor_type: ClassVar[Literal["datetime", "integer", "string"]] = "datetime"
    is_sorted: ClassVar[bool] = True
    """The source returns records in cursor order, so the sync may checkpoint after every page. When
    ``False`` it checkpoints only at the end of a complete sync."""
    cursor_timezone: ClassVar[str | None] = None
    """Zone of cursor values written without an offset (1C writes local time); default: the connector
    config's ``timezone`` if it has one, else UTC."""

    def __init__(self, connector: Connector) -> None:
        self.connector = connector

    @property
    def config(self) -> Any:
        return self.connector.config

    def pages(self, start: Any | None) -> AsyncIterator[list[SourceRecord]]:
        """Yield pages of raw records with a cursor at or after ``start`` (``None``: from the beginning)."""
        raise NotImplementedError(f"{type(self).__name__}.pages")

    # -- cursors -------------------------------------------------------------------------------------

    def cursor_value(self, record: SourceRecord) -> Any | None:
        """The record's raw cursor value (as the source wrote it), or ``None``."""
        return dig(record, self.cursor_field) if self.cursor_field else None

    def _zone(self) -> str | None:
        return self.cursor_timezone or getattr(self.config, "timezone", None)

    def cursor_key(self, raw: Any) -> Any:
        """A comparable form of a raw cursor value: an aware datetime, an int or a string."""
        if self.cursor_type == "datetime":
            return parse_datetime(raw, field=self.cursor_field or "cursor", tz=self._zone())
        if self.cursor_type == "integer":
            return int(raw)
        return str(raw)

    def start_from(self, state: Mapping[str, Any] | None, *, full_refresh: bool = False) -> Any | None:
        """Where a sync starts: the checkpoint minus the lookback window, else the configured start date."""
        if self.cursor_field is None:
            return None
        raw = None if full_refresh or not state else state.get("cursor")
        if raw is not None:
            try:
                key = self.cursor_key(raw)
            except (RecordError, ValueError) as exc:
                raise ConfigurationError(
                    f"stream {self.name}: the saved checkpoint {raw!r} is unreadable ({exc}); "
                    "run the sync with --full-refresh") from None
            lookback = getattr(self.config, "lookback", None)
            if isinstance(key, datetime) and isinstance(lookback, timedelta):
                return key - lookback
            return key
        start_date = getattr(self.config, "start_date", None)
        if self.cursor_type == "datetime" and isinstance(start_date, datetime):
            return self.cursor_key(start_date)
        return None

    def checkpoint(self, raw_cursor: Any) -> dict[str, Any]:
        """The state saved after a page: the largest cursor value published so far."""
        value = raw_cursor.isoformat() if isinstance(raw_cursor, datetime) else raw_cursor
        return {"cursor": value}
