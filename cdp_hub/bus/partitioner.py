"""The Kafka producer's partitioner: the Java client's murmur2 of the key, computed in half the time.

aiokafka's ``DefaultPartitioner`` hashes every key byte by byte in Python; at campaign rates (thousands of
records a second from one process) that was a sixth of the sender's CPU (bench/campaign.py under py-spy).
:func:`murmur2` reads the key as little-endian 32-bit words with one ``struct`` call and drops the redundant
masks: the same hash, so the same partition as aiokafka's and the Java client's partitioner for every key
(``tests/test_bus_partitioner.py`` compares them on keys of every length). A record without a key goes to
a random partition, as before.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

__all__ = ["murmur2", "partition_for"]

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{n}I") for n in range(65)]
"""Unpackers of 0..64 words (keys up to 256 bytes: profile ids, identities); longer keys build their own."""


def murmur2(data: bytes) -> int:
    """MurmurHash2 (32 bit, seed 0x9747b28c) of ``data``, as ``org.apache.kafka.common.utils.Utils.murmur2``."""
    length = len(data)
    h = _SEED ^ length
    words = length >> 2
    unpack = _WORDS[words] if words < len(_WORDS) else struct.Struct(f"<{words}I")
    for k in unpack.unpack_from(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length & 3
    if extra:
        tail = length - extra
        if extra >= 3:
            h ^= data[tail + 2] << 16
        if extra >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


_RECENT: dict[bytes, int] = {}
"""The hashes of recent keys: a customer's events come in runs (a session, an order and its receipts), and a
dict lookup costs a tenth of :func:`murmur2`. Emptied when it reaches ``_RECENT_MAX`` keys (a few MB)."""
_RECENT_MAX = 32_768


def partition_for(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's partitioner interface: the partition of ``key`` among ``all_partitions`` (sorted)."""
    if key is None:
        return random.choice(available or all_partitions)  # spreads keyless records (not security)
    h = _RECENT.get(key)
    if h is None:
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.clear()
        h = _RECENT[key] = murmur2(key) & 0x7FFFFFFF
    return all_partitions[h % len(all_partitions)]
