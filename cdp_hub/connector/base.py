"""The connector base class: how a source system's records become canonical events.

    source system ──read()──▶ raw records ──normalize()──▶ event dicts ──parse_event()──▶ Event
                                                  │ RecordError
                                                  ▼
                                          dead-letter queue (reason + raw record), the batch goes on

A connector subclass declares ``name``, ``config_model`` and implements :meth:`Connector.normalize`; pull
connectors also implement :meth:`Connector.read` (the SDK's REST streams do most of that work).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from cdp_hub.errors import ConfigurationError, RecordError, SchemaViolation
from cdp_hub.schema.events import Event, parse_event
from cdp_hub.schema.identities import DEFAULT_OPTIONS, NormalizationOptions

__all__ = ["Connector", "ConnectorConfig", "SourceRecord"]

SourceRecord = Mapping[str, Any]


class ConnectorConfig(BaseModel):
    """Base of connector configs: unknown options are an error, secrets are ``SecretStr``."""

    model_config = ConfigDict(extra="forbid")


class Connector:
    """Base class for connectors. Override :meth:`normalize`; pull connectors override :meth:`read`."""

    name: ClassVar[str] = ""
    """The connector type, unique across plugins (``"ecommerce"``)."""
    title: ClassVar[str] = ""
    """A human title for listings."""
    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    """The pydantic model of this connector's options."""
    record_id_field: ClassVar[str | None] = "id"
    """Field of a raw record holding the source's id (names the record in errors and the DLQ)."""

    def __init__(
        self,
        config: ConnectorConfig | Mapping[str, Any] | None = None,
        *,
        instance: str | None = None,
        http: httpx.AsyncClient | None = None,
        normalization: NormalizationOptions = DEFAULT_OPTIONS,
    ) -> None:
        if config is None:
            config = {}
        if isinstance(config, Mapping):
            try:
                config = self.config_model.model_validate(dict(config))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)
                )
                raise ConfigurationError(f"connector {instance or self.name}: {problems}") from None
        self.config = config
        self.instance = instance or self.name
        self.http = http
        self.normalization = normalization

    # -- to override -------------------------------------------------------------------------------

    def normalize(self, record: SourceRecord, *, stream: str | None = None) -> list[dict[str, Any]]:
        """Map one raw source record to zero or more canonical event dicts.

        Return dicts shaped like :class:`cdp_hub.Event` (``type``, ``source_record_id``, ``occurred_at``,
        ``identities``, ``traits``, ``properties``, ``context``); ``source`` defaults to the connector instance.
        Raise :class:`cdp_hub.errors.RecordError` for a record that cannot be mapped.
        """
        raise NotImplementedError(f"{type(self).__name__}.normalize")

    def read(self, stream: str | None = None, state: Mapping[str, Any] | None = None) -> AsyncIterator[SourceRecord]:
        """Pull raw records from the source (an async iterator). Push-only connectors do not override it."""
        raise NotImplementedError(f"{type(self).__name__} has no pull streams")

    def split(self, record: SourceRecord, *, stream: str | None = None) -> list[SourceRecord]:
        """Cut one upstream record into the units that are normalized (and dead-lettered) one by one.

        The default keeps the record whole. A connector whose source sends batches (a mobile SDK upload, a
        webhook carrying several events) overrides it so that one bad event does not take its batch with it.
        """
        return [record]

    async def check(self) -> None:
        """Test credentials and reachability; raise :class:`ConfigurationError` or :class:`RetriableError`."""

    # -- provided ----------------------------------------------------------------------------------

    def record_id(self, record: SourceRecord) -> str | None:
        if self.record_id_field and isinstance(record, Mapping):
            value = record.get(self.record_id_field)
            return None if value is None else str(value)
        return None

    def to_events(self, record: SourceRecord, *, stream: str | None = None) -> list[Event]:
        """Normalize and validate one raw record; raises :class:`RecordError` naming the field and record."""
        rid = self.record_id(record)
        try:
            drafts = self.normalize(record, stream=stream)
        except RecordError as exc:
            exc.source = exc.source or self.instance
            exc.record_id = exc.record_id or rid
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            field = exc.args[0] if isinstance(exc, KeyError) and exc.args else None
            raise SchemaViolation(
                f"cannot map record: {type(exc).__name__}: {exc}",
                field=str(field) if field is not None else None,
                record_id=rid,
                source=self.instance,
            ) from exc
        events = []
        for draft in drafts:
            draft.setdefault("source", self.instance)
            if rid is not None:
                draft.setdefault("source_record_id", rid)
            events.append(parse_event(draft, options=self.normalization))
        return events
