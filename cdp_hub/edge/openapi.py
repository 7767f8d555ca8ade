"""The OpenAPI 3.1 document of the whole HTTP API, served at ``GET /openapi.json``.

Written by hand next to the routes it describes; tests/test_openapi.py keeps it true (every route of the app is
documented and every documented operation exists) and runs schemathesis against the running app with it.
``x-max-response-bytes`` on an operation is the largest answer it gives; the schemathesis test checks it.
"""

from __future__ import annotations

import copy
from typing import Any

from cdp_hub.connector.tracking import MESSAGE_SCHEMA

from .tracking import BATCH_PATHS, MESSAGE_PATHS

__all__ = ["openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_SMALL = 16 * 1024
_BATCH_ANSWER = 1024 * 1024


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "the request is malformed (the body names the problem and its JSON path)",
            401: "no credential, or a wrong one", 403: "the credential may not do this", 404: "no such thing",
            413: "the body (or the inflated body, or the message count) is over the limit",
            415: "an unsupported Content-Encoding", 422: "a webhook topic the connector does not take", 503: "events could not be stored now; retry after Retry-After"}
    return {str(s): {"description": text[s], "content": _json(_ERROR)} for s in statuses}


def _lookup_errors() -> dict[str, Any]:
    """The profile routes answer their own errors as ``{"error": ...}``; refusals at the edge (a NUL character)
    in the edge's shape."""
    either = _json({"oneOf": [{"$ref": "#/components/schemas/LookupError"}, _ERROR]})
    return {"400": {"description": "a malformed identity, id or parameter", "content": either},
            "404": {"description": "no such profile", "content": either}}


def _tracking(kind: str | None) -> dict[str, Any]:
    body = ({"$ref": "#/components/schemas/TrackingMessage"} if kind
            else {"$ref": "#/components/schemas/TrackingBatch"})
    what = f"one {kind} message" if kind else "a batch of tracking messages"
    return {
        "summary": f"Tracking API: {what}",
        "tags": ["tracking"],
        "security": [{"writeKey": []}, {}],  # {}: the write key may be in the body (writeKey)
        "x-max-response-bytes": _BATCH_ANSWER,
        "requestBody": {"required": True, "content": {**_json(body), "text/plain": {"schema": body}}},
        "parameters": [{"name": "Content-Encoding", "in": "header", "required": False,
                        "schema": {"enum": ["gzip", "identity"]}}],
        "responses": {"200": {"description": "one result per message (accepted, duplicate, rejected)",
                              "content": _json({"$ref": "#/components/schemas/TrackingResult"})},
                      **_errors(400, 401, 413, 415, 503)},
    }


_OPTIONS = {"summary": "CORS preflight (edge.cors_origins)", "tags": ["tracking"], "security": [{}],
            "x-max-response-bytes": _SMALL,
            "responses": {"200": {"description": "preflight allowed"}, "204": {"description": "what the route accepts"},
                          "400": {"description": "preflight from an origin that is not allowed"}}}


def openapi_document() -> dict[str, Any]:
    """The document (a fresh copy)."""
    admin: list[dict[str, list[str]]] = [{"adminToken": []}]
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "liveness: 503 when a stage is stuck", "tags": ["operations"],
                             "security": [{}], "x-max-response-bytes": _SMALL,
                             "responses": {"200": {"description": "alive"}, "503": {"description": "a stage is stuck"}}}},
        "/readyz": {"get": {"summary": "readiness: bus, PostgreSQL and Redis answer", "tags": ["operations"],
                            "security": [{}], "x-max-response-bytes": _SMALL,
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["operations"], "security": [{}],
                             "responses": {"200": {"description": "text exposition format",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "this document", "tags": ["operations"], "security": [{}],
                                  "responses": {"200": {"description": "OpenAPI 3.1", "content": _json({"type": "object"})}}}},
        "/v1/events": {"post": {
            "summary": "canonical events (cdp.event/1) from a configured source system", "tags": ["ingestion"],
            "security": [{"sourceKey": []}], "x-max-response-bytes": _BATCH_ANSWER,
            "requestBody": {"required": True, "content": _json({"oneOf": [
                {"type": "object"}, {"type": "array", "items": {}},
                {"type": "object", "required": ["batch"], "properties": {"batch": {"type": "array"}}}]})},
            "responses": {"200": {"description": "all accepted", "content": _json({"$ref": "#/components/schemas/EventsResult"})},
                          "207": {"description": "some rejected (dead-lettered)", "content": _json({"$ref": "#/components/schemas/EventsResult"})},
                          **_errors(400, 401, 413, 415, 503),
                          "400": {"description": "all rejected (dead-lettered: the results say why), or a malformed "
                                  "body", "content": _json({"oneOf": [{"$ref": "#/components/schemas/EventsResult"},
                                                                      _ERROR]})}}}},
        "/v1/webhooks/{instance}": {"post": {
            "summary": "a signed webhook of a configured connector instance", "tags": ["ingestion"],
            "security": [{"webhookSignature": []}], "x-max-response-bytes": _SMALL * 4,
            "parameters": [{"name": "instance", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": _json({})},
            "responses": {"200": {"description": "ingested (bad records dead-lettered)",
                                  "content": _json({"type": "object"})}, **_errors(400, 401, 403, 404, 413, 422)}}},
        "/v1/callbacks/{channel}": {"post": {
            "summary": "a provider's delivery report, signed as the channel configures", "tags": ["delivery"],
            "security": [{"callbackSignature": []}], "x-max-response-bytes": _SMALL,
            "parameters": [{"name": "channel", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": _json({})},
            "responses": {str(s): {"description": d, "content": _json(
                              {"oneOf": [{"$ref": "#/components/schemas/Status"}, _ERROR]})}
                          for s, d in ((200, "applied"), (400, "a malformed callback (dead-lettered)"),
                                       (401, "a missing, wrong or stale signature"), (404, "no such channel"),
                                       (413, "the body is over the limit"))}}},
        "/v1/unsubscribe/{message_id}": {
            "get": {"summary": "the unsubscribe page (a GET never unsubscribes)", "tags": ["delivery"],
                    "security": [{}], "x-max-response-bytes": _SMALL,
                    "parameters": [{"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "an HTML form", "content": {"text/html": {"schema": {"type": "string"}}}},
                                  **_errors(400)}},
            "post": {"summary": "one-click unsubscribe (RFC 8058): one consent.changed per message, however often "
                     "clicked", "tags": ["delivery"], "security": [{}], "x-max-response-bytes": _SMALL,
                     "parameters": [{"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                     "responses": {"200": {"description": "unsubscribed"}, "404": {"description": "unknown message"},
                                   **_errors(400, 413)}}},
        "/v1/profiles": {"get": {
            "summary": "a profile by any identity", "tags": ["admin"], "security": admin,
            "parameters": [{"name": "kind", "in": "query", "required": True, "schema": {"type": "string"}},
                           {"name": "value", "in": "query", "required": True, "schema": {"type": "string"}},
                           {"name": "events", "in": "query", "required": False, "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "the profile view", "content": _json({"type": "object"})},
                          **_errors(401), **_lookup_errors()}}},
        "/v1/profiles/{profile_id}": {"get": {
            "summary": "a profile by id (a merged id leads to the survivor)", "tags": ["admin"], "security": admin,
            "parameters": [{"name": "profile_id", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "events", "in": "query", "required": False, "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "the profile view", "content": _json({"type": "object"})},
                          **_errors(401), **_lookup_errors()}}},
        "/v1/dlq": {"get": {
            "summary": "dead letters, newest first", "tags": ["admin"], "security": admin,
            "parameters": [{"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                           {"name": "failure_type", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "source", "in": "query", "required": False, "schema": {"type": "string"}},
                           {"name": "include_replayed", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["0", "1", "true", "false"]}}],
            "responses": {"200": {"description": "the dead letters", "content": _json({"type": "object"})},
                          **_errors(400, 401)}}},
        "/v1/dlq/replay": {"post": {
            "summary": "replay dead letters (optionally with fixed records)", "tags": ["admin"], "security": admin,
            "requestBody": {"required": False, "content": _json({
                "type": "object", "properties": {
                    "ids": {"type": "array", "items": {"type": "string"}}, "failure_type": {"type": "string"},
                    "source": {"type": "string"}, "fixes": {"type": "object"}, "dry_run": {"type": "boolean"}}})},
            "responses": {"200": {"description": "what was replayed", "content": _json({"type": "object"})},
                          **_errors(400, 401, 413)}}},
    }
    for path, kind in MESSAGE_PATHS.items():
        paths[path] = {"post": _tracking(kind), "options": copy.deepcopy(_OPTIONS)}
    for path in BATCH_PATHS:
        paths[path] = {"post": _tracking(None), "options": copy.deepcopy(_OPTIONS)}
    message = {k: v for k, v in copy.deepcopy(MESSAGE_SCHEMA).items() if k != "$schema"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "cdp-hub HTTP API", "version": "1",
                 "description": "Ingestion (tracking SDKs, source systems, webhooks), delivery callbacks, "
                                "admin and operations. See docs/http-api.md."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "writeKey": {"type": "http", "scheme": "basic",
                             "description": "a tracking source's write key as the user name, empty password; "
                                            "or writeKey in the body"},
                "sourceKey": {"type": "http", "scheme": "bearer", "description": "a key of [event_sources.<name>]"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "admin_token"},
                "webhookSignature": {"type": "apiKey", "in": "header", "name": "X-Cdp-Signature",
                                     "description": "HMAC-SHA256 over '<X-Cdp-Timestamp>.<body>' (the connector's "
                                                    "scheme may differ)"},
                "callbackSignature": {"type": "apiKey", "in": "header", "name": "X-Signature",
                                      "description": "HMAC-SHA256 over '<X-Timestamp>.<body>' (callback_signing)"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["success", "code", "message"], "properties": {
                    "success": {"const": False}, "code": {"type": "string"}, "message": {"type": "string"},
                    "error": {"type": "string"}, "path": {"type": ["string", "null"]}}},
                "TrackingMessage": message,
                "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                "LookupError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "TrackingBatch": {"type": "object", "required": ["batch"], "properties": {
                    "batch": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/TrackingMessage"}},
                    "sentAt": {"type": "string"}, "context": {"type": "object"}, "writeKey": {"type": "string"}}},
                "TrackingResult": {"type": "object", "required": ["success", "accepted", "results"], "properties": {
                    "success": {"const": True}, "records": {"type": "integer"}, "accepted": {"type": "integer"},
                    "duplicates": {"type": "integer"}, "dead_letters": {"type": "integer"},
                    "errors": {"type": "array"},
                    "results": {"type": "array", "items": {"type": "object", "required": ["index", "status"],
                                "properties": {"index": {"type": "integer"},
                                               "status": {"enum": ["accepted", "duplicate", "rejected"]}}}}}},
                "EventsResult": {"type": "object", "required": ["accepted", "rejected", "results"], "properties": {
                    "accepted": {"type": "integer"}, "rejected": {"type": "integer"}, "results": {"type": "array"}}},
            },
        },
    }
