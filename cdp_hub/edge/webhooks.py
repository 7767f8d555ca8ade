"""``POST /v1/webhooks/{instance}``: signed webhooks of configured connector instances.

    request ─▶ RequestLimits ─▶ connector.parse_webhook (HMAC over timestamp and raw body, tolerance window; refused
    while the instance has no webhook_secret) ─▶ Ingestor ─▶ [cdp.events] / [cdp.dlq]

A record that passes verification but cannot be mapped goes to the dead-letter queue; the answer counts it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cdp_hub.connector.base import Connector
from cdp_hub.connector.ingest import Ingestor, IngestResult
from cdp_hub.connector.webhooks import WebhookRejected
from cdp_hub.edge.durable import durable

from .limits import EdgeError, error_response, excerpt, json_response

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["routes"]

log = logging.getLogger(__name__)


def _result(result: IngestResult) -> dict[str, Any]:
    return {
        "success": True, "records": result.records, "accepted": result.events, "dead_letters": result.dead,
        "errors": [{"record": d.record_id, "field": d.field, "error": excerpt(d.error, 300), "dlq_id": d.dlq_id}
                   for d in result.errors[:20]],
    }


class WebhookEdge:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.ingestor = Ingestor(hub)
        self._connectors: dict[str, Connector] = {}

    def connector(self, instance: str) -> Connector:
        found = self._connectors.get(instance)
        if found is None:
            found = self._connectors[instance] = self.hub.connector(instance)
        return found

    async def webhook(self, request: Request) -> Response:
        instance = request.path_params["instance"]
        settings = self.hub.settings.connectors.get(instance)
        if settings is None or not settings.enabled:
            return error_response(EdgeError(404, "no_such_instance", f"no enabled connector instance "
                                            f"{excerpt(instance, 64)!r}"))
        body = await request.body()
        connector = self.connector(instance)
        try:
            stream, records = connector.parse_webhook(request.headers, body, method=request.method,
                                                      url=str(request.url))
        except WebhookRejected as exc:
            log.warning("webhook for %s rejected: %s", instance, exc)
            return error_response(EdgeError(exc.status, "rejected", excerpt(str(exc), 300)))
        result = await durable(self.hub, self.ingestor.ingest(connector, records, stream=stream), route="webhook")
        return json_response(_result(result))


def routes(hub: Hub) -> list[Route]:
    return [Route("/v1/webhooks/{instance}", WebhookEdge(hub).webhook, methods=["POST"], name="webhook")]
