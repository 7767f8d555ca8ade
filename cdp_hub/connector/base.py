"""The connector base class: how a source system's records become canonical events.

    source system ──read()──▶ raw records ──normalize()──▶ event dicts ──parse_event()──▶ Event
                                                  │ RecordError
                                                  ▼
                                          dead-letter queue (reason + raw record), the batch goes on

A connector subclass declares ``name``, ``config_model`` and implements :meth:`Connector.normalize`. Pull
connectors declare ``streams`` (:class:`~cdp_hub.connector.rest.RestStream` subclasses do most of the work)
and :meth:`Connector.read` reads them; push sources arrive through :meth:`Connector.parse_webhook`; bulk
exports through :meth:`Connector.assemble` and :mod:`cdp_hub.connector.files`.

Methods a connector author overrides: ``normalize`` (always), ``split``, ``assemble``, ``record_id``,
``check``, ``read`` (when not using streams), ``parse_webhook`` (unusual webhook envelopes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict

from cdp_hub.config import validate_options
from cdp_hub.connector.webhooks import WebhookRejected, WebhookSpec, verify_webhook
from cdp_hub.errors import ConfigurationError, RecordError, SchemaViolation
from cdp_hub.schema.events import Event, deterministic_event_id, parse_event, uuid7
from cdp_hub.schema.identities import DEFAULT_OPTIONS, NormalizationOptions
from cdp_hub.schema.payloads import EVENT_TYPES

if TYPE_CHECKING:
    from cdp_hub.connector.streams import Stream

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
    streams: ClassVar[Sequence[type[Stream]]] = ()
    """The pull streams (:class:`~cdp_hub.connector.streams.Stream` subclasses); empty for push-only sources."""
    webhook: ClassVar[WebhookSpec] = WebhookSpec()
    """How the source signs its webhooks and names their topics."""

    def __init__(
        self,
        config: ConnectorConfig | Mapping[str, Any] | None = None,
        *,
        instance: str | None = None,
        http: httpx.AsyncClient | None = None,
        normalization: NormalizationOptions = DEFAULT_OPTIONS,
    ) -> None:
        self.config = validate_options(self.config_model, config, where=f"connector {instance or self.name}")
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

    async def read(self, stream: str | None = None,
                   state: Mapping[str, Any] | None = None) -> AsyncIterator[SourceRecord]:
        """Pull raw records from the source (an async iterator).

        With ``stream``, ``state`` is that stream's checkpoint (``{"cursor": ...}``); without, every stream is
        read and ``state`` maps stream names to checkpoints. The default reads the declared ``streams``; the
        sync engine (:func:`cdp_hub.connector.sync.sync`) reads page by page instead, to checkpoint.
        """
        names = [stream] if stream else self.stream_names()
        if not names:
            raise NotImplementedError(f"{type(self).__name__} has no pull streams")
        for name in names:
            reader = self.stream(name)
            st = state if stream else (state or {}).get(name)
            async for page in reader.pages(reader.start_from(st)):
                for record in page:
                    yield record

    def split(self, record: SourceRecord, *, stream: str | None = None) -> list[SourceRecord]:
        """Cut one upstream record into the units that are normalized (and dead-lettered) one by one.

        The default keeps the record whole. A connector whose source sends batches (a mobile SDK upload, a
        webhook carrying several events) overrides it so that one bad event does not take its batch with it.
        """
        return [record]

    def assemble(self, records: Iterable[SourceRecord], *, stream: str | None = None) -> Iterable[SourceRecord]:
        """Join file rows that together make one source record (the lines of one receipt in a CSV export).

        The inverse of :meth:`split`, used by file imports; the default passes rows through.
        """
        return records

    async def check(self) -> None:
        """Test credentials and reachability; raise :class:`ConfigurationError` or :class:`RetriableError`."""

    async def aclose(self) -> None:
        """Release what the connector opened itself (an HTTP client it was not given)."""

    def parse_webhook(self, headers: Mapping[str, str], body: bytes, *, method: str = "POST", url: str = "",
                      now: datetime | None = None) -> tuple[str | None, list[SourceRecord]]:
        """Verify a webhook request and return ``(stream, raw records)``.

        The signature is checked with :attr:`webhook` and the config's ``webhook_secret`` (webhooks are
        refused while none is configured); the topic header picks the stream. A JSON body may be one record,
        a list of records, or ``{"records": [...]}``.
        """
        secret = getattr(self.config, "webhook_secret", None)
        if secret is None:
            raise WebhookRejected(f"connector {self.instance} has no webhook_secret configured; set it to "
                                  "accept webhooks", status=403)
        tolerance = float(getattr(self.config, "webhook_tolerance_seconds", 300.0))
        verify_webhook(self.webhook, secret.get_secret_value(), headers, body, tolerance_seconds=tolerance,
                       now=now, method=method, url=url)
        stream = None
        if self.webhook.topic_header:
            lower = {k.lower(): v for k, v in headers.items()}
            topic = lower.get(self.webhook.topic_header.lower())
            if topic is not None:
                stream = self.webhook.topics.get(topic)
                if stream is None:
                    raise WebhookRejected(f"unsupported webhook topic {topic!r}; subscribe only to: "
                                          f"{', '.join(sorted(self.webhook.topics))}", status=422)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise WebhookRejected(f"webhook body is not JSON: {exc}", status=400) from None
        if isinstance(data, dict) and isinstance(data.get("records"), list):
            data = data["records"]
        records = data if isinstance(data, list) else [data]
        if not all(isinstance(r, dict) for r in records):
            raise WebhookRejected("webhook body must be a JSON object or a list of objects", status=400)
        return stream, records

    # -- streams -------------------------------------------------------------------------------------

    @classmethod
    def stream_names(cls) -> list[str]:
        return [s.name for s in cls.streams]

    def stream(self, name: str) -> Stream:
        """A stream of this connector by name."""
        for cls in self.streams:
            if cls.name == name:
                return cls(self)
        raise ConfigurationError(f"connector {self.name} has no stream {name!r}; streams: "
                                 f"{', '.join(self.stream_names()) or 'none (push only)'}")

    def file_options(self) -> dict[str, Any]:
        """Defaults for file imports of this connector's exports (encoding, delimiter) from its config."""
        return {k: getattr(self.config, k) for k in ("encoding", "delimiter") if getattr(self.config, k, None)}

    # -- provided ----------------------------------------------------------------------------------

    def record_id(self, record: SourceRecord) -> str | None:
        if self.record_id_field and (type(record) is dict or isinstance(record, Mapping)):
            value = record.get(self.record_id_field)
            return None if value is None else str(value)
        return None

    def drafts(self, record: SourceRecord, *, stream: str | None = None) -> list[dict[str, Any]]:
        """:meth:`normalize` with the source and record id filled in, not validated yet (the HTTP edge validates
        them its own way, :mod:`cdp_hub.schema.fastpath`); raises :class:`RecordError` naming the field and
        record."""
        rid = self.record_id(record)
        drafts = self._normalized(record, rid, stream)
        for draft in drafts:
            draft.setdefault("source", self.instance)
            if rid is not None:
                draft.setdefault("source_record_id", rid)
        return drafts

    def _normalized(self, record: SourceRecord, rid: str | None, stream: str | None) -> list[dict[str, Any]]:
        try:
            return self.normalize(record, stream=stream)
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

    def to_events(self, record: SourceRecord, *, stream: str | None = None) -> list[Event]:
        """Normalize and validate one raw record; raises :class:`RecordError` naming the field and record."""
        rid = self.record_id(record)
        drafts = self._normalized(record, rid, stream)
        events: list[Event] = []
        validated: list[tuple[dict[str, Any], Event]] = []
        for draft in drafts:
            draft.setdefault("source", self.instance)
            if rid is not None:
                draft.setdefault("source_record_id", rid)
            if validated:
                twin = _twin(draft, validated)
                if twin is not None:
                    events.append(twin)
                    continue
            event = parse_event(draft, options=self.normalization)
            validated.append((draft, event))
            events.append(event)
        return events


_TWIN_KEYS = frozenset({"type", "occurred_at", "source", "source_record_id", "identities", "traits", "properties",
                        "context"})


def _twin(draft: dict[str, Any], validated: list[tuple[dict[str, Any], Event]]) -> Event | None:
    """The event for ``draft`` copied from an already validated sibling, or ``None``.

    One source record often yields several events that differ only in type and time (an order that is
    placed and paid): the same identities, traits, context and payload objects. Validating those again
    would give the same result, so the sibling is copied with the new type, time and id; this halves the
    cost of the e-commerce order stream. Only exact matches qualify: the very same objects, a payload model
    shared by both types, an aware ``occurred_at``, no explicit ``event_id``.
    """
    if not validated or not _TWIN_KEYS.issuperset(draft):
        return None
    occurred = draft.get("occurred_at")
    if not isinstance(occurred, datetime) or occurred.tzinfo is None:
        return None
    model = EVENT_TYPES.get(draft.get("type", ""))
    if model is None:
        return None
    get = draft.get
    identities, traits, properties, context = get("identities"), get("traits"), get("properties"), get("context")
    source, record_id = draft["source"], get("source_record_id")
    for first, event in validated:
        get = first.get
        if (get("identities") is identities and get("properties") is properties and get("traits") is traits
                and get("context") is context and EVENT_TYPES.get(first["type"]) is model
                and first["source"] == source and get("source_record_id") == record_id):
            rid, typ = event.source_record_id, draft["type"]
            fields = event.__dict__.copy()
            fields["type"] = typ
            fields["event_id"] = deterministic_event_id(event.source, rid, typ) if rid else uuid7()
            fields["occurred_at"] = occurred.astimezone(UTC)
            fields["properties"] = dict(event.properties)
            return _shallow_copy(event, fields)
    return None


_new_object = object.__new__
_set_slot = object.__setattr__


def _shallow_copy(event: Event, fields: dict[str, Any]) -> Event:
    """``event.__copy__()`` with ``fields`` as its ``__dict__``: what model_copy(update=...) does, without its
    per-key checks, and what BaseModel.__copy__ does without copy.copy()'s dispatch for each of its three parts
    (an event has no private attributes and, with ``extra="forbid"``, no extra ones; else __copy__ is used).
    """
    extra, private = event.__pydantic_extra__, getattr(event, "__pydantic_private__", None)
    if extra is not None or private is not None:
        twin = event.__copy__()
        _set_slot(twin, "__dict__", fields)
        return twin
    twin = _new_object(type(event))
    _set_slot(twin, "__dict__", fields)
    _set_slot(twin, "__pydantic_extra__", None)
    _set_slot(twin, "__pydantic_fields_set__", set(event.__pydantic_fields_set__))
    _set_slot(twin, "__pydantic_private__", None)
    return twin
