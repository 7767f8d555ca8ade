"""HTTP routes of delivery, mounted by the daemon: ``POST /v1/callbacks/{channel}`` for provider callbacks.

The path names the *channel instance* (``[channels.sms]`` → ``/v1/callbacks/sms``); give that URL to the
provider as its delivery-report / event webhook. Authentication is the provider's signature, checked by the
channel (``parse_callback``), so this route needs no admin token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .callbacks import handle_callback

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

    return [Route("/v1/callbacks/{channel}", callback, methods=["POST"], name="delivery_callback")]
