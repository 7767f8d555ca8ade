"""HTTP routes of delivery, mounted by the daemon.

    POST /v1/callbacks/{channel}       provider callbacks (delivery reports, opens, clicks, bounces)
    GET  /v1/unsubscribe/{message_id}  a page with one button (a GET never unsubscribes: mail scanners follow links)
    POST /v1/unsubscribe/{message_id}  one-click unsubscribe (RFC 8058 List-Unsubscribe-Post) -> consent.changed

The callback path names the *channel instance* (``[channels.sms]`` → ``/v1/callbacks/sms``); give that URL to
the provider as its delivery-report / event webhook. Authentication is the provider's signature, checked by
the channel (``parse_callback``), so these routes need no admin token. Point ``unsubscribe_url`` at
``https://<hub>/v1/unsubscribe/{message_id}`` to have List-Unsubscribe handled by the hub.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .callbacks import handle_callback, unsubscribe

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["routes"]

_MESSAGES = {200: "ok", 400: "malformed callback", 401: "bad signature", 404: "no such channel"}
MAX_BODY = 5 * 1024 * 1024


def routes(hub: Hub) -> list[Route]:
    """The delivery routes bound to ``hub``."""

    async def callback(request: Request) -> JSONResponse:
        channel = request.path_params["channel"]
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"status": "callback too large"}, status_code=413)
        status = await handle_callback(hub, channel, dict(request.headers), body)
        return JSONResponse({"status": _MESSAGES.get(status, "error")}, status_code=status)

    async def unsubscribe_page(request: Request) -> Response:
        message_id = html.escape(request.path_params["message_id"])
        return HTMLResponse(
            "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>"
            f'<form method=post action="/v1/unsubscribe/{message_id}">'
            '<input type=hidden name=List-Unsubscribe value=One-Click>'
            "<button type=submit>Unsubscribe / Отписаться</button></form>"
        )

    async def unsubscribe_post(request: Request) -> Response:
        status = await unsubscribe(hub, request.path_params["message_id"])
        if "text/html" in request.headers.get("accept", ""):
            text = "You are unsubscribed. / Вы отписаны." if status == 200 else "Unknown link. / Ссылка не найдена."
            return HTMLResponse(f"<!doctype html><meta charset=utf-8><p>{text}</p>", status_code=status)
        return JSONResponse({"status": "unsubscribed" if status == 200 else "unknown message"}, status_code=status)

    return [
        Route("/v1/callbacks/{channel}", callback, methods=["POST"], name="delivery_callback"),
        Route("/v1/unsubscribe/{message_id}", unsubscribe_page, methods=["GET"], name="unsubscribe_page"),
        Route("/v1/unsubscribe/{message_id}", unsubscribe_post, methods=["POST"], name="unsubscribe"),
    ]
