"""Admin HTTP routes of the resolver (mounted by the daemon; the daemon guards ``/v1/profiles`` with the
admin token).

    GET /v1/profiles?kind=email&value=anna@example.com[&events=20]   a profile by any identity
    GET /v1/profiles/{profile_id}[?events=20]                       a profile by id (merged ids lead on)

Both answer the ``ProfileView`` JSON that ``cdp-hub profiles show --json`` prints; 404 when there is none.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cdp_hub.errors import NormalizationError
from cdp_hub.resolver.profiles import ProfileView, find_profile, load_profile

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["routes"]

_MAX_EVENTS = 500


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type="application/json")


def _events_limit(request: Request) -> int | Response:
    raw = request.query_params.get("events", "20")
    try:
        limit = int(raw)
    except ValueError:
        return _json({"error": f"events must be a number, got {raw!r}"}, 400)
    return max(0, min(limit, _MAX_EVENTS))


def _view(view: ProfileView | None, what: str) -> Response:
    if view is None:
        return _json({"error": f"no profile for {what}"}, 404)
    return _json(view.model_dump(mode="json"))


def routes(hub: Hub) -> list[Route]:
    """The profile lookup routes, bound to ``hub``'s store."""

    async def by_identity(request: Request) -> Response:
        kind = request.query_params.get("kind")
        value = request.query_params.get("value")
        if not kind or not value:
            return _json({"error": "give kind and value, e.g. /v1/profiles?kind=email&value=anna@example.com"},
                         400)
        limit = _events_limit(request)
        if isinstance(limit, Response):
            return limit
        try:
            view = await find_profile(hub.store, kind, value, options=hub.settings.normalization,
                                      events_limit=limit)
        except NormalizationError as exc:
            return _json({"error": str(exc), "field": exc.field}, 400)
        return _view(view, f"{kind} {value!r}")

    async def by_id(request: Request) -> Response:
        raw = request.path_params["profile_id"]
        try:
            pid = uuid.UUID(raw)
        except ValueError:
            return _json({"error": f"{raw!r} is not a profile id (a UUID)"}, 400)
        limit = _events_limit(request)
        if isinstance(limit, Response):
            return limit
        return _view(await load_profile(hub.store, pid, events_limit=limit), f"id {pid}")

    return [
        Route("/v1/profiles", by_identity, methods=["GET"]),
        Route("/v1/profiles/{profile_id}", by_id, methods=["GET"]),
    ]
