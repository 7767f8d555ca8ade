"""``POST /v1/events``: canonical events from a configured source system, with its source key.

    Authorization: Bearer <key of [event_sources.<name>]>   (or Basic with the key as user name)
    body: one event, a list, or {"batch": [...]}  (gzip allowed, edge size and depth caps)

    each event ─▶ profile_id dropped (logged) ─▶ "source" bound to the key's source (another one: rejected)
               ─▶ JSON Schema + pydantic (cdp.event/1) ─▶ SourcePolicy ─┬─ bad: dead letter, result "rejected"
                                                                        └─ good: [cdp.events]
    answer: 200 all accepted, 207 some rejected, 400 all rejected; one result per event
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cdp_hub.bus.events import event_message
from cdp_hub.dlq import DeadLetter, dead_letter_from_error
from cdp_hub.edge.durable import EdgeUnavailable, durable
from cdp_hub.errors import PolicyViolation, RecordError, SchemaViolation
from cdp_hub.schema.events import Event, parse_event
from cdp_hub.schema.export import validate_at_edge

from .auth import key_matches, presented_key
from .limits import EdgeError, error_response, excerpt, json_response, read_json
from .policy import SourcePolicy, strip_profile_id

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["routes"]

STAGE = "http"


class EventsEdge:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.limits = hub.settings.edge

    def authenticate(self, request: Request) -> SourcePolicy:
        sources = self.hub.settings.event_sources
        if not sources:
            raise EdgeError(401, "no_source", "no event source is configured: add [event_sources.<name>] with "
                            "keys (docs/http-api.md)")
        key = presented_key(request.headers.get("authorization"), body_field=None)
        if key is None:
            raise EdgeError(401, "missing_key", "missing source key: Authorization: Bearer <key>")
        match = None
        for name, source in sources.items():
            if key_matches(key, source.keys) and match is None:
                match = SourcePolicy.of(name, source.trust, source.allowed_types)
        if match is None:
            raise EdgeError(401, "unknown_key", "unknown source key")
        return match

    def _one(self, policy: SourcePolicy, item: Any) -> Event:
        if not isinstance(item, dict):
            raise SchemaViolation("<record>: an event must be a JSON object", field="<record>",
                                  value=excerpt(item, 80))
        strip_profile_id(item, source=policy.source)
        given = item.get("source", policy.source)
        if given != policy.source:
            raise PolicyViolation(f"source: this key sends events of source {policy.source!r}, not "
                                  f"{excerpt(given, 64)!r}", field="source", value=excerpt(given, 64),
                                  source=policy.source)
        item["source"] = policy.source
        validate_at_edge(item)
        return policy.admit(parse_event(item, options=self.hub.settings.normalization))

    async def handle(self, request: Request) -> Response:
        try:
            policy = self.authenticate(request)
            body = await read_json(request, max_bytes=self.limits.max_body_bytes, max_depth=self.limits.max_depth)
            items = body.get("batch") if isinstance(body, dict) and "batch" in body else body
            if isinstance(items, dict):
                items = [items]
            if not isinstance(items, list):
                raise EdgeError(400, "invalid_body", 'expected an event object, a list, or {"batch": [...]}')
            if len(items) > self.limits.max_batch_messages:
                raise EdgeError(413, "too_many_events", f"{len(items)} events; at most "
                                f"{self.limits.max_batch_messages} per request")
            return await self._ingest(policy, items)
        except EdgeError as exc:
            return error_response(exc)

    async def _ingest(self, policy: SourcePolicy, items: list[Any]) -> Response:
        hub = self.hub
        good: list[Event] = []
        dead: list[DeadLetter] = []
        results: list[dict[str, Any]] = []
        for i, item in enumerate(items):
            try:
                event = self._one(policy, item)
            except RecordError as exc:
                exc.source = exc.source or policy.source
                d = dead_letter_from_error(exc, stage=STAGE, payload=item, replay_topic=hub.topics.events)
                dead.append(d)
                results.append({"index": i, "status": "rejected", "code": d.failure_type,
                                "error": excerpt(str(exc), 300), "field": exc.field, "dlq_id": d.dlq_id})
                continue
            good.append(event)
            results.append({"index": i, "status": "accepted", "event_id": str(event.event_id)})
        messages = [event_message(hub.topics.events, e) for e in good]
        messages += [d.to_message(hub.topics.dlq) for d in dead]
        try:
            if messages:
                await durable(hub, hub.bus.publish_many(messages), route="/v1/events")
        except EdgeUnavailable:  # 503 with the configured Retry-After (the app's handler answers it)
            raise
        except Exception as exc:
            raise EdgeError(503, "unavailable", "events could not be stored; retry later",
                            headers={"Retry-After": "5"}) from exc
        for event in good:
            hub.metrics.events_ingested.labels(event.source, event.type).inc()
        for d in dead:
            hub.metrics.dlq.labels(STAGE, d.failure_type).inc()
        status = 200 if not dead else (207 if good else 400)
        return json_response({"accepted": len(good), "rejected": len(dead), "results": results}, status)


def routes(hub: Hub) -> list[Route]:
    return [Route("/v1/events", EventsEdge(hub).handle, methods=["POST"], name="events")]
