"""One test suite for both bus backends: every test runs on the in-process bus and on the real Kafka broker.

The Kafka broker comes from ``scripts/services.sh up`` (``CDP_HUB_KAFKA_BOOTSTRAP``, default
127.0.0.1:19092); when it does not answer, the kafka tests fail and say so, they are not skipped.
Topic and group names are unique per test, so tests never see each other's records on the broker.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from cdp_hub.bus import Bus, Consumer, OutgoingMessage, Record, TopicPartition, create_bus
from cdp_hub.errors import ConfigurationError, FatalError
from tests.conftest import topic_prefix

KAFKA_BOOTSTRAP = os.environ.get("CDP_HUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092")


def _check_broker_reachable(bootstrap: str) -> None:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=3):
            return
    except OSError as exc:
        reason = str(exc)
    pytest.fail(
        f"Kafka broker at {bootstrap} is unreachable ({reason}). Start the local services first:\n"
        f'    eval "$(scripts/services.sh up)"\n'
        f"or point CDP_HUB_KAFKA_BOOTSTRAP at a running broker.",
        pytrace=False,
    )


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "kafka":
        _check_broker_reachable(KAFKA_BOOTSTRAP)
        # Short heartbeats so that a group notices a joining or leaving member quickly.
        instance = create_bus("kafka", bootstrap=KAFKA_BOOTSTRAP, client_id="cdp-hub-tests",
                              consumer_options={"heartbeat_interval_ms": 300, "session_timeout_ms": 6000})
    else:
        instance = create_bus("memory")
    async with instance:
        yield instance


@pytest.fixture
def name() -> Callable[[str], str]:
    """Unique topic/group names for this test."""
    mine = topic_prefix("test")
    return lambda prefix: f"{mine}{prefix}"


async def drain(consumer: Consumer, expected: int, *, timeout_s: float = 20.0,
                commit: bool = False) -> list[Record]:
    """Read until ``expected`` records came (or the timeout), then a little more to catch extras."""
    records: list[Record] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(records) < expected and loop.time() < deadline:
        batch = await consumer.getmany(timeout_ms=200)
        records.extend(batch)
        if commit and batch:
            await consumer.commit()
    records.extend(await consumer.getmany(timeout_ms=300))
    if commit:
        await consumer.commit()
    return records


def values(records: list[Record]) -> list[bytes]:
    return [r.value for r in records]


async def wait_for_split(members: list[Any], partitions: int, timeout_s: float = 20.0) -> None:
    """Wait until the members own disjoint partition sets that together cover every partition."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        owned = [m.assignment() for m in members]
        if all(owned) and sum(map(len, owned)) == partitions and len(set().union(*owned)) == partitions:
            return
        assert loop.time() < deadline, f"group never split the partitions: {owned}"
        # Not getmany(): records it returned here would be missing from the test's count. Both backends
        # rebalance without being polled (aiokafka in its coordinator task).
        await asyncio.sleep(0.05)


async def test_round_trip_keeps_value_key_and_headers(bus: Bus, name: Callable[[str], str]) -> None:
    topic = name("roundtrip")
    await bus.ensure_topics([topic], partitions=2)
    await bus.publish(topic, b"v1", key=b"k1", headers=[("source", b"crm"), ("trace", b"\x00\x01")])
    await bus.publish(topic, b"v2")  # no key, no headers
    async with bus.consumer([topic], group=name("g")) as consumer:
        records = await drain(consumer, 2)
    assert sorted(values(records)) == [b"v1", b"v2"]
    first = next(r for r in records if r.value == b"v1")
    assert first.key == b"k1"
    assert first.headers == (("source", b"crm"), ("trace", b"\x00\x01"))
    assert first.header("source") == b"crm" and first.header("missing") is None
    assert first.topic == topic and first.timestamp_ms > 0
    second = next(r for r in records if r.value == b"v2")
    assert second.key is None and second.headers == ()


async def test_same_key_same_partition_in_publish_order(bus: Bus, name: Callable[[str], str]) -> None:
    topic = name("order")
    await bus.ensure_topics([topic], partitions=4)
    keys = [f"customer-{i}".encode() for i in range(8)]
    messages = [OutgoingMessage(topic, f"{k.decode()}:{n}".encode(), key=k) for n in range(25) for k in keys]
    await bus.publish_many(messages)
    async with bus.consumer([topic], group=name("g")) as consumer:
        records = await drain(consumer, len(messages))
    assert len(records) == len(messages)
    by_key: dict[bytes, list[Record]] = {}
    for r in records:
        by_key.setdefault(r.key or b"", []).append(r)
    for key, recs in by_key.items():
        assert len({r.partition for r in recs}) == 1, f"{key!r} spread over partitions"
        recs.sort(key=lambda r: r.offset)
        assert values(recs) == [f"{key.decode()}:{n}".encode() for n in range(25)]
    assert len({recs[0].partition for recs in by_key.values()}) > 1, "8 keys all in one partition"
    # Offsets are dense per partition, starting at 0.
    for p in {r.partition for r in records}:
        offsets = sorted(r.offset for r in records if r.partition == p)
        assert offsets == list(range(len(offsets)))


async def test_two_members_split_partitions_and_see_each_record_once(
        bus: Bus, name: Callable[[str], str]) -> None:
    topic, group = name("split"), name("g")
    await bus.ensure_topics([topic], partitions=4)
    async with bus.consumer([topic], group=group) as a, bus.consumer([topic], group=group) as b:
        await wait_for_split([a, b], 4)
        assert a.assignment().isdisjoint(b.assignment())  # type: ignore[attr-defined]
        sent = [f"r{i}".encode() for i in range(200)]
        await bus.publish_many([OutgoingMessage(topic, v, key=v) for v in sent])
        got_a, got_b = await asyncio.gather(drain(a, 1, commit=True), drain(b, 1, commit=True))
        # Both members keep reading until everything arrived (each owns half the partitions).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(got_a) + len(got_b) < len(sent) and loop.time() < deadline:
            more_a, more_b = await asyncio.gather(a.getmany(timeout_ms=200), b.getmany(timeout_ms=200))
            got_a += more_a
            got_b += more_b
    assert got_a and got_b, "one member got nothing"
    assert {r.partition for r in got_a}.isdisjoint({r.partition for r in got_b})
    assert sorted(values(got_a + got_b)) == sorted(sent)  # every record exactly once


async def test_committed_offsets_survive_the_member(bus: Bus, name: Callable[[str], str]) -> None:
    topic, group = name("resume"), name("g")
    await bus.ensure_topics([topic], partitions=4)
    first = [OutgoingMessage(topic, f"a{i}".encode(), key=f"{i}".encode()) for i in range(20)]
    await bus.publish_many(first)
    async with bus.consumer([topic], group=group) as consumer:
        assert sorted(values(await drain(consumer, 20))) == sorted(m.value for m in first)
        await consumer.commit()
    second = [OutgoingMessage(topic, f"b{i}".encode(), key=f"{i}".encode()) for i in range(20)]
    await bus.publish_many(second)
    async with bus.consumer([topic], group=group) as successor:
        got = await drain(successor, 20)
    assert sorted(values(got)) == sorted(m.value for m in second)  # no loss, no replay


async def test_explicit_commit_resumes_after_that_offset(bus: Bus, name: Callable[[str], str]) -> None:
    topic, group = name("explicit"), name("g")
    await bus.ensure_topics([topic], partitions=1)
    await bus.publish_many([OutgoingMessage(topic, f"{i}".encode()) for i in range(10)])
    async with bus.consumer([topic], group=group) as consumer:
        assert len(await drain(consumer, 10)) == 10
        await consumer.commit({TopicPartition(topic, 0): 4})  # only the first four are done
    async with bus.consumer([topic], group=group) as successor:
        got = await drain(successor, 6)
    assert [r.offset for r in got] == [4, 5, 6, 7, 8, 9]


async def test_uncommitted_records_are_delivered_again(bus: Bus, name: Callable[[str], str]) -> None:
    topic, group = name("redeliver"), name("g")
    await bus.ensure_topics([topic], partitions=4)
    sent = [OutgoingMessage(topic, f"{i}".encode(), key=f"{i}".encode()) for i in range(30)]
    await bus.publish_many(sent)
    async with bus.consumer([topic], group=group) as crashing:
        assert len(await drain(crashing, 30)) == 30
        # no commit: the member goes away with its work unfinished
    async with bus.consumer([topic], group=group) as successor:
        got = await drain(successor, 30)
    assert sorted(values(got)) == sorted(m.value for m in sent)  # at least once


async def test_leaving_member_hands_its_partitions_over(bus: Bus, name: Callable[[str], str]) -> None:
    topic, group = name("handover"), name("g")
    await bus.ensure_topics([topic], partitions=4)
    sent = [OutgoingMessage(topic, f"{i}".encode(), key=f"{i}".encode()) for i in range(40)]
    await bus.publish_many(sent)
    async with bus.consumer([topic], group=group) as stays:
        leaves = bus.consumer([topic], group=group)
        await leaves.start()
        await wait_for_split([stays, leaves], 4)
        kept = await drain(stays, 1, commit=True)
        await drain(leaves, 1)  # reads its share but never commits
        await leaves.stop()
        await leaves.stop()  # idempotent
        rest = await drain(stays, len(sent) - len(kept), commit=True)
        assert len(stays.assignment()) == 4  # type: ignore[attr-defined]
    assert sorted(values(kept + rest)) == sorted(m.value for m in sent)


async def test_lag_is_end_minus_committed(bus: Bus, name: Callable[[str], str]) -> None:
    topic, group = name("lag"), name("g")
    await bus.ensure_topics([topic], partitions=1)
    await bus.publish_many([OutgoingMessage(topic, f"{i}".encode()) for i in range(10)])
    tp = TopicPartition(topic, 0)
    async with bus.consumer([topic], group=group) as consumer:
        assert await consumer.lag() == {tp: 10}  # a new group starts at the earliest offset
        assert len(await drain(consumer, 10)) == 10
        assert await consumer.lag() == {tp: 10}  # read is not committed
        await consumer.commit({tp: 7})
        assert await consumer.lag() == {tp: 3}
        await consumer.commit()
        assert await consumer.lag() == {tp: 0}
    assert await bus.end_offsets(topic) == {0: 10}


async def test_end_offsets_and_read_all(bus: Bus, name: Callable[[str], str]) -> None:
    topic = name("browse")
    await bus.ensure_topics([topic], partitions=3)
    sent = [OutgoingMessage(topic, f"{i}".encode(), key=f"k{i % 5}".encode()) for i in range(50)]
    await bus.publish_many(sent)
    ends = await bus.end_offsets(topic)
    assert sorted(ends) == [0, 1, 2] and sum(ends.values()) == 50
    everything = await bus.read_all(topic)
    assert sorted(values(everything)) == sorted(m.value for m in sent)
    assert [(r.partition, r.offset) for r in everything] == sorted((r.partition, r.offset) for r in everything)
    assert await bus.read_all(topic, limit=7) == everything[:7]
    assert await bus.read_all(name("missing")) == []
    assert await bus.end_offsets(name("missing")) == {}
    # read_all is outside any group: a group started afterwards still starts at the beginning.
    async with bus.consumer([topic], group=name("g")) as consumer:
        assert len(await drain(consumer, 50)) == 50


async def test_publish_many_is_durable_when_it_returns(bus: Bus, name: Callable[[str], str]) -> None:
    topics = [name("durable-a"), name("durable-b")]  # the second is created on first publish
    await bus.ensure_topics(topics[:1], partitions=4)
    sent = [OutgoingMessage(topics[i % 2], os.urandom(64), key=f"{i % 13}".encode(),
                            headers=(("n", str(i).encode()),)) for i in range(2000)]
    await bus.publish_many(sent)
    ends = {t: await bus.end_offsets(t) for t in topics}
    assert sum(ends[topics[0]].values()) == 1000 and sum(ends[topics[1]].values()) == 1000
    assert len(ends[topics[1]]) == 4  # auto-created with the default partition count
    async with bus.consumer(topics, group=name("g")) as fresh:
        got = await drain(fresh, len(sent))
    assert len(got) == len(sent)
    assert sorted((r.topic, r.value) for r in got) == sorted((m.topic, m.value) for m in sent)


async def test_lifecycle_errors(bus: Bus, name: Callable[[str], str]) -> None:
    consumer = bus.consumer([name("life")], group=name("g"))
    with pytest.raises(FatalError):
        await consumer.getmany(timeout_ms=0)
    await consumer.stop()  # stopping a consumer never started is fine
    await bus.stop()
    await bus.stop()  # idempotent
    with pytest.raises(FatalError):
        await bus.publish(name("life"), b"x")
    await bus.start()  # and the fixture's exit stops it again


async def test_getmany_waits_for_new_records(bus: Bus, name: Callable[[str], str]) -> None:
    topic = name("wait")
    await bus.ensure_topics([topic], partitions=2)
    async with bus.consumer([topic], group=name("g")) as consumer:
        assert await consumer.getmany(timeout_ms=50) == []
        waiting = asyncio.create_task(drain(consumer, 1, timeout_s=15))
        await asyncio.sleep(0.2)
        await bus.publish(topic, b"late")
        assert values(await waiting) == [b"late"]


async def test_drained_names_the_partitions_read_to_their_end(bus: Bus, name: Callable[[str], str]) -> None:
    # What a stage with event-time timers relies on: a partition is reported drained only when every record
    # the broker held at the last fetch has been returned, with the age of that fetch's answer.
    topic = name("drained")
    tp = TopicPartition(topic, 0)
    await bus.ensure_topics([topic], partitions=1)
    await bus.publish_many([OutgoingMessage(topic, f"{i}".encode()) for i in range(10)])
    async with bus.consumer([topic], group=name("g")) as consumer:
        assert consumer.drained() == {}  # nothing returned yet: nothing known
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        first: list[Record] = []
        while not first and loop.time() < deadline:
            first = await consumer.getmany(timeout_ms=200, max_records=3)
        assert [r.offset for r in first] == [0, 1, 2]
        assert tp not in consumer.drained()  # seven more are there
        rest = await drain(consumer, 7)
        assert [r.offset for r in rest] == list(range(3, 10))
        drained = consumer.drained()
        assert set(drained) == {tp} and 0.0 <= drained[tp] < 60
        await bus.publish_many([OutgoingMessage(topic, f"{i}".encode()) for i in range(10, 15)])
        more: list[Record] = []
        while not more and loop.time() < deadline:
            more = await consumer.getmany(timeout_ms=200, max_records=2)
        assert [r.offset for r in more] == [10, 11]
        assert tp not in consumer.drained()


async def test_drained_never_names_a_partition_the_member_no_longer_owns(
        bus: Bus, name: Callable[[str], str]) -> None:
    topic, group = name("drained-split"), name("g")
    await bus.ensure_topics([topic], partitions=2)
    # Forty keys: both partitions get records (the partitioners are deterministic, so this never varies).
    await bus.publish_many([OutgoingMessage(topic, f"{i}".encode(), key=f"k{i}".encode()) for i in range(40)])
    async with bus.consumer([topic], group=group) as first:
        assert len(await drain(first, 40)) == 40
        assert set(first.drained()) == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
        async with bus.consumer([topic], group=group) as second:
            await wait_for_split([first, second], 2)
            # The partition that moved is read again by its new owner (nothing committed): not drained for
            # the member that lost it, whatever it had read of it.
            assert set(first.drained()) <= first.assignment()  # type: ignore[attr-defined]
            assert len(first.drained()) <= 1


async def test_group_lag_is_what_another_group_has_not_committed(bus: Bus, name: Callable[[str], str]) -> None:
    topic, group = name("group-lag"), name("g")
    await bus.ensure_topics([topic], partitions=1)
    await bus.publish_many([OutgoingMessage(topic, f"{i}".encode()) for i in range(10)])
    assert await bus.group_lag(group, topic) is None  # the group has committed nothing: unknown
    async with bus.consumer([topic], group=group) as consumer:
        assert len(await drain(consumer, 10)) == 10
        await consumer.commit({TopicPartition(topic, 0): 4})
        assert await bus.group_lag(group, topic) == {0: 6}
        await consumer.commit()
        assert await bus.group_lag(group, topic) == {0: 0}
    assert await bus.group_lag(name("other"), topic) is None


def test_create_bus_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        create_bus("rabbitmq")
    with pytest.raises(ConfigurationError):
        create_bus("kafka")


# -- Kafka only: compression ---------------------------------------------------------------------------------


@pytest.mark.kafka
async def test_a_consumer_reads_what_producers_of_every_codec_wrote(name: Callable[[str], str]) -> None:
    """Producers may differ in kafka_compression (a rolling change of it, another tool): every consumer reads
    every codec, because the codecs are installed with the package."""
    from cdp_hub.bus.kafka import COMPRESSIONS, KafkaBus

    _check_broker_reachable(KAFKA_BOOTSTRAP)
    topic = name("codecs")
    for compression in COMPRESSIONS:
        async with KafkaBus(KAFKA_BOOTSTRAP, client_id="cdp-hub-tests", compression=compression) as producer:
            assert producer._producer._compression_type == (None if compression == "none" else compression)
            await producer.publish_many([OutgoingMessage(topic, f"{compression}-{i}".encode() * 40, b"k")
                                         for i in range(3)])
    reader = create_bus("kafka", bootstrap=KAFKA_BOOTSTRAP, client_id="cdp-hub-tests")
    async with reader, reader.consumer([topic], group=name("codecs-reader")) as consumer:
        got = values(await drain(consumer, 3 * len(COMPRESSIONS)))
    assert got == [f"{c}-{i}".encode() * 40 for c in COMPRESSIONS for i in range(3)]


@pytest.mark.kafka
async def test_kafka_many_records_go_in_batches_to_the_partition_of_one_at_a_time(name: Callable[[str], str]) -> None:
    """publish_many of many records builds one record batch per partition (and more when a batch fills): each
    key lands where a record published alone lands, in the order given, with its headers; a record larger than a
    batch goes on its own; a keyless record goes to some partition."""
    from cdp_hub.bus.kafka import _BATCHED_FROM, _MAX_BATCH_SIZE

    _check_broker_reachable(KAFKA_BOOTSTRAP)
    topic = name("batched")
    bus = create_bus("kafka", bootstrap=KAFKA_BOOTSTRAP, client_id="cdp-hub-tests")
    async with bus:
        await bus.ensure_topics([topic], partitions=4)
        keys = [f"profile-{i}".encode() for i in range(40)]
        for key in keys:  # one at a time: the per-record path
            await bus.publish(topic, b"alone:" + key, key=key)
        rounds = 3 * _MAX_BATCH_SIZE // (len(keys) * 2048) + 1  # each partition fills more than one batch
        many = [OutgoingMessage(topic, f"{key.decode()}:{n}:".encode() + b"x" * 2000, key,
                                (("n", str(n).encode()), ("k", key))) for n in range(rounds) for key in keys]
        big = OutgoingMessage(topic, b"big:" + os.urandom(_MAX_BATCH_SIZE + 10), keys[0])
        many.insert(len(many) // 2, big)
        many.append(OutgoingMessage(topic, b"keyless"))
        assert len(many) >= _BATCHED_FROM
        await bus.publish_many(many)
        async with bus.consumer([topic], group=name("g")) as consumer:
            records = await drain(consumer, len(keys) + len(many))
    assert len(records) == len(keys) + len(many)
    alone = {r.key: r.partition for r in records if r.value.startswith(b"alone:")}
    for key in keys:
        mine = sorted((r for r in records if r.key == key and not r.value.startswith(b"alone:")),
                      key=lambda r: r.offset)
        assert {r.partition for r in mine} == {alone[key]}, "the same partition as a record published alone"
        expected = [m.value for m in many if m.key == key]
        assert [r.value for r in mine] == expected, "in the order given"
        assert all(r.header("k") == key for r in mine if r.value != big.value)
    assert sum(1 for r in records if r.value == b"keyless" and r.key is None) == 1


@pytest.mark.kafka
@pytest.mark.parametrize("count", [20, 200], ids=["one-by-one", "batched"])
async def test_publish_many_does_not_wait_out_the_linger(name: Callable[[str], str], count: int) -> None:
    """A stage waits for its batch's acks before it commits, the HTTP edge before it answers: publish_many sends
    at once, whatever linger_ms (which still batches what other tasks publish one by one). Both ways: records
    one by one (few), and whole record batches built here (many: each is closed before it is handed over, or
    it would linger, and hold the partition's next batch behind it)."""
    from cdp_hub.bus.kafka import KafkaBus

    _check_broker_reachable(KAFKA_BOOTSTRAP)
    topic = name("linger")
    async with KafkaBus(KAFKA_BOOTSTRAP, client_id="cdp-hub-tests", producer_options={"linger_ms": 3000}) as bus:
        await bus.ensure_topics([topic])
        await bus.publish_many([OutgoingMessage(topic, b"warm", b"k")])  # metadata of the new topic
        loop = asyncio.get_running_loop()
        started = loop.time()
        await bus.publish_many([OutgoingMessage(topic, b"v%d" % i, b"k%d" % i) for i in range(count)])
        assert loop.time() - started < 1.5  # lingering would take three seconds
    reader = create_bus("kafka", bootstrap=KAFKA_BOOTSTRAP, client_id="cdp-hub-tests")
    async with reader:
        assert len(await reader.read_all(topic)) == count + 1


def test_kafka_bus_compression_is_zstd_unless_configured_and_must_be_installable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka import codec

    from cdp_hub.bus.kafka import KafkaBus
    from cdp_hub.config import Settings
    from cdp_hub.hub import create_bus as hub_bus

    assert KafkaBus(KAFKA_BOOTSTRAP).compression == "zstd"
    for settings, expected in ((Settings(bus="kafka"), "zstd"),
                               (Settings(bus="kafka", kafka_compression="lz4"), "lz4")):
        bus = hub_bus(settings)
        assert isinstance(bus, KafkaBus) and bus.compression == expected
    with pytest.raises(ConfigurationError, match="unknown Kafka compression 'brotli'"):
        KafkaBus(KAFKA_BOOTSTRAP, compression="brotli")
    monkeypatch.setattr(codec, "has_zstd", lambda: False)
    with pytest.raises(ConfigurationError, match=r"pip install 'aiokafka\[zstd\]'"):
        KafkaBus(KAFKA_BOOTSTRAP, compression="zstd")


# -- in-process bus only: retention --------------------------------------------------------------------


async def test_memory_bus_drops_what_every_group_has_committed() -> None:
    """What every group reading a topic has committed is dropped, offsets keep counting, a late group starts
    at the oldest record kept, and a topic no group reads keeps everything."""
    from cdp_hub.bus.memory import MemoryBus

    async with MemoryBus() as bus:
        await bus.ensure_topics(["t", "unread"], partitions=1)
        await bus.publish_many([OutgoingMessage("t", f"v{i}".encode()) for i in range(10)])
        await bus.publish_many([OutgoingMessage("unread", b"x") for _ in range(5)])
        async with bus.consumer(["t"], group="a") as a, bus.consumer(["t"], group="b") as b:
            got_a = await a.getmany(timeout_ms=100)
            assert len(got_a) == 10
            await a.commit({TopicPartition("t", 0): 6})
            assert len(await bus.read_all("t")) == 10  # group b has committed nothing yet
            assert bus.uncommitted("a", ["t"]) == 4 and bus.uncommitted("b", ["t"]) == 10
            await b.getmany(timeout_ms=100)
            await b.commit({TopicPartition("t", 0): 8})
            kept = await bus.read_all("t")
            assert [r.offset for r in kept] == [6, 7, 8, 9]  # min(6, 8): group a still needs 6 and 7
            await a.commit(None)
            assert [r.offset for r in await bus.read_all("t")] == [8, 9]
            assert await bus.end_offsets("t") == {0: 10}
            assert (await a.lag()) == {TopicPartition("t", 0): 0}
            assert (await b.lag()) == {TopicPartition("t", 0): 2}
            await bus.publish("t", b"v10")
            more = await b.getmany(timeout_ms=100)
            assert [r.offset for r in more] == [10]  # its position, not its commit
        async with bus.consumer(["t"], group="late") as late:
            assert [r.offset for r in await late.getmany(timeout_ms=100)] == [8, 9, 10]
        assert len(await bus.read_all("unread")) == 5
        assert bus.uncommitted("nobody", ["t", "unread"]) == 3 + 5


async def test_memory_bus_memory_stays_flat_when_consumers_keep_up() -> None:
    from cdp_hub.bus.memory import MemoryBus

    async with MemoryBus() as bus:
        await bus.ensure_topics(["flow"], partitions=4)
        async with bus.consumer(["flow"], group="only") as consumer:
            for round_ in range(50):
                await bus.publish_many([OutgoingMessage("flow", b"x" * 100, key=str(i).encode())
                                        for i in range(1000)])
                got = 0
                while got < 1000:
                    got += len(await consumer.getmany(timeout_ms=100, max_records=1000))
                await consumer.commit(None)
                assert len(await bus.read_all("flow")) == 0, round_
        assert sum((await bus.end_offsets("flow")).values()) == 50_000
