"""Double opt-in confirmation links, mounted by the daemon.

    GET  /v1/consent/confirm/{token}   a page with one button (a GET changes nothing: mail scanners follow links)
    POST /v1/consent/confirm/{token}   the customer confirms -> consent.changed opted_in, evidence double_opt_in

The token is signed and expiring (:class:`~cdp_hub.schema.consent.ConsentLinks`, ``consent_link_secret``,
``consent_link_ttl``); it names the profile, channel, purpose and the ``consent.requested`` event, never the
address. The consent event is addressed to the profile's most recent address of that channel's kind and its id
is derived from the request, so confirming twice is one statement. Point ``public_url`` at the hub's public
address; the built-in ``consent_confirmation`` scenario puts the link in its message.
"""

from __future__ import annotations

import html
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from cdp_hub.pipeline.build import consent_links
from cdp_hub.schema.consent import ConsentConfirmation, ConsentLinkError, ConsentLinks
from cdp_hub.schema.events import Event
from cdp_hub.store import ProfileRepository

from .receipts import receipt_message

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["CONSENT_SOURCE", "confirm", "routes"]

log = logging.getLogger(__name__)

CONSENT_SOURCE = "cdp-hub.consent"
_ADDRESS_KIND = {"email": "email", "sms": "phone", "push": "push_token"}


def _page(text: str, status: int = 200, form: str | None = None) -> HTMLResponse:
    button = (f'<form method=post action="{html.escape(form)}"><button type=submit>'
              "Подтвердить / Confirm</button></form>") if form else ""
    return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>Subscription</title><p>{html.escape(text)}</p>"
                        f"{button}", status_code=status)


async def confirm(hub: Hub, links: ConsentLinks, token: str, *, ip: str | None = None) -> ConsentConfirmation:
    """Record the consent a valid token stands for (a ``consent.changed`` event on ``cdp.events``); raises
    :class:`ConsentLinkError` for a bad or expired token, or when the profile has no address to attach it to."""
    confirmation = links.verify(token, datetime.now(UTC))
    try:
        pid = uuid.UUID(confirmation.profile_id)
    except ValueError:
        raise ConsentLinkError("the link is not valid") from None
    kind = _ADDRESS_KIND.get(confirmation.channel)
    identities = await ProfileRepository(hub.store).identities_by_recency([pid])
    address = next(((k, v) for k, v, _, _ in identities if k == kind), None) or next(
        ((k, v) for k, v, _, _ in identities), None)
    if address is None:
        raise ConsentLinkError("the link is not valid")
    evidence = {"method": "double_opt_in", "reference": confirmation.request_id}
    if ip:
        evidence["ip"] = ip
    event = Event.model_validate({
        "type": "consent.changed", "source": CONSENT_SOURCE,
        "source_record_id": f"double-opt-in:{confirmation.request_id}:{confirmation.channel}:{confirmation.purpose}",
        "occurred_at": datetime.now(UTC), "identities": [{"kind": address[0], "value": address[1]}],
        "properties": {"channel": confirmation.channel, "status": "opted_in", "purpose": confirmation.purpose,
                       "evidence": evidence},
        "context": {"channel": "double_opt_in"}, "profile_id": pid,
    })
    await hub.bus.publish_many([receipt_message(hub.topics.events, event)])
    return confirmation


def routes(hub: Hub) -> list[Route]:
    """The confirmation routes bound to ``hub`` (none when double opt-in links are not configured)."""
    links = consent_links(hub.settings)
    if links is None:
        return []

    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            links.verify(token, datetime.now(UTC))
        except ConsentLinkError as exc:
            return _page(f"{exc}. / Ссылка недействительна.", 400)
        return _page("Confirm your subscription. / Подтвердите подписку.", form=f"/v1/consent/confirm/{token}")

    async def post(request: Request) -> Response:
        try:
            await confirm(hub, links, request.path_params["token"],
                          ip=request.client.host if request.client else None)
        except ConsentLinkError as exc:
            return _page(f"{exc}. / Ссылка недействительна.", 400)
        return _page("Thank you: your subscription is confirmed. / Спасибо, подписка подтверждена.")

    return [
        Route("/v1/consent/confirm/{token}", page, methods=["GET"], name="consent_confirm_page"),
        Route("/v1/consent/confirm/{token}", post, methods=["POST"], name="consent_confirm"),
    ]
