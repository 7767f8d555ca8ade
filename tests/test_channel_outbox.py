"""The outbox channel: conformance kit, atomic and idempotent files."""

from __future__ import annotations

import asyncio
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


async def test_sends_of_one_loop_turn_share_one_write_and_keep_their_own_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ch = OutboxChannel({"directory": tmp_path / "out"})
    await ch.start()
    calls: list[int] = []
    write_all, write = ch._write_all, ch._write

    def counting(messages: list[Any]) -> list[Exception | None]:
        calls.append(len(messages))
        return write_all(messages)

    def failing(message: Any) -> None:
        if message.message_id == "bad":
            raise OSError("disk full")
        write(message)

    monkeypatch.setattr(ch, "_write_all", counting)
    monkeypatch.setattr(ch, "_write", failing)
    kit = TestOutboxConformance()
    results = await asyncio.gather(*(ch.send(kit.message(message_id=mid)) for mid in ("a", "bad", "c")),
                                   return_exceptions=True)
    assert calls == [3]
    assert [r.status for r in results if not isinstance(r, BaseException)] == ["sent", "sent"]
    assert isinstance(results[1], OSError)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json", "c.json"]
    # The directory removed behind its back is created again.
    for p in (tmp_path / "out").iterdir():
        p.unlink()
    (tmp_path / "out").rmdir()
    assert (await ch.send(kit.message(message_id="d"))).status == "sent"
    assert calls == [3, 1] and (tmp_path / "out" / "d.json").exists()
