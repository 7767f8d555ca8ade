"""Hot state: the same tests against real Redis and the embedded fakeredis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from cdp_hub.errors import ConfigurationError
from cdp_hub.hotstate import HotState


@pytest.fixture(params=["redis", "fakeredis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[HotState]:
    if request.param == "redis":
        hs = HotState(request.getfixturevalue("redis_url"), prefix=f"t{uuid.uuid4().hex[:8]}:")
    else:
        hs = HotState("fakeredis://", prefix="t:")
    await hs.start()
    yield hs
    keys = [k async for k in hs.redis.scan_iter(match=hs.prefix + "*")]
    if keys:
        await hs.redis.delete(*keys)
    await hs.stop()


async def test_claim_is_first_come(state: HotState) -> None:
    assert await state.claim("job:1", 60)
    assert not await state.claim("job:1", 60)
    assert await state.redis.ttl(state.key("job:1")) > 0


async def test_window_counter_expires(state: HotState) -> None:
    assert await state.incr_window("cap:p1", 60) == 1
    assert await state.incr_window("cap:p1", 60, 2) == 3
    assert await state.get_int("cap:p1") == 3
    ttl = await state.redis.ttl(state.key("cap:p1"))
    assert 0 < ttl <= 60


async def test_sets(state: HotState) -> None:
    await state.set_members("seg:vip", add=["a", "b"])
    await state.set_members("seg:vip", remove=["a"])
    assert not await state.is_member("seg:vip", "a")
    assert await state.is_member("seg:vip", "b")


async def test_stop_is_idempotent(state: HotState) -> None:
    await state.stop()
    await state.stop()
    with pytest.raises(RuntimeError):
        _ = state.redis
    await state.start()


async def test_unreachable_redis_is_a_configuration_error() -> None:
    hs = HotState("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match=r"scripts/services\.sh up"):
        await hs.start()
