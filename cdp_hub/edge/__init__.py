"""The HTTP edge: every route where the outside world writes into the hub, and the guards around them.

    tracking SDKs ─▶ tracking.py  /v1/identify ... /v1/batch, /v1/i ... /v1/b   write keys (public/trusted)
    source systems ─▶ events.py   /v1/events                                    source keys (Bearer)
    source webhooks ─▶ webhooks.py /v1/webhooks/{instance}                      HMAC + timestamp
    (provider callbacks: cdp_hub.delivery.http, signed per channel; admin API: the admin token, auth.py)

Around every route (:func:`middleware`): CORS for the tracking routes (``edge.cors_origins``),
``IntakeLimit`` (in-flight and backlog bounds: 503 + Retry-After, ``intake.py``), ``RequestLimits`` (size
cap: 413; NUL characters: 400), ``AdminAuth`` (admin routes). ``openapi.py`` documents all of it (``GET /openapi.json``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from . import events, tracking, webhooks
from .auth import AdminAuth
from .intake import IntakeLimit
from .limits import RequestLimits

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["middleware", "routes"]

CORS_HEADERS = ["Authorization", "Content-Type", "Content-Encoding", "X-Retry-Count"]


def routes(hub: Hub) -> list[BaseRoute]:
    """The edge's ingestion routes (tracking, /v1/events, webhooks)."""
    return [*tracking.routes(hub), *events.routes(hub), *webhooks.routes(hub)]


class TrackingCors:
    """Starlette's CORS middleware on the tracking routes only (the admin API is never for browsers)."""

    def __init__(self, app: ASGIApp, origins: list[str], max_age: int) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, allow_origins=origins, allow_methods=["POST", "OPTIONS"],
                                   allow_headers=CORS_HEADERS, max_age=max_age)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in tracking.TRACKING_PATHS:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def middleware(hub: Hub) -> list[Middleware]:
    """Outermost first: CORS (so that a browser can read even a refusal), the intake bounds and the size cap
    before anything reads a body, then the admin token."""
    edge = hub.settings.edge
    return [Middleware(TrackingCors, origins=edge.cors_origins, max_age=edge.cors_max_age),
            Middleware(IntakeLimit, hub=hub),
            Middleware(RequestLimits, max_bytes=edge.max_body_bytes),
            Middleware(AdminAuth, token=hub.settings.admin_token)]
