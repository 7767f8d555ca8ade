"""The producer's partitioner (cdp_hub/bus/partitioner.py) gives aiokafka's (the Java client's) partition for
every key: keys of every length 0..300 (all four tails), profile ids, identities with unicode."""

from __future__ import annotations

import random
import uuid

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from cdp_hub.bus.partitioner import murmur2, partition_for


def _keys() -> list[bytes]:
    rng = random.Random(14)
    keys = [bytes(rng.getrandbits(8) for _ in range(n)) for n in range(301) for _ in range(3)]
    keys += [b"\xff" * n for n in range(40)] + [b"\x00" * n for n in range(40)]
    keys += [str(uuid.UUID(int=rng.getrandbits(128))).encode() for _ in range(500)]
    keys += [f"email:анна.{i}@пример.рф".encode() for i in range(200)]
    keys += [f"phone:+7916{i:07d}".encode() for i in range(200)]
    return keys


def test_murmur2_is_the_java_clients_hash() -> None:
    for key in _keys():
        assert murmur2(key) == aiokafka_murmur2(key), key


def test_the_partition_of_a_key_is_aiokafkas() -> None:
    default = DefaultPartitioner()
    for partitions in ([0], [0, 1, 2, 3], list(range(7)), list(range(64))):
        for key in _keys():
            assert partition_for(key, partitions, partitions) == default(key, partitions, partitions)


def test_a_record_without_a_key_goes_to_an_available_partition() -> None:
    assert {partition_for(None, [0, 1, 2, 3], [2]) for _ in range(20)} == {2}
    assert {partition_for(None, [0, 1], []) for _ in range(50)} <= {0, 1}


def test_the_recent_hashes_stay_bounded_and_right() -> None:
    """Keys are hashed once while they are recent; past the bound the memory is emptied, never wrong."""
    from cdp_hub.bus import partitioner

    default = DefaultPartitioner()
    keys = [f"profile:{i}".encode() for i in range(partitioner._RECENT_MAX + 500)]
    for _ in range(2):  # the second pass meets both remembered and forgotten keys
        for key in keys:
            assert partition_for(key, [0, 1, 2, 3], [0, 1, 2, 3]) == default(key, [0, 1, 2, 3], [0, 1, 2, 3])
            assert len(partitioner._RECENT) <= partitioner._RECENT_MAX
