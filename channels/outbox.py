"""The outbox channel: each message is a JSON file in a directory. For demos, tests and dry runs.

``<directory>/<message_id>.json`` is written atomically (a temporary file, then ``os.replace``), once per
message id: a message sent twice is one file, and a reader never sees half a message.

The files of the sends started in one turn of the event loop (the delivery stage starts a whole batch's at
once) are written by one worker-thread call, not one each: handing a call to a thread and waking the loop
again cost more CPU than writing the small file itself. Each send still gets its own result (or error).
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
        self._pending: list[tuple[OutboundMessage, asyncio.Future[None]]] = []
        self._writes: set[asyncio.Task[None]] = set()

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
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        except FileNotFoundError:  # the directory went away since start(): create it again
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(orjson.dumps(message.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _write_all(self, messages: list[OutboundMessage]) -> list[Exception | None]:
        """Write each message in order; one's error does not stop the others."""
        errors: list[Exception | None] = []
        for message in messages:
            try:
                self._write(message)
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._write_batch(batch))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write_batch(self, batch: list[tuple[OutboundMessage, asyncio.Future[None]]]) -> None:
        try:
            errors = await asyncio.to_thread(self._write_all, [m for m, _ in batch])
        except asyncio.CancelledError:  # the loop is going away: so are the senders
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), error in zip(batch, errors, strict=True):
            if future.done():  # the sender stopped waiting (a timeout): the file is written all the same
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    async def send(self, message: OutboundMessage) -> Receipt:
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        self._pending.append((message, written))
        if len(self._pending) == 1:  # the first of this turn: the others started in it join its write
            loop.call_soon(self._flush)
        await written
        return Receipt(message_id=message.message_id, status="sent", provider="outbox",
                       provider_message_id=message.message_id)


@cdp_hub.hookimpl
def cdp_hub_register_channels(register: Callable[[type[Any]], None]) -> None:
    register(OutboxChannel)
