"""``ConnectorTests``: the standard tests every connector should pass, inherited by a few lines of code.

    from cdp_hub.testing import ConnectorTests
    from my_connector import MyConnector

    class TestMyConnector(ConnectorTests):
        connector_class = MyConnector
        config = {"base_url": "https://api.example.test", "auth": {"type": "bearer", "token": "t"}}
        records = [...]            # raw records of the tested stream, in cursor order (at least 3)
        broken_record = {...}      # a record the connector must send to the dead-letter queue

=========================================  ===============================================================
test                                       proves
=========================================  ===============================================================
test_config_schema                         extra options rejected, secrets are ``SecretStr``, JSON Schema
test_records_normalize_to_valid_events     every event validates against ``cdp.event/1`` (the exported
                                           JSON Schema, not only the pydantic model); ids deterministic
test_check                                 ``check()`` passes against the API and fails on a 401
test_read_one_page                         the first page arrives with the paginator's parameters
test_incremental_sync_resumes_from_cursor  the checkpoint is the largest cursor; the next sync asks from
                                           there (minus the lookback)
test_resync_is_idempotent                  a second full sync publishes exactly the same event ids
test_sync_killed_half_way_resumes          a sync cancelled mid-way, then resumed, loses nothing
test_retries_rate_limits_and_server_errors 429 (Retry-After waited exactly), 503 and a reset connection
                                           are retried; the sync completes
test_broken_record_goes_to_dlq             the bad record is dead-lettered with its field; the rest go on
test_webhook_signature                     signed bodies accepted; tampered or stale ones refused
=========================================  ===============================================================

Pull tests run against :class:`~cdp_hub.testing.mockapi.MockApi` (respx), built from the stream's own
declaration; push-only connectors skip them. The ``connector_hub`` fixture (from the ``cdp_hub`` pytest
plugin) is the project's real hub when a ``hub`` fixture exists, else an in-memory bus.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import orjson
import pytest
import respx
from pydantic import BaseModel, SecretStr

from cdp_hub.connector.base import Connector
from cdp_hub.connector.ingest import Ingestor
from cdp_hub.connector.rest import RestStream
from cdp_hub.connector.state import MemoryStateStore, PgStateStore, StateStore
from cdp_hub.connector.sync import sync_stream
from cdp_hub.connector.webhooks import WebhookRejected, sign_webhook
from cdp_hub.dlq import DeadLetter
from cdp_hub.errors import ConfigurationError, RecordError
from cdp_hub.hub import Hub
from cdp_hub.schema.export import validate_at_edge
from cdp_hub.testing.mockapi import MockApi

__all__ = ["ConnectorTests", "state_store_for"]

_SECRET_NAME = re.compile(r"(secret|passw|api_?key|private_key|(^|_)token$|^key$|credential)", re.I)


def state_store_for(hub: Hub) -> StateStore:
    """PostgreSQL checkpoints when the hub's store is started, else in memory."""
    try:
        hub.store.pool  # noqa: B018 - raises when the store is not started
    except RuntimeError:
        return MemoryStateStore()
    return PgStateStore(hub.store)


async def _no_sleep(seconds: float) -> None:
    return None


def _plain_secrets(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Fields whose name says secret but whose type is a plain ``str`` (it would show in logs and reprs)."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        args = typing.get_args(ann) or (ann,)
        if _SECRET_NAME.search(name) and any(a is str for a in args):
            out.append(path)
        for arg in args:
            for inner in typing.get_args(arg) or (arg,):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    out.extend(_plain_secrets(inner, f"{path}."))
    return out


class ConnectorTests:
    """Inherit, set the class attributes, and pytest runs the standard connector tests."""

    connector_class: ClassVar[type[Connector]]
    """The connector under test."""
    config: ClassVar[Mapping[str, Any]] = {}
    """A valid config; pull tests point ``base_url`` at the fake API (any host: respx answers)."""
    stream: ClassVar[str | None] = None
    """The stream the pull tests read (default: the connector's first stream)."""
    records: ClassVar[Sequence[Mapping[str, Any]]] = ()
    """Raw records of ``stream`` (or, for push-only connectors, of any kind), in cursor order."""
    broken_record: ClassVar[Mapping[str, Any] | None] = None
    """A record that must be dead-lettered (an impossible phone, a missing id)."""
    page_size: ClassVar[int] = 2
    webhook_secret: ClassVar[str] = "kit-webhook-secret"

    # -- helpers -------------------------------------------------------------------------------------

    def make_connector(self, hub: Hub | None = None, **overrides: Any) -> Connector:
        """The connector under test, with fast retries and a small page size when its config has them."""
        fields = self.connector_class.config_model.model_fields
        config = dict(self.config)
        for key, value in (("page_size", self.page_size), ("max_attempts", 3), ("retry_initial_wait", 0.0),
                           ("webhook_secret", self.webhook_secret)):
            if key in fields and key not in config:
                config[key] = value
        config.update(overrides)
        connector = self.connector_class(config, instance=self.connector_class.name,
                                         http=hub.http if hub is not None else None)
        policy = getattr(connector, "retry_policy", None)
        if policy is not None:
            policy.sleep = _no_sleep
        return connector

    def default_stream(self) -> str | None:
        """``stream``, else the connector's first stream, else ``None`` (push-only)."""
        names = self.connector_class.stream_names()
        return self.stream or (names[0] if names else None)

    def stream_name(self) -> str:
        names = self.connector_class.stream_names()
        if not names:
            pytest.skip(f"{self.connector_class.name} is push-only: no pull stream to test")
        return self.stream or names[0]

    def mock_api(self, connector: Connector) -> MockApi:
        name = self.stream_name()
        if not isinstance(connector.stream(name), RestStream):
            pytest.skip(f"stream {name} is not a REST stream; test it with your own fake")
        if len(self.records) < 3:
            raise AssertionError("set `records` to at least 3 raw records of the stream, in cursor order")
        return MockApi(connector, name, self.records, page_size=self.page_size)

    def expected_event_ids(self) -> set[str]:
        """The event ids of ``records``, normalized offline (what a complete sync must publish)."""
        connector = self.make_connector()
        ids = set()
        for record in self.records:
            for unit in connector.split(record, stream=self.stream_name()):
                for event in connector.to_events(unit, stream=self.stream_name()):
                    ids.add(str(event.event_id))
        return ids

    @staticmethod
    async def published_ids(hub: Hub) -> list[str]:
        return [orjson.loads(r.value)["event_id"] for r in await hub.bus.read_all(hub.topics.events)]

    # -- the standard tests ----------------------------------------------------------------------------

    def test_config_schema(self) -> None:
        cls = self.connector_class
        assert cls.name and cls.__doc__, "a connector needs a name and a docstring (shown by `connectors list`)"
        schema = cls.config_model.model_json_schema()
        assert schema.get("additionalProperties") is False, "config models must forbid unknown options"
        plain = _plain_secrets(cls.config_model)
        assert not plain, f"config fields {plain} look secret: make them SecretStr"
        with pytest.raises(ConfigurationError, match="surely_not_an_option"):
            cls({**self.config, "surely_not_an_option": 1})
        connector = self.make_connector()
        text = repr(connector.config) + str(connector.config.model_dump())
        for _, value in connector.config:
            if isinstance(value, SecretStr) and value.get_secret_value():
                assert value.get_secret_value() not in text, "a secret shows in the config's repr"

    def test_records_normalize_to_valid_events(self) -> None:
        assert self.records, "set `records` to sample raw records"
        connector = self.make_connector()
        stream = self.default_stream()
        events = []
        for record in self.records:
            for unit in connector.split(record, stream=stream):
                produced = connector.to_events(unit, stream=stream)
                again = connector.to_events(unit, stream=stream)
                assert [e.event_id for e in produced if e.source_record_id] == \
                       [e.event_id for e in again if e.source_record_id], "event ids must be deterministic"
                events.extend(produced)
        assert events, "no record produced an event"
        for event in events:
            assert event.source == connector.instance
            validate_at_edge(orjson.loads(event.to_json()))  # the exported cdp.event/1 JSON Schema

    @pytest.mark.asyncio
    async def test_check(self, connector_hub: Hub) -> None:
        connector = self.make_connector(connector_hub)
        if not connector.stream_names():
            await connector.check()  # push-only: nothing to reach, must not fail
            return
        api = self.mock_api(connector)
        others = [MockApi(connector, name, [], page_size=self.page_size) for name in connector.stream_names()
                  if name != api.stream.name and isinstance(connector.stream(name), RestStream)]
        with respx.mock(assert_all_called=False) as router:
            for fake in (api, *others):
                fake.install(router)
            await connector.check()
            assert api.calls or any(o.calls for o in others), "check() sent no request"
            for fake in (api, *others):
                fake.status = 401
            with pytest.raises(ConfigurationError):
                await connector.check()

    @pytest.mark.asyncio
    async def test_read_one_page(self, connector_hub: Hub) -> None:
        connector = self.make_connector(connector_hub)
        api = self.mock_api(connector)
        stream = connector.stream(self.stream_name())
        with respx.mock(assert_all_called=False) as router:
            api.install(router)
            pages = stream.pages(None)
            first = await anext(pages)
            await pages.aclose()  # type: ignore[attr-defined]
        assert [dict(r) for r in first] == [dict(r) for r in self.records[:self.page_size]]
        assert len(api.calls) == 1

    @pytest.mark.asyncio
    async def test_incremental_sync_resumes_from_cursor(self, connector_hub: Hub) -> None:
        connector = self.make_connector(connector_hub)
        api = self.mock_api(connector)
        stream = connector.stream(self.stream_name())
        if stream.cursor_field is None:
            pytest.skip(f"stream {stream.name} is not incremental")
        states = state_store_for(connector_hub)
        with respx.mock(assert_all_called=False) as router:
            api.install(router)
            first = await sync_stream(connector_hub, connector, stream, state_store=states)
            saved = await states.get(connector.instance, stream.name)
            assert saved is not None, "no checkpoint after a complete sync"
            keys = [stream.cursor_key(stream.cursor_value(r)) for r in self.records]
            assert stream.cursor_key(saved["cursor"]) == max(keys)
            assert first.ingest.records >= len(self.records)
            api.calls.clear()
            second = await sync_stream(connector_hub, connector, stream, state_store=states)
        assert api.calls and second.started_from is not None
        lookback = getattr(connector.config, "lookback", None)
        expected_start = max(keys) - lookback if lookback is not None and isinstance(max(keys), datetime) \
            else max(keys)
        assert second.started_from == expected_start, "the next sync must start at checkpoint - lookback"
        cursor_param = getattr(stream, "cursor_param", None)
        if cursor_param:  # the API was asked only for records from there on
            assert cursor_param in api.calls[0].url.params
            assert second.ingest.records < first.ingest.records or len(set(keys)) == 1
        after = await states.get(connector.instance, stream.name)
        assert after is not None and stream.cursor_key(after["cursor"]) == max(keys)

    @pytest.mark.asyncio
    async def test_resync_is_idempotent(self, connector_hub: Hub) -> None:
        connector = self.make_connector(connector_hub)
        api = self.mock_api(connector)
        stream = connector.stream(self.stream_name())
        states = state_store_for(connector_hub)
        with respx.mock(assert_all_called=False) as router:
            api.install(router)
            await sync_stream(connector_hub, connector, stream, full_refresh=True, state_store=states)
            once = sorted(await self.published_ids(connector_hub))
            await sync_stream(connector_hub, connector, stream, full_refresh=True, state_store=states)
            both = sorted(await self.published_ids(connector_hub))
        assert once, "the sync published nothing"
        # Every id exactly twice: the re-sync published the very same events (no-ops downstream).
        assert both == sorted(once + once), "a re-sync must publish the very same event ids"
        assert len(set(once)) == len(once) and set(once) == self.expected_event_ids()

    @pytest.mark.asyncio
    async def test_sync_killed_half_way_resumes(self, connector_hub: Hub) -> None:
        import asyncio

        connector = self.make_connector(connector_hub)
        api = self.mock_api(connector)
        stream = connector.stream(self.stream_name())
        states = state_store_for(connector_hub)
        api.kill_at_page = 1
        with respx.mock(assert_all_called=False) as router:
            api.install(router)
            with pytest.raises(asyncio.CancelledError):
                await sync_stream(connector_hub, connector, stream, state_store=states)
            partial = set(await self.published_ids(connector_hub))
            saved = await states.get(connector.instance, stream.name)
            if stream.cursor_field is not None and stream.is_sorted:
                assert saved is not None, "the first page's checkpoint must survive the kill"
                first_page = self.records[:self.page_size]
                assert stream.cursor_key(saved["cursor"]) == max(
                    stream.cursor_key(stream.cursor_value(r)) for r in first_page)
            await sync_stream(connector_hub, connector, stream, state_store=states)
        published = await self.published_ids(connector_hub)
        assert partial < set(published)
        assert set(published) == self.expected_event_ids(), "events lost (or invented) by the resumed sync"

    @pytest.mark.asyncio
    async def test_retries_rate_limits_and_server_errors(self, connector_hub: Hub) -> None:
        self.stream_name()  # push-only connectors skip here
        if "max_attempts" not in self.connector_class.config_model.model_fields:
            pytest.skip("the connector has no retry options (not an HttpConnector)")
        connector = self.make_connector(connector_hub, max_attempts=4)
        api = self.mock_api(connector)
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        policy = getattr(connector, "retry_policy", None)
        if policy is None:
            pytest.skip("the connector has no retry policy (not an HttpConnector)")
        policy.sleep = sleep
        api.queued = [httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(503),
                      httpx.ConnectError("connection reset by peer")]
        stream = connector.stream(self.stream_name())
        with respx.mock(assert_all_called=False) as router:
            api.install(router)
            result = await sync_stream(connector_hub, connector, stream, full_refresh=True,
                                       state_store=state_store_for(connector_hub))
        assert waits[0] == 3.0, "Retry-After must be waited exactly"
        assert len(waits) == 3 and result.ingest.records == len(self.records)
        assert set(await self.published_ids(connector_hub)) == self.expected_event_ids()

    @pytest.mark.asyncio
    async def test_broken_record_goes_to_dlq(self, connector_hub: Hub) -> None:
        if self.broken_record is None:
            raise AssertionError("set `broken_record` to a record the connector must dead-letter")
        connector = self.make_connector(connector_hub)
        stream = self.default_stream()
        good = list(self.records)
        result = await Ingestor(connector_hub).ingest(connector, [*good[:2], self.broken_record, *good[2:]],
                                                      stream=stream)
        assert result.dead >= 1 and result.events > 0
        letters = [DeadLetter.model_validate_json(r.value)
                   for r in await connector_hub.bus.read_all(connector_hub.topics.dlq)]
        assert len(letters) == result.dead
        letter = letters[0]
        assert letter.field and letter.error and letter.connector == connector.name
        assert orjson.loads(letter.payload_bytes()) in [orjson.loads(orjson.dumps(u))
                                                        for u in connector.split(self.broken_record)]
        with pytest.raises(RecordError):
            for unit in connector.split(self.broken_record, stream=stream):
                connector.to_events(unit, stream=stream)

    def test_webhook_signature(self) -> None:
        if "webhook_secret" not in self.connector_class.config_model.model_fields:
            pytest.skip(f"{self.connector_class.name} receives no webhooks")
        connector = self.make_connector()
        spec = connector.webhook
        body = orjson.dumps(dict(self.records[0]))
        url = "http://hub.test/v1/webhooks/kit"
        headers = sign_webhook(spec, self.webhook_secret, body, url=url)
        if spec.topic_header:
            wanted = self.default_stream()
            topic = next((t for t, s in spec.topics.items() if s == wanted), next(iter(spec.topics), None))
            if topic is not None:
                headers[spec.topic_header] = topic
        _, records = connector.parse_webhook(headers, body, url=url)
        assert records == [orjson.loads(body)]
        with pytest.raises(WebhookRejected):
            connector.parse_webhook(headers, body.replace(b"}", b", \"x\": 1}", 1), url=url)
        stale = sign_webhook(spec, self.webhook_secret, body, url=url,
                             timestamp=str(int(datetime.now(UTC).timestamp()) - 3600))
        if spec.timestamp_header:
            with pytest.raises(WebhookRejected, match="tolerance"):
                connector.parse_webhook({**headers, **stale}, body, url=url)
        with pytest.raises(WebhookRejected):
            connector.parse_webhook({**headers, spec.signature_header: "sha256=00"}, body, url=url)
