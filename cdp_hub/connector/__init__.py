"""Connector SDK: base class and helpers for pulling, receiving and importing source data.

    Connector ─┬─ streams: RestStream (paginators, authenticators, retries, rate limit) ─▶ sync()
               ├─ parse_webhook(): WebhookSpec, HMAC-SHA256, replay window ─▶ routes(hub)
               └─ files: iter_records() / import_file()  (CSV, JSON Lines, gzip; streamed)

See docs/connectors.md for the author's guide.
"""

from cdp_hub.connector.auth import ApiKeyAuth, BasicAuth, BearerAuth, OAuth2ClientCredentials
from cdp_hub.connector.base import Connector, ConnectorConfig, SourceRecord
from cdp_hub.connector.pagination import (
    CursorPaginator,
    LinkHeaderPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    SinglePage,
)
from cdp_hub.connector.resilience import Action
from cdp_hub.connector.rest import HttpConnector, HttpConnectorConfig, RestStream, WebhookOptions
from cdp_hub.connector.streams import Stream
from cdp_hub.connector.webhooks import WebhookRejected, WebhookSpec, sign_webhook, verify_webhook

__all__ = [
    "Action",
    "ApiKeyAuth",
    "BasicAuth",
    "BearerAuth",
    "Connector",
    "ConnectorConfig",
    "CursorPaginator",
    "HttpConnector",
    "HttpConnectorConfig",
    "LinkHeaderPaginator",
    "OAuth2ClientCredentials",
    "OffsetPaginator",
    "PageNumberPaginator",
    "RestStream",
    "SinglePage",
    "SourceRecord",
    "Stream",
    "WebhookOptions",
    "WebhookRejected",
    "WebhookSpec",
    "sign_webhook",
    "verify_webhook",
]
