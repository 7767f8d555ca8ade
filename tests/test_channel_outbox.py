"""The outbox channel: conformance kit, atomic and idempotent files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdp_hub.testing.channels import ChannelTests
from channels.outbox import OutboxChannel


class TestOutboxConformance(ChannelTests):
    channel_class = OutboxChannel
    recipient = "anna@example.com"
    simulated = frozenset({"sent"})  # a local directory has no transient or permanent failures to simulate

    @pytest.fixture
    def channel_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"directory": str(tmp_path / "outbox")}

    def simulate(self, provider: Any, outcome: str) -> None:
        assert outcome == "sent"


async def test_one_file_per_message_written_once(tmp_path: Path) -> None:
    ch = OutboxChannel({"directory": tmp_path / "out"})
    await ch.start()
    message = TestOutboxConformance().message(text="first")
    receipt = await ch.send(message)
    path = tmp_path / "out" / f"{message.message_id}.json"
    assert receipt.status == "sent" and receipt.provider_message_id == message.message_id
    first = path.stat()
    assert (await ch.send(message.model_copy(update={"text": "second"}))).status == "sent"
    assert orjson.loads(path.read_bytes())["text"] == "first"  # idempotent: the first write stands
    assert path.stat().st_mtime_ns == first.st_mtime_ns
    assert [p.name for p in (tmp_path / "out").iterdir()] == [path.name]  # no temporary files left over


async def test_message_id_cannot_escape_the_directory(tmp_path: Path) -> None:
    ch = OutboxChannel({"directory": tmp_path / "out"})
    await ch.start()
    await ch.send(TestOutboxConformance().message(message_id="../../etc/evil"))
    assert os.listdir(tmp_path) == ["out"]


def test_stands_in_for_sms() -> None:
    ch = OutboxChannel({"directory": "x", "kind": "sms", "address_kind": "phone"})
    assert (ch.kind, ch.address_kind) == ("sms", "phone")
