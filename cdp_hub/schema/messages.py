"""The message intent on ``cdp.messages``: a scenario decided that a profile gets a message.

The intent carries no rendered text: the delivery stage renders it with the profile as it is at send time.
``message_id`` is deterministic (scenario + trigger event + profile), so a replayed intent is the same
message and the send log makes it a no-op.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MESSAGE_NAMESPACE", "MessageIntent", "message_id_for"]

MESSAGE_NAMESPACE = uuid.UUID("0b7e6a52-93c4-5b0e-8f35-8d3f0a6c2e11")


def message_id_for(scenario: str, trigger_event_id: str, profile_id: str, step: str = "") -> str:
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{scenario}\x1f{trigger_event_id}\x1f{profile_id}\x1f{step}"))


class MessageIntent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["cdp.message/1"] = "cdp.message/1"
    message_id: str
    profile_id: str
    scenario: str
    channel: str = Field(description="channel instance to try first")
    fallbacks: list[str] = Field(default_factory=list, description="channels to try next, in order")
    template: str
    locale: str | None = None
    trigger_event_id: str | None = None
    trigger_event: dict[str, Any] | None = Field(default=None, description="the canonical event, for templates")
    vars: dict[str, Any] = Field(default_factory=dict, description="scenario variables for templates")
    category: Literal["marketing", "transactional", "service"] = "marketing"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    expires_at: datetime | None = None
