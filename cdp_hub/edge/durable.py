"""The HTTP edge's promise: never answer 2xx for an event that is not durable on the bus.

    route ─▶ durable(hub, publishing, route=...) ─┬─ done within edge_publish_timeout ─▶ 2xx as usual
                                                  └─ the bus cannot take it (broker down, timeout)
                                                      ─▶ EdgeUnavailable ─▶ 503 + Retry-After (unavailable_response)

Every ingestion route (``/v1/events``, the tracking API, webhooks) wraps its publishing in :func:`durable`;
the daemon turns :class:`EdgeUnavailable` into the 503 with one exception handler. The outage is reported to
the hub's :class:`~cdp_hub.outages.Outages` (one ERROR line per outage, not per request). A publish that timed
out may still land later: clients retry, and the event id makes the retry a no-op downstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from cdp_hub.errors import RetriableError
from cdp_hub.outages import unavailable_dependency

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["EDGE_REPORTER", "EdgeUnavailable", "durable", "unavailable_response"]

log = logging.getLogger(__name__)

EDGE_REPORTER = "http"
"""The HTTP edge's name on the outage board."""


class EdgeUnavailable(RetriableError):
    """The events of a request could not be made durable; the client must send them again later."""


T = TypeVar("T")


async def durable(hub: Hub, publishing: Awaitable[T], *, route: str, awaits: str = "kafka",
                  final: bool = True) -> T:
    """Await ``publishing`` (the route's publish to the bus, or another step before the 2xx such as the dedupe
    window's claim) within ``edge_publish_timeout``; raise :class:`EdgeUnavailable` when its dependency could
    not answer (``awaits`` names the one a missed deadline is put down to). Other errors pass unchanged. Only a
    ``final`` step (the publish) tells the outage board that the edge works again when it succeeds."""
    settings = hub.settings
    try:
        result = await asyncio.wait_for(publishing, settings.edge_publish_timeout)
    except Exception as exc:
        dependency = unavailable_dependency(exc)
        if dependency is None and isinstance(exc, TimeoutError):
            dependency = awaits  # our own deadline: the one thing awaited did not finish
        if dependency is None:
            raise
        hub.outages.down(EDGE_REPORTER, dependency, exc)
        hub.metrics.http_unavailable.labels(route, dependency).inc()
        raise EdgeUnavailable(f"{dependency} cannot take events now; nothing from this request was accepted "
                              "durably, send it again later", retry_after=settings.edge_retry_after,
                              dependency=dependency) from exc
    if final:
        hub.outages.up(EDGE_REPORTER)
    return result


def unavailable_response(request: Request, exc: Exception) -> Response:
    """The 503 of an :class:`EdgeUnavailable` (the daemon's exception handler)."""
    retry_after = exc.retry_after if isinstance(exc, RetriableError) and exc.retry_after is not None else 5.0
    body = {"error": str(exc), "retry_after": retry_after}
    return Response(orjson.dumps(body), status_code=503, media_type="application/json",
                    headers={"Retry-After": str(max(1, round(retry_after)))})
