"""The hub daemon's HTTP side (Starlette): ingestion, admin, health and metrics.

    POST /v1/events                canonical events (one, a list, or {"batch": [...]}) -> cdp.events
    POST /v1/webhooks/{instance}   source webhooks, signature-checked          (connector SDK)
    POST /v1/track|identify|...    tracking API for web and mobile SDKs        (connector SDK)
    POST /v1/callbacks/{channel}   delivery reports from providers             (delivery)
    GET  /v1/profiles?kind=&value= profile lookup                              (resolver)
    GET  /v1/dlq                   dead letters;  POST /v1/dlq/replay
    GET  /metrics  /healthz  /readyz

Ingestion answers 503 with ``Retry-After`` while the bus cannot make the events durable (never 2xx for an
event that is not durable: :mod:`cdp_hub.connector.edge`); ``/readyz`` fails while a dependency is down or a
stage waits for one.

Admin routes (/v1/profiles, /v1/dlq) require ``Authorization: Bearer <admin_token>`` when
``admin_token`` is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cdp_hub.connector.edge import EDGE_REPORTER, EdgeUnavailable, durable, unavailable_response
from cdp_hub.dlq import dead_letter_from_error
from cdp_hub.dlq.replay import list_dead_letters, replay_dead_letters
from cdp_hub.errors import RecordError
from cdp_hub.outages import DEPENDENCIES
from cdp_hub.schema.events import Event, parse_event
from cdp_hub.schema.export import validate_at_edge

if TYPE_CHECKING:
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.build import Pipeline

__all__ = ["ROUTE_MODULES", "create_app"]

log = logging.getLogger(__name__)

# Modules that contribute routes with ``routes(hub) -> list[Route]``.
ROUTE_MODULES = ("cdp_hub.connector.http", "cdp_hub.resolver.http", "cdp_hub.delivery.http")
ADMIN_PREFIXES = ("/v1/profiles", "/v1/dlq")
MAX_BATCH = 1000


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type="application/json")


class AdminAuth:
    """Bearer-token check for the admin routes (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token and scope["type"] == "http" and scope["path"].startswith(ADMIN_PREFIXES):
            import hmac

            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"").decode()
            if not hmac.compare_digest(given, f"Bearer {self.token}"):
                await JSONResponse({"error": "admin token required"}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Metered:
    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.hub.metrics.http_requests.labels(path, str(status["code"])).inc()


def create_app(hub: Hub, *, pipeline: Pipeline | None = None) -> Starlette:
    """The ASGI app. The hub must be started by the caller (``cdp-hub run``, tests). ``pipeline`` is the
    stages running in this process, whose progress ``/healthz`` reports."""

    async def ingest_events(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return json_response({"error": f"body is not JSON: {exc}"}, 400)
        items = body.get("batch") if isinstance(body, dict) and "batch" in body else body
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list):
            return json_response({"error": "expected an event object, a list, or {\"batch\": [...]}"}, 400)
        if len(items) > MAX_BATCH:
            return json_response({"error": f"at most {MAX_BATCH} events per request"}, 413)
        good: list[Event] = []
        results: list[dict[str, Any]] = []
        dead = []
        for i, item in enumerate(items):
            try:
                validate_at_edge(item)
                event = parse_event(item, options=hub.settings.normalization)
            except RecordError as exc:
                d = dead_letter_from_error(exc, stage="http", payload=item, replay_topic=hub.topics.events)
                dead.append(d.to_message(hub.topics.dlq))
                hub.metrics.dlq.labels("http", d.failure_type).inc()
                results.append({"index": i, "status": "rejected", "error": str(exc), "field": exc.field,
                                "dlq_id": d.dlq_id})
                continue
            good.append(event)
            results.append({"index": i, "status": "accepted", "event_id": str(event.event_id)})
        from cdp_hub.connector.ingest import Ingestor

        async def publish() -> None:
            await Ingestor(hub).publish_events(good)
            if dead:
                await hub.bus.publish_many(dead)

        await durable(hub, publish(), route="/v1/events")
        status = 200 if not dead else (207 if good else 400)
        return json_response({"accepted": len(good), "rejected": len(dead), "results": results}, status)

    async def healthz(request: Request) -> Response:
        # Alive unless a stage has been stuck (a batch retrying forever, a hung poll) for too long.
        limit = hub.settings.stage_stuck_seconds
        stuck = {r.stage.name: round(r.stuck_for()) for r in (pipeline.runners if pipeline else ()) if r.stuck_for() > limit}
        if stuck:
            return json_response({"status": "stuck", "stages": stuck}, 503)
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(hub.bus.end_offsets(hub.topics.events), 3)
            checks["bus"] = "ok"
        except Exception as exc:
            checks["bus"] = f"error: {type(exc).__name__}"
        try:
            await asyncio.wait_for(hub.store.fetchval("SELECT 1"), 2)
            checks["postgres"] = "ok"
        except Exception as exc:
            checks["postgres"] = f"error: {type(exc).__name__}"
        try:
            await asyncio.wait_for(hub.hotstate.ping(), 2)
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        # A stage waiting for a dependency is not ready even when the probes above pass again: it has not
        # caught up yet (and a probe may pass while the stage's own connections still fail).
        # A stage waiting for a channel provider is no reason to stop ingestion: only the hub's own
        # dependencies count here (the provider shows in cdp_outage and cdp_channel_circuit_open).
        paused = {who.removeprefix("stage:"): dep for who, dep in hub.outages.paused("stage:").items()
                  if dep in DEPENDENCIES}
        if paused:
            checks["stages"] = "paused: " + ", ".join(f"{s} waits for {d}" for s, d in sorted(paused.items()))
        ok = all(v == "ok" for v in checks.values())
        if ok:
            hub.outages.up(EDGE_REPORTER)  # the edge saw an outage the probes now show is over
        return json_response({"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def dlq_list(request: Request) -> Response:
        q = request.query_params
        items = await list_dead_letters(hub, limit=min(int(q.get("limit", 100)), 1000),
                                        failure_type=q.get("failure_type"), source=q.get("source"),
                                        include_replayed=q.get("include_replayed") in ("1", "true"))
        return json_response({"items": items})

    async def dlq_replay(request: Request) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        res = await replay_dead_letters(hub, ids=body.get("ids", []), failure_type=body.get("failure_type"),
                                        source=body.get("source"), fixes=body.get("fixes"),
                                        dry_run=bool(body.get("dry_run")))
        return json_response(res.__dict__)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/v1/events", ingest_events, methods=["POST"]),
        Route("/v1/dlq", dlq_list),
        Route("/v1/dlq/replay", dlq_replay, methods=["POST"]),
    ]
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        routes.extend(module.routes(hub))

    token = hub.settings.admin_token.get_secret_value() if hub.settings.admin_token else None
    return Starlette(routes=routes, middleware=[Middleware(Metered, hub=hub), Middleware(AdminAuth, token=token)],
                     exception_handlers={EdgeUnavailable: unavailable_response})


class _Server:
    """uvicorn without its own signal handling: the caller owns SIGTERM (graceful stop of the stages too)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                access_log=False)
        self.server = uvicorn.Server(config)
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]

    async def serve(self) -> None:
        await self.server.serve()

    def stop(self) -> None:
        self.server.should_exit = True


def http_server(hub: Hub, host: str, port: int, *, pipeline: Pipeline | None = None) -> _Server:
    return _Server(create_app(hub, pipeline=pipeline), host, port)


Handler = Callable[[Request], Awaitable[Response]]
