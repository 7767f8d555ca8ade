"""Bounded intake: the edge never queues without limit; past its limits it sheds load with 503 + Retry-After.

    POST /v1/events, tracking routes, /v1/webhooks/{instance}
        │
        ├─ edge.max_in_flight requests already being handled   ─▶ 503 {"code": "overloaded"}, Retry-After
        ├─ in-process bus: edge.max_backlog accepted records
        │  not yet processed by every stage                     ─▶ 503 {"code": "backlogged"}, Retry-After
        └─ else: handled (and counted in flight until its answer is sent)

Refused before the body is read, so a flood costs almost nothing: each refusal is one counter
(``cdp_http_shed_total{route,reason}``) and a short answer; ``cdp_http_in_flight`` shows the current load.
Clients (tracking SDKs, source systems, webhook senders) retry a 503 after ``Retry-After``. Why a limit
helps: requests beyond what the bus and the stages can take would otherwise wait in memory (on the
in-process bus the accepted events themselves pile up there, and HTTP handling starves the stages that run
in the same event loop), so every request gets slower until the process runs out of memory; a fast 503
keeps the accepted ones fast and tells the clients to come back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import tracking

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["IntakeLimit", "intake_route"]

_WEBHOOKS = "/v1/webhooks/"


def intake_route(path: str) -> str | None:
    """The route template of an intake path (bounded cardinality for metrics), or ``None`` if not intake."""
    if path == "/v1/events" or path in tracking.TRACKING_PATHS:
        return path
    if path.startswith(_WEBHOOKS):
        return "/v1/webhooks/{instance}"
    return None


class IntakeLimit:
    """ASGI middleware: at most ``edge.max_in_flight`` intake requests at once, and (in-process bus) at most
    ``edge.max_backlog`` unprocessed records; the rest are answered 503 with ``Retry-After`` at once."""

    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub
        edge = hub.settings.edge
        self.max_in_flight = edge.max_in_flight
        self.max_backlog = edge.max_backlog
        self.retry_after = max(1, round(edge.overload_retry_after))
        self.in_flight = 0
        self._gauge = hub.metrics.http_in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = intake_route(scope["path"]) if scope["type"] == "http" and scope.get("method") == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        refusal = self._refusal()
        if refusal is not None:
            self.hub.metrics.http_shed.labels(route, refusal[0]).inc()
            await self._refuse(send, *refusal)
            return
        self.in_flight += 1
        self._gauge.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self._gauge.dec()

    def _refusal(self) -> tuple[str, str] | None:
        if self.in_flight >= self.max_in_flight:
            return "overloaded", (f"too many requests in flight (edge.max_in_flight = {self.max_in_flight}); "
                                  "send again after Retry-After")
        if self.max_backlog:
            backlog = self.hub.bus.backlog(self.hub.topics.events)
            if backlog is not None and backlog >= self.max_backlog:
                return "backlogged", (f"{backlog} accepted events are waiting to be processed (edge.max_backlog "
                                      f"= {self.max_backlog}); send again after Retry-After")
        return None

    async def _refuse(self, send: Send, code: str, message: str) -> None:
        body = orjson.dumps({"success": False, "code": code, "message": message, "error": message,
                             "retry_after": self.retry_after})
        start: Message = {"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.retry_after).encode()), (b"connection", b"close")]}
        await send(start)
        await send({"type": "http.response.body", "body": body})
