"""Receipts become canonical ``message.*`` events on ``cdp.events``, so failures feed back into the profile.

The event id is deterministic (``source_record_id = "{message_id}:{status}"``): a receipt emitted twice
(a replayed batch, a provider calling back twice) is one event downstream.

A message that consent or the suppression list stops at send time is not a receipt but a decision, the same
``message.decided`` event the triggers stage emits for its contact policy (:func:`decision_event`, source
``cdp-hub.delivery``, ``source_record_id = "{message_id}:{decision}"``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.events import event_message
from cdp_hub.channel.base import Receipt
from cdp_hub.schema.events import Event
from cdp_hub.schema.messages import MessageIntent

__all__ = ["DECIDED", "RECEIPT_SOURCE", "decision_event", "receipt_event", "receipt_message"]

RECEIPT_SOURCE = "cdp-hub.delivery"
DECIDED = "message.decided"


def receipt_event(
    receipt: Receipt,
    *,
    channel: str,
    identity: tuple[str, str],
    profile_id: str | None,
    scenario: str | None = None,
    template: str | None = None,
    status_detail: str | None = None,
) -> Event:
    """The ``message.<status>`` event of ``receipt``; ``identity`` is ``(kind, value)`` of the address."""
    properties: dict[str, Any] = {
        "message_id": receipt.message_id,
        "channel": channel,
        "scenario": scenario,
        "template": template,
        "provider": receipt.provider,
        "provider_message_id": receipt.provider_message_id,
        "reason": receipt.reason,
        "url": receipt.url,
    }
    if receipt.status == "failed":
        properties["permanent"] = receipt.permanent
    if status_detail:
        properties["status"] = status_detail
    pid: uuid.UUID | None = None
    if profile_id:
        try:
            pid = uuid.UUID(profile_id)
        except ValueError:
            pid = None
    return Event.model_validate({
        "type": f"message.{receipt.status}",
        "source": RECEIPT_SOURCE,
        "source_record_id": f"{receipt.message_id}:{receipt.status}",
        "occurred_at": receipt.occurred_at,
        "identities": [{"kind": identity[0], "value": identity[1]}],
        "properties": {k: v for k, v in properties.items() if v is not None},
        "profile_id": pid,
    })


def receipt_message(topic: str, event: Event) -> OutgoingMessage:
    return event_message(topic, event)


def decision_event(intent: MessageIntent, *, decision: str, reason: str, identity: tuple[str, str],
                   at: datetime) -> Event:
    """The ``message.decided`` event of a message refused at send time (``decision``: ``no_consent`` or
    ``suppressed``), with the properties of the triggers stage's decisions and ``stage: delivery``."""
    trigger = intent.trigger_event or {}
    properties: dict[str, Any] = {
        "scenario": intent.scenario, "decision": decision, "reason": reason[:500], "channel": intent.channel,
        "category": intent.category, "trigger_event_id": intent.trigger_event_id,
        "trigger_type": trigger.get("type") if isinstance(trigger.get("type"), str) else None,
        "message_id": intent.message_id, "stage": "delivery",
    }
    return Event.model_validate({
        "type": DECIDED,
        "source": RECEIPT_SOURCE,
        "source_record_id": f"{intent.message_id}:{decision}",
        "occurred_at": at,
        "identities": [{"kind": identity[0], "value": identity[1]}],
        "properties": {k: v for k, v in properties.items() if v is not None},
        "profile_id": _profile_uuid(intent.profile_id),
    })


def _profile_uuid(profile_id: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(profile_id) if profile_id else None
    except ValueError:
        return None
