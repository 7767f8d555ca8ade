"""The benches that run on a fresh topic prefix delete that prefix's topics when they are done.

The broker is shared (the test servers, or a staging cluster): a bench that left its topics behind left four or
more per run, each with its partitions and log segments, for as long as the broker lives. Not a bench itself:
``make bench`` runs ``bench/[!_]*.py``.
"""

from __future__ import annotations

import sys

from aiokafka.admin import AIOKafkaAdminClient


async def delete_topics(bootstrap: str, prefix: str) -> int:
    """Delete every topic whose name starts with ``prefix`` (which must name a run of its own, never ``""``);
    return how many. A failure is printed, not raised: cleaning up must not fail a bench that measured."""
    if not prefix:
        raise ValueError("delete_topics needs a run's own topic prefix, not the empty one")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    try:
        await admin.start()
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        for i in range(0, len(mine), 200):
            await admin.delete_topics(mine[i:i + 200], timeout_ms=30_000)
        return len(mine)
    except Exception as exc:
        print(f"warning: the topics {prefix}* were not deleted: {exc!r}", file=sys.stderr)
        return 0
    finally:
        await admin.close()
