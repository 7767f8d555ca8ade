"""The tracking API as the Segment and RudderStack SDKs speak it (server, browser and mobile libraries).

    POST /v1/identify /v1/track /v1/page /v1/screen /v1/group /v1/alias    one message
    POST /v1/i /v1/t /v1/p /v1/s /v1/g /v1/a                               the same, browser short paths
    POST /v1/batch /v1/b                                                   {"batch": [...], "sentAt", "context"}
    OPTIONS on each                                                        CORS preflight (edge.cors_origins)

    request ─▶ RequestLimits ─▶ gzip (capped) ─▶ JSON (depth cap) ─▶ write key ─▶ the tracking source
       401 no/unknown key, 413 too large, 400 not JSON      (Basic user name, or "writeKey" in the body)
    each message ─▶ JSON Schema (the JSON path of the problem) ─▶ profile_id dropped ─▶ clock correction and
       sanity window ─▶ TrackingConnector (canonical events) ─▶ SourcePolicy (internal types, consent grants
       from public keys, allow-list) ─┬─ bad: dead letter with its reason and path
                                      └─ good: messageId seen within the dedupe window? ─ yes: acknowledged, dropped
                                                                                        └ no: [cdp.events]
    answer: 200 with one result per message (accepted / duplicate / rejected), also when some were rejected;
            a single-message route answers 400 for a rejected message (the SDKs then stop retrying it)

Error bodies carry ``code`` and ``message`` (read by the SDKs: a 4xx is final, a 5xx or 429 retried).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jsonschema
import jsonschema_rs
from jsonschema.exceptions import best_match
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.events import event_dict_message, event_message
from cdp_hub.connector.tracking import MESSAGE_SCHEMA, TrackingConnector
from cdp_hub.dlq import DeadLetter, dead_letter_from_error
from cdp_hub.edge.durable import EdgeUnavailable, durable
from cdp_hub.errors import RecordError, SchemaViolation
from cdp_hub.outages import unavailable_dependency
from cdp_hub.schema.events import Event, parse_event
from cdp_hub.schema.fastpath import event_dict

from .auth import key_matches, presented_key
from .limits import EdgeError, error_response, excerpt, json_response, read_json
from .policy import ClockWindow, SourcePolicy, event_time, strip_profile_id

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["BATCH_PATHS", "DEDUPE_REPORTER", "MESSAGE_PATHS", "TRACKING_PATHS", "TrackingEdge", "routes"]

log = logging.getLogger(__name__)

STAGE = "http.tracking"
DEDUPE_REPORTER = "http:dedupe"
"""The tracking edge's dedupe window on the outage board (it goes on without Redis, see ``_first_sightings``)."""
MESSAGE_PATHS: dict[str, str] = {
    **{f"/v1/{kind}": kind for kind in ("identify", "track", "page", "screen", "group", "alias")},
    "/v1/i": "identify", "/v1/t": "track", "/v1/p": "page", "/v1/s": "screen", "/v1/g": "group", "/v1/a": "alias",
}
BATCH_PATHS = ("/v1/batch", "/v1/b")
TRACKING_PATHS = frozenset([*MESSAGE_PATHS, *BATCH_PATHS])
_MESSAGE = jsonschema.Draft202012Validator(MESSAGE_SCHEMA)
# The same schema compiled in Rust: 2.5 µs instead of 1.6 ms per valid message (bench/ingest_http.py). It only
# says yes or no; for a message it refuses, the Python validator finds the most relevant error and its path.
_MESSAGE_FAST = jsonschema_rs.Draft202012Validator(MESSAGE_SCHEMA)


def schema_problem(data: Any, path: str) -> SchemaViolation | None:
    """The most relevant JSON Schema error of one message, naming its JSON path; None when it is valid."""
    if _MESSAGE_FAST.is_valid(data):
        return None
    error = best_match(_MESSAGE.iter_errors(data))
    if error is None:
        return None
    where = path + error.json_path[1:]
    value = error.instance
    # jsonschema's message quotes the offending instance in full, however large: only an excerpt is kept.
    return SchemaViolation(f"{where}: {excerpt(error.message, 200)}", field=where,
                           value=value if isinstance(value, str | int | float | bool | None) else excerpt(value))


@dataclass
class _Outcome:
    index: int
    message_id: str | None
    events: list[OutgoingMessage] = field(default_factory=list)
    """The message's canonical events, ready for [cdp.events]."""
    types: list[str] = field(default_factory=list)
    dead: DeadLetter | None = None
    duplicate: bool = False

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        if self.message_id is not None:
            out["messageId"] = excerpt(self.message_id, 256)
        if self.dead is not None:
            out.update(status="rejected", code=self.dead.failure_type, error=excerpt(self.dead.error, 300),
                       path=self.dead.field, dlq_id=self.dead.dlq_id)
        else:
            out["status"] = "duplicate" if self.duplicate else "accepted"
        return out


class TrackingEdge:
    """The tracking routes of one hub: its configured tracking sources, their keys and policies."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.limits = hub.settings.edge
        self.window = ClockWindow(timedelta(days=self.limits.timestamp_max_past_days),
                                  timedelta(seconds=self.limits.timestamp_max_future_seconds))
        self._sources: dict[str, tuple[TrackingConnector, SourcePolicy]] = {}
        self.events_topic = hub.topics.events

    def source(self, instance: str) -> tuple[TrackingConnector, SourcePolicy]:
        found = self._sources.get(instance)
        if found is None:
            connector = self.hub.connector(instance)
            assert isinstance(connector, TrackingConnector)
            cfg = connector.config
            found = self._sources[instance] = (connector, SourcePolicy.of(instance, cfg.trust, cfg.allowed_events))
        return found

    def authenticate(self, request: Request, body: Any) -> tuple[TrackingConnector, SourcePolicy]:
        """The tracking source whose write key the request presents; 401 for none or an unknown one."""
        instances = [name for name, inst in self.hub.settings.connectors.items()
                     if inst.type == TrackingConnector.name and inst.enabled]
        if not instances:
            raise EdgeError(401, "no_source", "no tracking source is configured: add [connectors.<name>] with "
                            'type = "tracking" and write_keys (docs/http-api.md)')
        key = presented_key(request.headers.get("authorization"), body)
        if key is None:
            raise EdgeError(401, "missing_write_key", "missing write key: send it as the basic-auth user name "
                            "or as writeKey in the body")
        match = None
        for name in instances:  # every source compared, so timing does not tell which one is close
            connector, policy = self.source(name)
            if key_matches(key, connector.config.write_keys) and match is None:
                match = (connector, policy)
        if match is None:
            raise EdgeError(401, "unknown_write_key", "unknown write key")
        return match

    # -- one message ---------------------------------------------------------------------------------

    def _prepare(self, connector: TrackingConnector, policy: SourcePolicy, raw: Any, index: int, path: str,
                 received: datetime, batch: dict[str, Any]) -> _Outcome:
        message_id = raw.get("messageId") if isinstance(raw, dict) else None
        outcome = _Outcome(index, str(message_id) if isinstance(message_id, str | int) else None)
        payload: Any = raw
        try:
            if not isinstance(raw, dict):
                raise SchemaViolation(f"{path}: a message must be a JSON object", field=path,
                                      value=excerpt(raw, 80))
            problem = schema_problem(raw, path)
            if problem is not None:
                raise problem
            message = dict(raw)
            message.pop("writeKey", None)
            strip_profile_id(message, source=connector.instance)
            shared = batch.get("context")
            if isinstance(shared, dict) and shared:
                message["context"] = {**shared, **(message.get("context") or {})}
            when, flag = event_time(message, received, self.window, batch_sent_at=batch.get("sentAt"))
            original = message.get("timestamp") or message.get("originalTimestamp")
            for stale in ("originalTimestamp", "sentAt"):
                message.pop(stale, None)
            # Times stay datetimes on the way to the mapping (parsed once); a dead letter gets them as text.
            message["timestamp"] = when
            message["receivedAt"] = received
            payload = message  # the dead letter keeps the corrected time: a replay maps to the same event
            topic = self.events_topic
            for draft in connector.drafts(message):
                # The plain valid case as a dict (schema/fastpath.py); anything else through the Event model,
                # which raises the error that names the field.
                fast = event_dict(draft, connector.normalization, received)
                if fast is not None:
                    policy.check(fast["type"], fast["properties"], fast.get("source_record_id"))
                    if flag is not None:
                        fast["context"] = {**fast["context"], "timestamp_flag": flag,
                                           "client_timestamp": excerpt(original, 64)}
                    outcome.events.append(event_dict_message(topic, fast))
                    outcome.types.append(fast["type"])
                    continue
                event = policy.admit(parse_event(draft, options=connector.normalization))
                if flag is not None:
                    event = _flagged(event, flag, original)
                outcome.events.append(event_message(topic, event))
                outcome.types.append(event.type)
        except RecordError as exc:
            exc.source = exc.source or connector.instance
            exc.record_id = exc.record_id or outcome.message_id
            if payload is not raw:
                payload = {**payload, "timestamp": payload["timestamp"].isoformat(),
                           "receivedAt": received.isoformat()}
            outcome.dead = dead_letter_from_error(exc, stage=STAGE, payload=payload, source=connector.instance,
                                                  replay_topic="connector", connector=TrackingConnector.name)
        return outcome

    # -- a request -----------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except EdgeError as exc:
            return error_response(exc)

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        kind = MESSAGE_PATHS.get(path)
        body = await read_json(request, max_bytes=self.limits.max_body_bytes, max_depth=self.limits.max_depth)
        if not isinstance(body, dict):
            raise EdgeError(400, "invalid_body", "$: expected a JSON object", path="$")
        connector, policy = self.authenticate(request, body)
        received = datetime.now(UTC)
        if kind is not None:
            body.setdefault("type", kind)
            if body["type"] != kind:
                raise EdgeError(400, "type_mismatch", f"$.type: {excerpt(body['type'], 40)!r} sent to {path}",
                                path="$.type", value=excerpt(body["type"], 40))
            outcomes = [self._prepare(connector, policy, body, 0, "$", received, {})]
        else:
            batch = body.get("batch")
            if not isinstance(batch, list):
                raise EdgeError(400, "invalid_body", '$.batch: expected {"batch": [message, ...]}', path="$.batch")
            if len(batch) > self.limits.max_batch_messages:
                raise EdgeError(413, "too_many_messages", f"$.batch: {len(batch)} messages; at most "
                                f"{self.limits.max_batch_messages} per request", path="$.batch")
            outcomes = [self._prepare(connector, policy, m, i, f"$.batch[{i}]", received, body)
                        for i, m in enumerate(batch)]
        await self._publish(connector.instance, outcomes)
        if kind is not None and outcomes[0].dead is not None:
            dead = outcomes[0].dead
            raise EdgeError(400, dead.failure_type, excerpt(dead.error, 300), path=dead.field, dlq_id=dead.dlq_id)
        accepted = sum(len(o.events) for o in outcomes if not o.duplicate)
        dead_letters = [o.dead for o in outcomes if o.dead is not None]
        return json_response({
            "success": True, "records": len(outcomes), "accepted": accepted,
            "duplicates": sum(o.duplicate for o in outcomes), "dead_letters": len(dead_letters),
            "errors": [{"record": d.record_id, "field": d.field, "error": excerpt(d.error, 300),
                        "dlq_id": d.dlq_id} for d in dead_letters[:20]],
            "results": [o.result() for o in outcomes],
        })

    async def _publish(self, source: str, outcomes: list[_Outcome]) -> None:
        """Publish the new events and the dead letters; messageIds seen within the window are dropped."""
        hub = self.hub
        ttl = self.limits.dedupe_window_seconds
        candidates = [o for o in outcomes if o.events and o.message_id is not None]
        claimed: list[str] = []
        if ttl and candidates:
            firsts, in_window = await self._first_sightings(source, [o.message_id or "" for o in candidates],
                                                            ttl)
            for outcome, first in zip(candidates, firsts, strict=True):
                outcome.duplicate = not first
                if first and in_window:
                    claimed.append(outcome.message_id or "")
        out: list[OutgoingMessage] = []
        for outcome in outcomes:
            if outcome.dead is not None:
                out.append(outcome.dead.to_message(hub.topics.dlq))
            elif not outcome.duplicate:
                out.extend(outcome.events)
        try:
            if out:
                await durable(hub, hub.bus.publish_many(out), route="tracking")
        except EdgeUnavailable:  # 503 with the configured Retry-After (the app's handler answers it)
            await self._forget_sightings(source, claimed)
            raise
        except Exception as exc:
            await self._forget_sightings(source, claimed)
            log.warning("tracking batch of %s not published: %s", source, type(exc).__name__)
            raise EdgeError(503, "unavailable", "events could not be stored; retry later",
                            headers={"Retry-After": "5"}) from exc
        ingested: Counter[str] = Counter()
        for outcome in outcomes:
            if outcome.dead is not None:
                hub.metrics.dlq.labels(STAGE, outcome.dead.failure_type).inc()
            elif not outcome.duplicate:
                ingested.update(outcome.types)
        for event_type, count in ingested.items():  # one metric update per type, not per event
            hub.metrics.events_ingested.labels(source, event_type).inc(count)


    async def _first_sightings(self, source: str, message_ids: list[str], ttl: int) -> tuple[list[bool], bool]:
        """Which messageIds are new within the dedupe window, and whether they are now claimed in it.

        While the window's store (Redis, or PostgreSQL for ``edge.dedupe_store = "postgres"``) is down every one
        counts as new and none is claimed: the window only spares the pipeline a repeat that the events table
        drops anyway (the event id is derived from the messageId), so ingestion goes on rather than answering
        5xx. The outage goes on the board once (``DEDUPE_REPORTER``) and ends with the first window that works
        again (or the first ready ``/readyz``)."""
        hub = self.hub
        try:
            firsts = await hub.sightings.first_sightings(source, message_ids, ttl)
        except Exception as exc:
            dependency = unavailable_dependency(exc)
            if dependency is None:
                raise
            hub.outages.down(DEDUPE_REPORTER, dependency, exc)
            hub.metrics.http_dedupe_skipped.labels(dependency).inc(len(message_ids))
            return [True] * len(message_ids), False
        hub.outages.up(DEDUPE_REPORTER)
        return firsts, True

    async def _forget_sightings(self, source: str, message_ids: list[str]) -> None:
        """Undo the claims of a request whose events were not published; with the window's store gone as well,
        the claims expire with the window (the SDK's retry within it is then taken for a duplicate: logged)."""
        try:
            await self.hub.sightings.forget_sightings(source, message_ids)
        except Exception as exc:
            if unavailable_dependency(exc) is None:
                raise
            log.warning("tracking: %d messageIds of %s stay claimed for the dedupe window (%s); their retries "
                        "within it are dropped as duplicates", len(message_ids), source, type(exc).__name__)


def _flagged(event: Event, flag: str, original: Any) -> Event:
    """``event`` marked as carrying the receive time instead of the client's time, which was not believed."""
    context = event.context.model_copy(update={"timestamp_flag": flag,
                                               "client_timestamp": excerpt(original, 64)})
    return event.model_copy(update={"context": context})


async def _options(request: Request) -> Response:
    """OPTIONS without a CORS preflight (those are answered by the CORS middleware): what the route accepts."""
    return Response(status_code=204, headers={"Allow": "POST, OPTIONS"})


def routes(hub: Hub) -> list[Route]:
    """The tracking routes for the daemon's Starlette app."""
    edge = TrackingEdge(hub)
    out = [Route(path, edge.handle, methods=["POST"], name=f"tracking_{kind}")
           for path, kind in MESSAGE_PATHS.items()]
    out.extend(Route(path, edge.handle, methods=["POST"], name="tracking_batch") for path in BATCH_PATHS)
    out.extend(Route(path, _options, methods=["OPTIONS"], name="tracking_options") for path in sorted(TRACKING_PATHS))
    return out
