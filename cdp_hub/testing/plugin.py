"""The ``cdp_hub`` pytest plugin (entry point ``pytest11``): fixtures for the conformance kit.

Installed with cdp-hub, so a plugin package's tests get them without a conftest:

- ``connector_hub``: a started hub for connector tests. In a project that defines a ``hub`` fixture (cdp-hub's
  own tests, on real PostgreSQL, Redis and Kafka) it is that hub; elsewhere an in-memory bus only, so a
  third-party connector's tests need no services.

It also re-exports the kit's base classes, so ``from cdp_hub.testing.plugin import ConnectorTests`` works.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from cdp_hub.config import Settings
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.testing.connectors import ConnectorTests

__all__ = ["ConnectorTests", "cdp_hub_memory_hub", "connector_hub", "memory_hub"]

try:
    from cdp_hub.testing.channels import ChannelTests

    __all__ += ["ChannelTests"]
except ModuleNotFoundError as exc:  # that part of the kit is not there; the rest works
    if exc.name != "cdp_hub.testing.channels":
        raise


async def memory_hub() -> Hub:
    """A hub whose bus is in-process and started; no database, no Redis (the store is never opened)."""
    hub = Hub(Settings(bus="memory", redis_url="fakeredis://"), metrics=Metrics())
    await hub.bus.start()
    await hub.bus.ensure_topics(hub.topics.all())
    return hub


@pytest_asyncio.fixture
async def cdp_hub_memory_hub() -> AsyncIterator[Hub]:
    """A started :func:`memory_hub`, stopped afterwards."""
    hub = await memory_hub()
    try:
        yield hub
    finally:
        await hub.bus.stop()
        await hub.http.aclose()


@pytest.fixture
def connector_hub(request: pytest.FixtureRequest) -> Any:
    """The project's ``hub`` fixture when there is one, else ``cdp_hub_memory_hub``.

    A plain fixture on purpose: it picks the other fixture by name, outside any running event loop, so
    that a project's session fixtures (which may run their own loop) set up normally.
    """
    try:
        return request.getfixturevalue("hub")
    except pytest.FixtureLookupError:
        return request.getfixturevalue("cdp_hub_memory_hub")
