"""Waiting in pipeline tests: poll a condition until it holds or a timeout says the pipeline did not get there."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 60.0, period: float = 0.1) -> None:
    """Return once ``await predicate()`` is true; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():
            return
        await asyncio.sleep(period)
    raise AssertionError("condition not reached in time")
