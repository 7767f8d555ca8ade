"""Provider callbacks (delivery reports, opens, clicks, bounces) become receipts, send-log updates and
``message.*`` events.

    POST /v1/callbacks/<instance> ─▶ channel.parse_callback(headers, body) ─▶ receipts
        ─▶ send log rows (by our message id or the provider's) ─▶ status moves forward (sent → delivered →
           opened → clicked; a late bounce → failed), a permanent failure suppresses the address
        ─▶ message.delivered / opened / clicked / failed events on cdp.events (deterministic ids from the
           message and status; an id seen within the edge's dedupe window is not published again, so a
           provider that calls twice, or replays a callback, produces one event)

HTTP answers: 200 done (receipts for unknown messages are counted and ignored, so the provider does not
retry them forever), 400 a malformed callback (also a DLQ entry), 401 a bad signature, 404 no such channel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cdp_hub.channel.base import Receipt
from cdp_hub.dlq import dead_letter_from_error
from cdp_hub.errors import ConfigurationError, RecordError
from cdp_hub.schema.events import Event

from .receipts import RECEIPT_SOURCE, receipt_event, receipt_message
from .sendlog import LogRow, SendLog

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["CallbackResult", "apply_receipts", "handle_callback", "unsubscribe"]

log = logging.getLogger(__name__)
STAGE = "delivery.callback"
DEDUPE_SCOPE = "delivery"


class CallbackResult:
    """What one callback did (for logs and tests)."""

    def __init__(self) -> None:
        self.applied = 0
        self.unknown = 0


async def apply_receipts(hub: Hub, instance: str, provider: str, receipts: list[Receipt]) -> CallbackResult:
    """Match receipts to send-log rows, move the rows forward, suppress bad addresses, publish events."""
    result = CallbackResult()
    if not receipts:
        return result
    sendlog = SendLog(hub.store)
    rows = await sendlog.find_for_callback(
        [r.message_id for r in receipts if r.message_id], provider,
        [r.provider_message_id for r in receipts if r.provider_message_id],
    )
    by_id = {row.message_id: row for row in rows}
    by_provider_id = {row.provider_message_id: row for row in rows if row.provider_message_id}
    events: list[Event] = []
    suppress: list[tuple[str, str, str, str, str]] = []
    dead_tokens: list[tuple[str, str]] = []
    for receipt in receipts:
        row: LogRow | None = by_id.get(receipt.message_id) if receipt.message_id else None
        if row is None and receipt.provider_message_id:
            row = by_provider_id.get(receipt.provider_message_id)
        if row is None or not row.address or not row.address_kind:
            result.unknown += 1
            log.info("callback on %s for an unknown message (%s / %s)", instance, receipt.message_id,
                     receipt.provider_message_id)
            continue
        receipt = receipt.model_copy(update={"message_id": row.message_id,
                                             "provider": receipt.provider or row.provider,
                                             "provider_message_id": receipt.provider_message_id
                                             or row.provider_message_id})
        await sendlog.apply_receipt(row.message_id, receipt.status, receipt.reason)
        if receipt.status == "failed" and receipt.permanent:
            suppress.append((row.address_kind, row.address, row.channel, receipt.reason or "permanent failure",
                             row.message_id))
            if row.address_kind == "push_token":
                dead_tokens.append((row.address_kind, row.address))
        event = receipt_event(receipt, channel=row.channel, identity=(row.address_kind, row.address),
                              profile_id=row.profile_id, scenario=row.scenario, template=row.template)
        events.append(event)
        hub.metrics.messages.labels(row.channel, receipt.status).inc()
        result.applied += 1
    await sendlog.suppress(suppress)
    await sendlog.remove_identities(dead_tokens)
    await publish_once(hub, events)
    return result


async def publish_once(hub: Hub, events: list[Event]) -> None:
    """Publish events the hub derived from a callback or a click, each at most once per dedupe window.

    Their ids are deterministic from the cause, but their time is when the call came: without this a repeated
    call would be a second row of the same event (and a second consent change) downstream."""
    ttl = hub.settings.edge.dedupe_window_seconds
    claimed: list[str] = []
    if ttl and events:
        ids = [str(e.event_id) for e in events]
        firsts = await hub.sightings.first_sightings(DEDUPE_SCOPE, ids, ttl)
        claimed = [i for i, first in zip(ids, firsts, strict=True) if first]
        events = [e for e, first in zip(events, firsts, strict=True) if first]
    try:
        if events:
            await hub.bus.publish_many([receipt_message(hub.topics.events, e) for e in events])
    except Exception:
        await hub.sightings.forget_sightings(DEDUPE_SCOPE, claimed)  # the provider's retry must get through
        raise


async def handle_callback(hub: Hub, channel_instance: str, headers: Mapping[str, str], body: bytes) -> int:
    """Process one provider callback for channel instance ``channel_instance``; return the HTTP status to
    answer with (200, 400, 401 or 404; see the module docstring). Durable when it returns 200."""
    try:
        channel = await hub.channel(channel_instance)
    except ConfigurationError as exc:
        log.warning("callback for unknown channel %r: %s", channel_instance, exc)
        return 404
    try:
        receipts = await channel.parse_callback(headers, body)
    except PermissionError as exc:
        log.warning("callback on %s refused: %s", channel_instance, exc)
        return 401
    except RecordError as exc:
        dead = dead_letter_from_error(exc, stage=STAGE, payload=body, source=channel_instance)
        await hub.bus.publish_many([dead.to_message(hub.topics.dlq)])
        hub.metrics.dlq.labels(STAGE, dead.failure_type).inc()
        return 400
    result = await apply_receipts(hub, channel_instance, channel.name, receipts)
    log.debug("callback on %s: %d receipts applied, %d unknown", channel_instance, result.applied, result.unknown)
    return 200


async def unsubscribe(hub: Hub, message_id: str) -> int:
    """One-click unsubscribe (RFC 8058) from a message: a ``consent.changed`` event (``opted_out`` for the
    message's channel kind, marketing) for the address it went to. Return 200, or 404 for an unknown message.

    The resolver turns the event into ``golden.consent``; the next marketing message skips that channel. The
    event id is derived from the message id and published once per dedupe window, so clicking three times
    is one consent change.
    """
    rows = await SendLog(hub.store).rows([message_id])
    row = rows.get(message_id)
    if row is None or not row.address or not row.address_kind:
        return 404
    kind: str
    try:
        kind = (await hub.channel(row.channel)).kind
    except ConfigurationError:
        kind = "email" if row.address_kind == "email" else "all"
    if kind not in ("email", "sms", "push"):
        kind = "all"  # a webhook or custom channel: the customer opted out of that sender altogether
    event = Event.model_validate({
        "type": "consent.changed", "source": RECEIPT_SOURCE, "source_record_id": f"{message_id}:unsubscribe",
        "occurred_at": datetime.now(UTC), "identities": [{"kind": row.address_kind, "value": row.address}],
        "properties": {"channel": kind, "status": "opted_out", "purpose": "marketing"},
        "context": {"channel": row.channel, "campaign": row.scenario},
        "profile_id": row.profile_id,
    })
    await publish_once(hub, [event])
    return 200
