"""Consent: per channel and purpose, and the one rule that says whether a message may go.

    consent.changed events ─▶ resolver ─▶ consents (store/consents.py, one row per statement, with evidence)
    triggers (at decision time) and delivery (at send time) ─▶ consent_refusal(states, kind, category, policy)

A state is the latest statement for ``(channel, purpose)``. Marketing needs a ``marketing`` opt-in on the
channel under the ``opt_in`` policy (the default: Russian advertising law, 38-FZ art. 18, asks for the
recipient's prior consent to advertising by phone, SMS and e-mail); under ``opt_out`` only an opt-out stops
it. Transactional and service messages need no marketing consent; they stop only on an explicit opt-out of
their own purpose (a customer's "no transactional" block). Hard bounces are the send log's suppressions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

__all__ = [
    "CONSENT_CHANNELS",
    "CONSENT_PURPOSES",
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
