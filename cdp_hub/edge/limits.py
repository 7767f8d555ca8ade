"""Limits of the HTTP edge: body size (as sent and after gzip), JSON depth, and error bodies that never echo
more than a short excerpt of the input.

    request ─▶ RequestLimits (every route: Content-Length and the bytes actually sent ≤ edge.max_body_bytes: 413;
               a NUL character in the path, the query or a JSON body: 400, since PostgreSQL cannot store one)
            ─▶ read_json(request): Content-Encoding gzip inflated chunk by chunk, never past the same cap (a gzip
               bomb is a 413 after at most max_body_bytes of output) ─▶ orjson ─▶ nesting ≤ edge.max_depth (400)

Error bodies carry ``code`` and ``message``, the fields the tracking SDKs read (a 4xx answer is final for
them, a 5xx or 429 is retried), plus ``success: false`` and ``error`` for people with curl.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["EXCERPT", "EdgeError", "RequestLimits", "error_response", "excerpt", "json_response", "read_json",
           "too_deep"]

EXCERPT = 120
"""Longest piece of client input an error message quotes."""


def excerpt(value: Any, limit: int = EXCERPT) -> str:
    """``value`` as short text for an error message: never the whole of a large input."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value, default=str).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "…"


class EdgeError(Exception):
    """A request refused at the edge: the HTTP status, a stable ``code`` and a message naming the problem."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 **detail: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message[:500]
        self.headers = headers or {}
        self.detail = detail


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data, default=str), status_code=status, media_type="application/json",
                    headers=headers)


def error_response(exc: EdgeError) -> Response:
    body = {"success": False, "code": exc.code, "message": exc.message, "error": exc.message, **exc.detail}
    return json_response(body, exc.status, exc.headers)


def too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (the top level is depth 1); iterative, so a
    hostile document cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def _inflate(raw: bytes, cap: int) -> bytes:
    """gzip-inflate ``raw``, refusing as soon as the output would pass ``cap`` bytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    data = raw
    try:
        while data:
            out += inflater.decompress(data, cap + 1 - len(out))
            if len(out) > cap:
                raise EdgeError(413, "payload_too_large", f"body larger than {cap} bytes once inflated")
            data = inflater.unconsumed_tail
        out += inflater.flush(cap + 1 - len(out))
    except zlib.error as exc:
        raise EdgeError(400, "bad_encoding", f"body is not valid gzip: {exc}") from None
    if len(out) > cap:
        raise EdgeError(413, "payload_too_large", f"body larger than {cap} bytes once inflated")
    if not inflater.eof:
        raise EdgeError(400, "bad_encoding", "body is not valid gzip: truncated")
    return bytes(out)


async def read_json(request: Request, *, max_bytes: int, max_depth: int) -> Any:
    """The request body as JSON: inflated when gzip-encoded, within the size and depth caps."""
    raw = await request.body()
    if len(raw) > max_bytes:  # RequestLimits has refused this already when it is installed
        raise EdgeError(413, "payload_too_large", f"body larger than {max_bytes} bytes")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "gzip":
        raw = _inflate(raw, max_bytes)
    elif encoding not in ("", "identity"):
        raise EdgeError(415, "unsupported_encoding", f"Content-Encoding {excerpt(encoding, 40)!r} is not "
                        "supported; send gzip or no encoding")
    if _NUL_ESCAPE in raw:
        raise EdgeError(400, "nul_character", NUL_MESSAGE)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EdgeError(400, "invalid_json", f"body is not JSON: {excerpt(str(exc))}") from None
    if too_deep(data, max_depth):
        raise EdgeError(400, "too_deep", f"JSON nested deeper than {max_depth} levels")
    return data


_NUL_ESCAPE = b"\\u0000"
NUL_MESSAGE = "a NUL character (\\u0000) is not accepted in any value"


class RequestLimits:
    """Refuses, on every route and before the route runs, a body larger than ``max_bytes`` (413) and a NUL
    character in the path, the query string or a JSON body (400: PostgreSQL cannot store it, and a value that
    fails every write would block the stage that tries).

    A declared Content-Length over the cap is refused without reading; otherwise the body is read up to the cap
    and handed on, so the route sees it whole and memory stays bounded by the cap however much is sent.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await error_response(EdgeError(400, "nul_character", NUL_MESSAGE))(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _NUL_ESCAPE in body:
            await error_response(EdgeError(400, "nul_character", NUL_MESSAGE))(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = EdgeError(413, "payload_too_large", f"body larger than {self.max_bytes} bytes")
        await error_response(error)(scope, receive, send)
