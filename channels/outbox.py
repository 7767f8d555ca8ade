"""The outbox channel: each message is a JSON file in a directory. For demos, tests and dry runs.

``<directory>/<message_id>.json`` is written atomically (a temporary file, then ``os.replace``), once per
message id: a message sent twice is one file, and a reader never sees half a message.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import orjson
from pydantic import Field

import cdp_hub
from cdp_hub.channel.base import Channel, ChannelConfig, ChannelKind, OutboundMessage, Receipt

__all__ = ["OutboxChannel", "OutboxConfig"]


class OutboxConfig(ChannelConfig):
    directory: Path = Field(description="where the message files go (created when missing)")
    kind: ChannelKind = Field(
        "email", description="which channel this outbox stands in for (selects the template)")
    address_kind: str = Field("email", description="identity kind of the recipient: email, phone, push_token")


class OutboxChannel(Channel):
    """Writes each message to <directory>/<message_id>.json instead of sending it."""

    name: ClassVar[str] = "outbox"
    kind: ChannelKind = "email"
    address_kind = "email"
    config_model = OutboxConfig

    def __init__(self, config: Any = None, **kw: Any) -> None:
        super().__init__(config, **kw)
        assert isinstance(self.config, OutboxConfig)
        # One class stands in for any channel kind: an outbox for SMS renders SMS templates to phones.
        self.kind = self.config.kind
        self.address_kind = self.config.address_kind

    @property
    def directory(self) -> Path:
        assert isinstance(self.config, OutboxConfig)
        return self.config.directory

    async def start(self) -> None:
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)

    def path_for(self, message_id: str) -> Path:
        # A message id is ours (a UUID) but never trust a name that becomes a path.
        safe = "".join(c for c in message_id if c.isalnum() or c in "-_.")[:200].lstrip(".")
        return self.directory / f"{safe}.json"

    def _write(self, message: OutboundMessage) -> None:
        target = self.path_for(message.message_id)
        if target.exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(orjson.dumps(message.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def send(self, message: OutboundMessage) -> Receipt:
        await asyncio.to_thread(self._write, message)
        return Receipt(message_id=message.message_id, status="sent", provider="outbox",
                       provider_message_id=message.message_id)


@cdp_hub.hookimpl
def cdp_hub_register_channels(register: Callable[[type[Any]], None]) -> None:
    register(OutboxChannel)
