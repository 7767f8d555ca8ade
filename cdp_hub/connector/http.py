"""HTTP ingestion routes the daemon mounts: source webhooks and the tracking API.

    POST /v1/webhooks/{instance}    signature-checked webhook of a configured connector instance
    POST /v1/identify|track|page|screen|alias    one tracking message
    POST /v1/batch                  {"batch": [message, ...]}

    request ─▶ verify (HMAC / write key) ─▶ JSON ─▶ jsonschema at the edge (tracking) ─▶ Ingestor
                  401/403                     400 names the JSON path and value      ─▶ [cdp.events] / [cdp.dlq]
                                                                     bus down: 503 + Retry-After (connector.edge)

A record that passes the edge but cannot be mapped (an unknown event name, an impossible phone) is not an
HTTP error: it goes to the dead-letter queue and the response counts it, as the rest of the batch goes on.

Tracking auth: when ``tracking`` connector instances are configured with ``write_keys``, a request must send
one of the keys as the basic-auth user name (as the SDKs do) or as ``writeKey`` in the body; the key picks
the instance (the event ``source``). With no tracking instance configured, messages are accepted as source
``tracking`` (development setups).
"""

from __future__ import annotations

import base64
import hmac
import logging
from typing import TYPE_CHECKING, Any

import jsonschema
import orjson
from jsonschema.exceptions import best_match
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cdp_hub.connector.base import Connector
from cdp_hub.connector.edge import durable
from cdp_hub.connector.ingest import Ingestor, IngestResult
from cdp_hub.connector.tracking import BATCH_SCHEMA, MESSAGE_SCHEMA, TrackingConnector
from cdp_hub.connector.webhooks import WebhookRejected
from cdp_hub.errors import CdpHubError

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["MAX_BODY_BYTES", "TRACKING_TYPES", "routes"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 5 * 1024 * 1024
TRACKING_TYPES = ("identify", "track", "page", "screen", "alias")
_MESSAGE = jsonschema.Draft202012Validator(MESSAGE_SCHEMA)
_BATCH = jsonschema.Draft202012Validator(BATCH_SCHEMA)


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type="application/json")


def _result(result: IngestResult) -> dict[str, Any]:
    return {
        "success": True, "records": result.records, "accepted": result.events, "dead_letters": result.dead,
        "errors": [{"record": d.record_id, "field": d.field, "error": d.error, "dlq_id": d.dlq_id}
                   for d in result.errors[:20]],
    }


class _Edge(CdpHubError):
    """A request refused at the edge: an HTTP status and a JSON body naming the problem."""

    def __init__(self, status: int, error: str, **detail: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"success": False, "error": error, **detail}


def _validate(validator: jsonschema.Draft202012Validator, data: Any, prefix: str = "$") -> None:
    error = best_match(validator.iter_errors(data))
    if error is None:
        return
    path = prefix + error.json_path[1:]
    value = error.instance
    shown = value if isinstance(value, str | int | float | bool | None) else orjson.dumps(value).decode()[:200]
    raise _Edge(400, f"{path}: {error.message}", path=path, value=shown)


async def _body(request: Request) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
        raise _Edge(413, f"body larger than {MAX_BODY_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise _Edge(413, f"body larger than {MAX_BODY_BYTES} bytes")
    return body


class HttpIngestion:
    """The route handlers, holding one connector per instance (built on first use)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.ingestor = Ingestor(hub)
        self._connectors: dict[str, Connector] = {}

    def connector(self, instance: str) -> Connector:
        found = self._connectors.get(instance)
        if found is None:
            found = self._connectors[instance] = self.hub.connector(instance)
        return found

    # -- webhooks ------------------------------------------------------------------------------------

    async def webhook(self, request: Request) -> Response:
        instance = request.path_params["instance"]
        settings = self.hub.settings.connectors.get(instance)
        if settings is None or not settings.enabled:
            return _json({"success": False, "error": f"no enabled connector instance {instance!r}; configure "
                          f"[connectors.{instance}] with a type and a webhook_secret"}, 404)
        try:
            body = await _body(request)
            connector = self.connector(instance)
            stream, records = connector.parse_webhook(request.headers, body, method=request.method,
                                                      url=str(request.url))
        except WebhookRejected as exc:
            log.warning("webhook for %s rejected: %s", instance, exc)
            return _json({"success": False, "error": str(exc)}, exc.status)
        except _Edge as exc:
            return _json(exc.body, exc.status)
        result = await durable(self.hub, self.ingestor.ingest(connector, records, stream=stream), route="webhook")
        return _json(_result(result))

    # -- tracking API --------------------------------------------------------------------------------

    def _tracking_connector(self, request: Request, body: Any) -> Connector:
        instances = [name for name, inst in self.hub.settings.connectors.items()
                     if inst.type == TrackingConnector.name and inst.enabled]
        if not instances:
            found = self._connectors.get("tracking")
            if found is None:
                found = self._connectors["tracking"] = TrackingConnector(
                    {}, instance="tracking", normalization=self.hub.settings.normalization)
            return found
        key = self._write_key(request, body)
        if key is None:
            raise _Edge(401, "missing write key: send it as the basic-auth user name or as writeKey")
        for name in instances:
            connector = self.connector(name)
            keys = getattr(connector.config, "write_keys", [])
            matched = False
            for candidate in keys:  # every key compared in constant time, so timing reveals nothing
                matched |= hmac.compare_digest(candidate.get_secret_value().encode(), key.encode())
            if matched:
                return connector
        raise _Edge(401, "unknown write key")

    @staticmethod
    def _write_key(request: Request, body: Any) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                return base64.b64decode(auth[6:].strip()).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                return None
        if isinstance(body, dict) and isinstance(body.get("writeKey"), str):
            return str(body["writeKey"])
        return None

    async def _decode(self, request: Request) -> Any:
        raw = await _body(request)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _Edge(400, f"body is not JSON: {exc}") from None

    async def message(self, request: Request) -> Response:
        kind = request.url.path.rsplit("/", 1)[-1]
        try:
            body = await self._decode(request)
            if not isinstance(body, dict):
                raise _Edge(400, "$: expected a JSON object", path="$", value=type(body).__name__)
            body.setdefault("type", kind)
            if body["type"] != kind:
                raise _Edge(400, f"$.type: {body['type']!r} sent to /v1/{kind}", path="$.type", value=body["type"])
            _validate(_MESSAGE, body)
            connector = self._tracking_connector(request, body)
        except _Edge as exc:
            return _json(exc.body, exc.status)
        body.pop("writeKey", None)
        return _json(_result(await durable(self.hub, self.ingestor.ingest(connector, [body]), route="tracking")))

    async def batch(self, request: Request) -> Response:
        try:
            body = await self._decode(request)
            _validate(_BATCH, body)
            for i, message in enumerate(body["batch"]):
                _validate(_MESSAGE, message, prefix=f"$.batch[{i}]")
            connector = self._tracking_connector(request, body)
        except _Edge as exc:
            return _json(exc.body, exc.status)
        body.pop("writeKey", None)
        return _json(_result(await durable(self.hub, self.ingestor.ingest(connector, [body]), route="tracking")))


def routes(hub: Hub) -> list[Route]:
    """The ingestion routes (webhooks and tracking API) for the daemon's Starlette app."""
    api = HttpIngestion(hub)
    out = [Route("/v1/webhooks/{instance}", api.webhook, methods=["POST"], name="webhook"),
           Route("/v1/batch", api.batch, methods=["POST"], name="tracking_batch")]
    out.extend(Route(f"/v1/{kind}", api.message, methods=["POST"], name=f"tracking_{kind}") for kind in TRACKING_TYPES)
    return out
