"""One dead-letter policy for every stage: a poison record goes to the DLQ with its typed reason and the batch
goes on; a bug is dead-lettered too, but counted and logged at ERROR; a stage whose every record fails batch
after batch halts instead of draining its topic."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from cdp_hub.bus.base import Record
from cdp_hub.dlq import DeadLetter
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import STAGE_NAMES, Pipeline, build_stage
from cdp_hub.pipeline.runner import StageHalted, StageRunner
from cdp_hub.schema.events import Event
from cdp_hub.schema.messages import MessageIntent

NOON = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


def _good(hub: Hub, stage: str) -> tuple[str, bytes]:
    """A valid record for ``stage``'s input topic."""
    pid = uuid.uuid4()
    if stage == "resolver":
        event = Event.model_validate({"type": "customer.updated", "source": "crm", "source_record_id": "r1",
                                      "occurred_at": NOON, "identities": [{"kind": "crm_id", "value": "C-1"}]})
        return hub.topics.events, event.to_json()
    if stage == "triggers":
        event = Event.model_validate({"type": "customer.updated", "source": "crm", "source_record_id": "p1",
                                      "occurred_at": NOON, "identities": [{"kind": "anonymous_id", "value": "a1"}],
                                      "profile_id": pid})
        return hub.topics.profile_events, event.to_json()
    if stage == "delivery":
        intent = MessageIntent(message_id=str(uuid.uuid4()), profile_id=str(pid), scenario="s", channel="email",
                               template="welcome")
        return hub.topics.messages, intent.model_dump_json().encode()
    d = DeadLetter(failure_type="schema_violation", stage="http", error="x", payload="{}")
    return hub.topics.dlq, d.model_dump_json().encode()


POISON = {
    "not JSON": b"\xff\xfe not json",
    "valid JSON, wrong shape": b'{"type": 42, "identities": "none"}',
}


@pytest.mark.parametrize("poison", list(POISON))
@pytest.mark.parametrize("name", [n for n in STAGE_NAMES if n != "dlq"])
async def test_a_poison_record_is_dead_lettered_by_every_stage(hub: Hub, name: str, poison: str) -> None:
    hub.clock = lambda: NOON
    stage = build_stage(hub, name)
    topic, good = _good(hub, name)
    out = await stage.handle([Record(topic, 0, 0, b"k", POISON[poison]), Record(topic, 0, 1, b"k", good)])
    [dead] = out.dead
    assert dead.failure_type == "schema_violation", dead
    assert dead.stage == name and dead.origin is not None and dead.origin.offset == 0
    assert dead.payload_bytes() == POISON[poison]
    assert dead.field, "the dead letter names the field"
    if name == "resolver":  # the good record went on
        assert any(m.topic == hub.topics.profile_events for m in out.messages)


async def test_the_dlq_stage_archives_what_it_cannot_parse(hub: Hub) -> None:
    stage = build_stage(hub, "dlq")
    out = await stage.handle([Record(hub.topics.dlq, 0, 0, None, b"\xff garbage")])
    assert out.dead == []  # a dead letter of a dead letter would only loop
    assert await hub.store.fetchval("SELECT count(*) FROM dead_letters WHERE error = 'unparseable DLQ entry'") == 1


async def test_a_bug_is_dead_lettered_counted_and_logged(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    stage = build_stage(hub, "triggers")
    topic, good = _good(hub, "triggers")
    real_decode = stage.decode

    def buggy(record: Record) -> Any:
        if record.offset == 0:
            return {}["missing"]
        return real_decode(record)

    stage.decode = buggy  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="cdp_hub.pipeline.stage"):
        out = await stage.handle([Record(topic, 0, 0, b"k", good), Record(topic, 0, 1, b"k", good)])
    [dead] = out.dead
    assert dead.failure_type == "processing_error"
    assert "KeyError" in dead.error and "in buggy" in dead.error  # the traceback summary names the frame
    assert hub.metrics.stage_record_bugs.labels("triggers")._value.get() == 1
    assert any(r.levelno == logging.ERROR and "KeyError" in r.getMessage() for r in caplog.records)


async def test_a_stage_that_dead_letters_everything_halts_without_committing(hub: Hub) -> None:
    hub.settings.stage_halt_dead_batches = 3
    hub.settings.stage_halt_dead_records = 30
    hub.settings.batch_size = 10
    for i in range(60):
        await hub.bus.publish(hub.topics.events, orjson.dumps({"bad": i}), key=b"k")
    pipeline = Pipeline(hub, ["resolver"])
    with pytest.raises(StageHalted, match="every record of the last 3 batches"):
        await asyncio.wait_for(pipeline.run(), 30)
    runner = pipeline.runners[0]
    assert runner.processed == 20  # two batches committed, the third held back
    assert len(await hub.bus.read_all(hub.topics.dlq)) == 20
    # The held-back batch is still there for the stage once the cause is fixed.
    consumer = hub.bus.consumer([hub.topics.events], group=runner.stage.group)
    await consumer.start()
    rest = await consumer.getmany(timeout_ms=200, max_records=100)
    await consumer.stop()
    assert len(rest) == 40


async def test_a_trickle_of_junk_does_not_halt_a_stage(hub: Hub) -> None:
    hub.settings.stage_halt_dead_batches = 2
    hub.settings.stage_halt_dead_records = 100
    stage = build_stage(hub, "resolver")
    runner = StageRunner(stage, hub.bus, batch_size=1, poll_timeout_ms=20, halt_dead_batches=2,
                         halt_dead_records=100)
    for i in range(5):
        await hub.bus.publish(hub.topics.events, orjson.dumps({"bad": i}), key=b"k")
    task = asyncio.create_task(runner.run())
    for _ in range(200):
        if runner.processed == 5:
            break
        await asyncio.sleep(0.02)
    runner.stop()
    await task
    assert runner.processed == 5
