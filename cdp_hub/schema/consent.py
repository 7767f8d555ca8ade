"""Consent: per channel and purpose, and the one rule that says whether a message may go.

    consent.changed events ─▶ resolver ─▶ consents (store/consents.py, one row per statement, with evidence)
    triggers (at decision time) and delivery (at send time) ─▶ consent_refusal(states, kind, category, policy)

A state is the latest statement for ``(channel, purpose)``. Marketing needs a ``marketing`` opt-in on the
channel under the ``opt_in`` policy (the default: Russian advertising law, 38-FZ art. 18, asks for the
recipient's prior consent to advertising by phone, SMS and e-mail); under ``opt_out`` only an opt-out stops
it. Transactional and service messages need no marketing consent; they stop only on an explicit opt-out of
their own purpose (a customer's "no transactional" block). Hard bounces are the send log's suppressions.

Double opt-in: a ``consent.requested`` event ─▶ the built-in ``consent_confirmation`` scenario (service) sends
a message with a signed, expiring link (:class:`ConsentLinks`) ─▶ the customer opens it and confirms
(``POST /v1/consent/confirm/{token}``, cdp_hub/delivery/consent.py) ─▶ ``consent.changed`` opted_in with
evidence ``double_opt_in`` ─▶ the consents table.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

__all__ = [
    "CONSENT_CHANNELS",
    "CONSENT_PURPOSES",
    "ConsentConfirmation",
    "ConsentLinkError",
    "ConsentLinks",
    "ConsentPolicy",
    "ConsentStates",
    "consent_channel",
    "consent_refusal",
]

CONSENT_CHANNELS = ("email", "sms", "push", "messenger")
"""The channels consent is given for; a channel kind outside them (a webhook) is judged as ``messenger``."""
CONSENT_PURPOSES = ("marketing", "transactional", "service")

ConsentPolicy = Literal["opt_in", "opt_out"]
ConsentStates = Mapping[tuple[str, str], str]
"""``{(channel, purpose): "opted_in" | "opted_out"}``: the current state of one profile."""


def consent_channel(kind: str) -> str:
    """The consent channel of a channel kind (``email``, ``sms``, ``push``; anything else is ``messenger``)."""
    return kind if kind in CONSENT_CHANNELS else "messenger"


def consent_refusal(states: ConsentStates, kind: str, category: str, policy: ConsentPolicy) -> str | None:
    """Why a ``category`` message may not go to a channel of ``kind``; ``None`` when it may."""
    channel = consent_channel(kind)
    status = states.get((channel, category))
    if status == "opted_out":
        return f"{channel} consent opted out" if category == "marketing" else f"{channel} {category} consent opted out"
    if category == "marketing" and status != "opted_in" and policy == "opt_in":
        return f"no {channel} marketing consent recorded"
    return None


class ConsentLinkError(ValueError):
    """A confirmation link that is forged, damaged or expired."""


@dataclass(frozen=True)
class ConsentConfirmation:
    """What a double opt-in confirmation link stands for: consent to ``purpose`` on ``channel`` asked by the
    ``consent.requested`` event ``request_id`` for the profile, valid until ``expires``."""

    profile_id: str
    channel: str
    purpose: str
    request_id: str
    expires: datetime


@dataclass(frozen=True)
class ConsentLinks:
    """Signs and checks double opt-in links: ``{base_url}/v1/consent/confirm/{token}``, the token an
    HMAC-SHA256-signed, expiring statement (no address in it: a link travels through mail scanners and logs)."""

    secret: bytes
    base_url: str
    ttl: timedelta

    def token(self, profile_id: str, channel: str, purpose: str, request_id: str, requested_at: datetime) -> str:
        expires = int((requested_at + self.ttl).timestamp())
        body = _b64(json.dumps([profile_id, channel, purpose, request_id, expires], separators=(",", ":")).encode())
        return f"{body}.{_b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())}"

    def url(self, profile_id: str, channel: str, purpose: str, request_id: str, requested_at: datetime) -> str:
        token = self.token(profile_id, channel, purpose, request_id, requested_at)
        return f"{self.base_url.rstrip('/')}/v1/consent/confirm/{token}"

    def verify(self, token: str, now: datetime) -> ConsentConfirmation:
        """The confirmation a token stands for; raises :class:`ConsentLinkError` when it is not valid now."""
        body, _, signature = token.partition(".")
        expected = _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())
        if not body or not hmac.compare_digest(signature, expected):
            raise ConsentLinkError("the link is not valid")
        try:
            profile_id, channel, purpose, request_id, expires = json.loads(base64.urlsafe_b64decode(body + "=="))
        except (ValueError, TypeError) as exc:
            raise ConsentLinkError("the link is damaged") from exc
        at = datetime.fromtimestamp(int(expires), UTC)
        if now >= at:
            raise ConsentLinkError("the link has expired")
        if channel not in CONSENT_CHANNELS or purpose not in CONSENT_PURPOSES:
            raise ConsentLinkError("the link is not valid")
        return ConsentConfirmation(str(profile_id), channel, purpose, str(request_id), at)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
