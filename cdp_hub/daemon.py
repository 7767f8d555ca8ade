"""The hub daemon's HTTP side (Starlette): ingestion, admin, health and metrics.

    POST /v1/events, /v1/webhooks/{instance}, tracking API     the edge (cdp_hub.edge): keys, limits, CORS
    POST /v1/callbacks/{channel}, /v1/unsubscribe/{id}         delivery reports, unsubscribe  (delivery)
    GET  /v1/profiles?kind=&value=, /v1/profiles/{id}          profile lookup        (resolver, admin token)
    GET  /v1/dlq;  POST /v1/dlq/replay                         dead letters                    (admin token)
    GET  /metrics  /healthz  /readyz  /openapi.json

Ingestion answers 503 with ``Retry-After`` while the bus cannot make the events durable (never 2xx for an
event that is not durable: :mod:`cdp_hub.edge.durable`); ``/readyz`` fails while a dependency is down or a
stage waits for one, and while a configured channel or connector instance is invalid (:mod:`cdp_hub.checks`:
its name and the reason are in the answer).

Admin routes need ``Authorization: Bearer <admin_token>``; with no ``admin_token`` configured they are closed.
Every route answers client mistakes with a 4xx naming the problem (docs/http-api.md), never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cdp_hub.checks import instance_problems
from cdp_hub.dlq.replay import list_dead_letters, replay_dead_letters
from cdp_hub.edge import middleware as edge_middleware
from cdp_hub.edge.durable import EDGE_REPORTER, EdgeUnavailable, unavailable_response
from cdp_hub.edge.limits import EdgeError, error_response, read_json
from cdp_hub.edge.openapi import openapi_document
from cdp_hub.errors import ConfigurationError
from cdp_hub.outages import DEPENDENCIES

if TYPE_CHECKING:
    from cdp_hub.config import Settings
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.build import Pipeline

__all__ = ["ROUTE_MODULES", "check_listen_address", "create_app"]

log = logging.getLogger(__name__)

# Modules that contribute routes with ``routes(hub) -> list[Route]``.
ROUTE_MODULES = ("cdp_hub.edge", "cdp_hub.resolver.http", "cdp_hub.delivery.http", "cdp_hub.delivery.consent")


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type="application/json")


def settle_heap(settings: Settings) -> None:
    """Tune the garbage collector for a long-running hub process (``gc_gen0_threshold``).

    The objects alive after start-up (modules, pydantic schemas, settings, pools) live as long as the process:
    ``gc.freeze()`` moves them out of every later collection. A request or batch then allocates thousands of
    short-lived containers (one tracking message makes a dozen dicts and lists); with Python's first threshold
    of 700 a collection ran several times per request and rescanned the live ones each time. Freed by reference
    counting anyway, they need the collector only for cycles, so a larger threshold costs a little memory."""
    gc.collect()
    gc.freeze()
    if settings.gc_gen0_threshold:
        _, second, third = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0_threshold, second, third)


def check_listen_address(settings: Settings, host: str) -> None:
    """Refuse to serve beyond loopback without an admin token: the admin API would be the first thing an
    attacker on the network tries, and a forgotten token must not leave it to a default."""
    if settings.admin_token is not None and settings.admin_token.get_secret_value():
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(f"refusing to listen on {host} without an admin token: set admin_token "
                                 "(CDP_HUB_ADMIN_TOKEN), or listen on 127.0.0.1")


class Metered:
    def __init__(self, app: ASGIApp, hub: Hub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        started = time.perf_counter()

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
            self.hub.metrics.http_request_seconds.labels(path).observe(time.perf_counter() - started)


def create_app(hub: Hub, *, pipeline: Pipeline | None = None) -> Starlette:
    """The ASGI app. The hub must be started by the caller (``cdp-hub run``, tests). ``pipeline`` is the
    stages running in this process, whose progress ``/healthz`` reports."""

    async def healthz(request: Request) -> Response:
        # Alive unless a stage has been stuck (a batch retrying forever, a hung poll) for too long.
        limit = hub.settings.stage_stuck_seconds
        stuck = {r.stage.name: round(r.stuck_for()) for r in (pipeline.runners if pipeline else ()) if r.stuck_for() > limit}
        if stuck:
            return json_response({"status": "stuck", "stages": stuck}, 503)
        return json_response({"status": "ok"})

    # Worked out once: the configuration does not change while the process runs.
    problems = instance_problems(hub.settings, hub.registry)

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
        if all(v == "ok" for v in checks.values()):
            # The edge (its publishing, its dedupe window) saw an outage the probes now show is over.
            for reporter in hub.outages.paused(EDGE_REPORTER):
                hub.outages.up(reporter)
        for kind in ("channel", "connector"):
            bad = [p for p in problems if p.kind == kind]
            if bad:
                checks[f"{kind}s"] = "misconfigured: " + "; ".join(f"{p.name}: {p.reason}" for p in bad)
        ok = all(v == "ok" for v in checks.values())
        body: dict[str, Any] = {"status": "ready" if ok else "not ready", "checks": checks}
        if problems:
            body["problems"] = [{"kind": p.kind, "name": p.name, "reason": p.reason} for p in problems]
        return json_response(body, 200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def dlq_list(request: Request) -> Response:
        q = request.query_params
        raw_limit = q.get("limit", "100")
        if not raw_limit.isdigit():
            return error_response(EdgeError(400, "invalid_query", "limit must be a whole number", path="limit"))
        items = await list_dead_letters(hub, limit=max(1, min(int(raw_limit[:7]), 1000)),
                                        failure_type=q.get("failure_type"), source=q.get("source"),
                                        include_replayed=q.get("include_replayed") in ("1", "true"))
        return json_response({"items": items})

    async def dlq_replay(request: Request) -> Response:
        try:
            body = await read_json(request, max_bytes=hub.settings.edge.max_body_bytes,
                                   max_depth=hub.settings.edge.max_depth) if await request.body() else {}
            if not isinstance(body, dict):
                raise EdgeError(400, "invalid_body", "expected a JSON object", path="$")
            ids, fixes = body.get("ids", []), body.get("fixes")
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise EdgeError(400, "invalid_body", "ids: expected a list of dead-letter ids", path="$.ids")
            if fixes is not None and not isinstance(fixes, dict):
                raise EdgeError(400, "invalid_body", "fixes: expected an object of id: fixed record", path="$.fixes")
            for name in ("failure_type", "source"):
                if body.get(name) is not None and not isinstance(body[name], str):
                    raise EdgeError(400, "invalid_body", f"{name}: expected a string", path=f"$.{name}")
        except EdgeError as exc:
            return error_response(exc)
        res = await replay_dead_letters(hub, ids=ids, failure_type=body.get("failure_type"),
                                        source=body.get("source"), fixes=fixes, dry_run=bool(body.get("dry_run")))
        return json_response(res.__dict__)

    async def openapi(request: Request) -> Response:
        return json_response(document)

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/dlq", dlq_list, methods=["GET"]),
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

    document = openapi_document()
    hub.metrics.known(routes=[path for r in routes if (path := getattr(r, "path", None))])
    return Starlette(routes=routes, middleware=[Middleware(Metered, hub=hub), *edge_middleware(hub)],
                     exception_handlers={EdgeUnavailable: unavailable_response})


class _Server:
    """uvicorn without its own signal handling: the caller owns SIGTERM (graceful stop of the stages too)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        import uvicorn

        # log_config=None: uvicorn's lines go to the root handler like every other library's (one format,
        # redacted), instead of handlers of its own.
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                access_log=False, log_config=None)
        self.server = uvicorn.Server(config)
        self.server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]

    async def serve(self) -> None:
        await self.server.serve()

    def stop(self) -> None:
        self.server.should_exit = True


def http_server(hub: Hub, host: str, port: int, *, pipeline: Pipeline | None = None) -> _Server:
    check_listen_address(hub.settings, host)
    return _Server(create_app(hub, pipeline=pipeline), host, port)


Handler = Callable[[Request], Awaitable[Response]]
