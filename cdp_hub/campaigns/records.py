"""The records a campaign run publishes, built fast: message intents, ``message.decided`` events, message ids.

A run makes a record for every profile of its audience (millions), so the sender builds them as plain dicts
serialized by orjson, not as pydantic models, and derives the message ids with one SHA-1 each:

    ChunkRecords(campaign, run, now)     once per chunk: what every record of the chunk shares, serialized
                                         once through the models (the time stamps, the template of an event)
      .message_ids(profile ids)          ``message_id_for("campaign:<id>", run, profile)``, byte for byte
      .intent(profile, ...)              the bytes ``MessageIntent(...).model_dump_json()`` gives
      .decision(profile, ...)            the bytes ``event_message(Event(...))`` gives, same key and headers

``intent_model`` and ``decision_model`` build the same records through the models; they are the reference
that ``tests/test_campaigns_records.py`` holds the fast path to, over a broad set of campaigns, profiles and
identities (unicode, control characters, variants, deferrals). The delivery stage and every consumer of
events validate what they read as before: the fast path changes how the records are made, not what they are.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.events import event_dict_message, event_message
from cdp_hub.campaigns.model import Campaign
from cdp_hub.schema.events import (
    Context,
    Event,
    Identity,
    Traits,
    deterministic_event_id,
    deterministic_event_id_text,
)
from cdp_hub.schema.messages import MESSAGE_NAMESPACE, MessageIntent
from cdp_hub.triggers.experiments import Allocation

__all__ = ["DECIDED", "SOURCE", "ChunkRecords", "decision_model", "intent_model"]

SOURCE = "cdp-hub.campaigns"
DECIDED = "message.decided"

Outcome = tuple[uuid.UUID, str, str, str, "datetime | None"]
"""A skip or deferral: profile id, decision, reason, message id, until (a deferral's due time)."""


def _uuid5_text(prefix: Any, tail: str) -> str:
    """``str(uuid.uuid5(namespace, name))`` where ``prefix`` is a SHA-1 already fed the namespace and the
    start of the name: the version and variant bits set on the digest, formatted without a UUID object."""
    digest = prefix.copy()
    digest.update(tail.encode())
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _channel_and_template(campaign: Campaign, allocation: Allocation | None) -> tuple[str, str, dict[str, Any]]:
    """The channel, template and variables of a profile's message: a variant's, else the campaign's."""
    channel, template, variables = campaign.channel, campaign.template, campaign.vars
    variant = allocation.variant if allocation is not None else None
    if variant is not None and allocation is not None and allocation.experiment is not None:
        channel, template = variant.channel or channel, variant.template or template
        variables = {**variables, **variant.vars, "experiment": allocation.experiment.id, "variant": variant.name}
    return channel, template, variables


def _locale(profile: Mapping[str, Any]) -> str | None:
    locale = profile.get("locale")
    return locale if isinstance(locale, str) else None


def _decision_properties(campaign: Campaign, run_id: uuid.UUID, decision: str, reason: str, mid: str,
                         until: datetime | None, allocation: Allocation | None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "scenario": campaign.scenario, "decision": decision, "reason": reason[:500],
        "channel": campaign.channel, "category": campaign.purpose, "message_id": mid,
        "trigger_event_id": str(run_id), "trigger_type": "campaign.run",
        "campaign": campaign.id, "campaign_run": str(run_id)}
    if until is not None:
        properties["until"] = until.isoformat()
    if allocation is not None and allocation.experiment is not None and allocation.variant_name:
        properties["experiment"] = allocation.experiment.id
        properties["variant"] = allocation.variant_name
    return properties


def intent_model(campaign: Campaign, run_id: uuid.UUID, pid: uuid.UUID, mid: str, profile: Mapping[str, Any],
                 now: datetime, allocation: Allocation | None = None, *, topic: str) -> OutgoingMessage:
    """The intent through :class:`MessageIntent` (the reference of :meth:`ChunkRecords.intent`)."""
    channel, template, variables = _channel_and_template(campaign, allocation)
    intent = MessageIntent(
        message_id=mid, profile_id=str(pid), scenario=campaign.scenario, channel=channel,
        fallbacks=[f for f in campaign.fallbacks if f != channel], template=template, locale=_locale(profile),
        trigger_event_id=str(run_id), trigger_event=None,
        vars={**variables, "campaign": campaign.id, "campaign_run": str(run_id)}, category=campaign.purpose,
        created_at=now, expires_at=None)
    return OutgoingMessage(topic, intent.model_dump_json().encode(), str(pid).encode(),
                           (("cdp.scenario", campaign.scenario.encode()),))


def decision_model(campaign: Campaign, run_id: uuid.UUID, outcome: Outcome, identity: Mapping[str, str],
                   now: datetime, allocation: Allocation | None = None, *, topic: str) -> OutgoingMessage:
    """The ``message.decided`` event through :class:`Event` (the reference of :meth:`ChunkRecords.decision`)."""
    pid, decision, reason, mid, until = outcome
    record_id = f"{campaign.scenario}:{run_id}:{pid}:{decision}"
    event = Event.model_construct(
        event_id=deterministic_event_id(SOURCE, record_id, DECIDED), type=DECIDED, source=SOURCE,
        source_record_id=record_id, occurred_at=now, received_at=now,
        identities=[Identity.model_construct(kind=identity["kind"], value=identity["value"])],
        traits=Traits(), properties=_decision_properties(campaign, run_id, decision, reason, mid, until, allocation),
        context=Context(), profile_id=pid)
    return event_message(topic, event)


class ChunkRecords:
    """Builds the records of one chunk of a run (one ``now``): what they share is prepared once here."""

    def __init__(self, campaign: Campaign, run_id: uuid.UUID, now: datetime, *, messages_topic: str,
                 events_topic: str) -> None:
        self.campaign = campaign
        self.run_id = run_id
        self.now = now
        self.messages_topic = messages_topic
        self.events_topic = events_topic
        self._run = str(run_id)
        self._ids = hashlib.sha1(MESSAGE_NAMESPACE.bytes + f"{campaign.scenario}\x1f{run_id}\x1f".encode())
        self._headers = (("cdp.scenario", campaign.scenario.encode()),)
        # The time stamps as the models write them (pydantic's format, not orjson's), once per chunk.
        template = orjson.loads(Event.model_construct(
            event_id=uuid.UUID(int=0), type=DECIDED, source=SOURCE, source_record_id="", occurred_at=now,
            received_at=now, identities=[], traits=Traits(), properties={}, context=Context(),
            profile_id=uuid.UUID(int=0)).to_json())
        self._event: dict[str, Any] = template
        self._created_at: str = template["occurred_at"]
        self._plain: tuple[str, list[str], str, dict[str, Any]] | None = None

    def message_ids(self, profile_ids: Sequence[uuid.UUID]) -> list[str]:
        """``message_id_for(campaign.scenario, str(run_id), str(pid))`` of each profile."""
        prefix = self._ids
        return [_uuid5_text(prefix, f"{pid}\x1f") for pid in profile_ids]

    def intent(self, pid: uuid.UUID, mid: str, profile: Mapping[str, Any],
               allocation: Allocation | None = None) -> OutgoingMessage:
        """The message intent of a profile (see :func:`intent_model`)."""
        campaign = self.campaign
        if allocation is None or allocation.variant is None or allocation.experiment is None:
            if self._plain is None:  # what every message without a variant shares
                channel, template, variables = _channel_and_template(campaign, None)
                self._plain = (channel, [f for f in campaign.fallbacks if f != channel], template,
                               {**variables, "campaign": campaign.id, "campaign_run": self._run})
            channel, fallbacks, template, variables = self._plain
        else:
            channel, template, variables = _channel_and_template(campaign, allocation)
            fallbacks = [f for f in campaign.fallbacks if f != channel]
            variables = {**variables, "campaign": campaign.id, "campaign_run": self._run}
        profile_id = str(pid)
        intent = {
            "schema_version": "cdp.message/1", "message_id": mid, "profile_id": profile_id,
            "scenario": campaign.scenario, "channel": channel, "fallbacks": fallbacks,
            "template": template, "locale": _locale(profile), "trigger_event_id": self._run,
            "trigger_event": None, "vars": variables, "category": campaign.purpose,
            "created_at": self._created_at, "expires_at": None}
        return OutgoingMessage(self.messages_topic, orjson.dumps(intent), profile_id.encode(), self._headers)

    def decision(self, outcome: Outcome, identity: Mapping[str, str],
                 allocation: Allocation | None = None) -> OutgoingMessage:
        """The ``message.decided`` event of a skip or deferral (see :func:`decision_model`)."""
        pid, decision, reason, mid, until = outcome
        record_id = f"{self.campaign.scenario}:{self._run}:{pid}:{decision}"
        event = dict(self._event)  # the template's keys in the model's order; the values of this one below
        event["event_id"] = deterministic_event_id_text(SOURCE, record_id, DECIDED)
        event["source_record_id"] = record_id
        event["identities"] = [{"kind": identity["kind"], "value": identity["value"]}]
        event["properties"] = _decision_properties(self.campaign, self.run_id, decision, reason, mid, until,
                                                   allocation)
        event["profile_id"] = str(pid)
        return event_dict_message(self.events_topic, event)
