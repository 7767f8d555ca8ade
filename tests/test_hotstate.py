"""Hot state: the same tests against real Redis and the embedded fakeredis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

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
    await state.update_segments(entered=[("vip", "a"), ("vip", "b")])
    await state.update_segments(exited=[("vip", "a")])
    assert not await state.is_segment_member("vip", "a")
    assert await state.is_segment_member("vip", "b")


async def test_stop_is_idempotent(state: HotState) -> None:
    await state.stop()
    await state.stop()
    with pytest.raises(RuntimeError):
        _ = state.redis
    await state.start()


async def test_unreachable_redis_is_a_configuration_error() -> None:
    # The message names the setting to check and the address without its password; no developer hint.
    hs = HotState("redis://:S3cretPass@127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match=r"redis_url") as caught:
        await hs.start()
    assert "S3cretPass" not in str(caught.value)
    assert "redis://:***@127.0.0.1:1/0" in str(caught.value)
    assert "services.sh" not in str(caught.value)


async def test_claim_once_lets_the_same_intent_through(state: HotState) -> None:
    assert await state.claim_once([]) == set()
    assert await state.claim_once([("welcome", "p1", "m1"), ("welcome", "p2", "m2")]) == set()
    # The same intent again (a replay) passes; another intent for the same slot is taken.
    claims = [("welcome", "p1", "m1"), ("welcome", "p1", "m3"), ("promo", "p1", "m4")]
    assert await state.claim_once(claims) == {"m3"}
    assert await state.redis.get(state.once_key("welcome", "p1")) == b"m1"
    assert await state.redis.ttl(state.once_key("welcome", "p1")) == -1


async def test_within_cap_counts_message_ids_in_the_window(state: HotState) -> None:
    def check(message_id: str, now: float) -> Any:
        return state.within_cap("*", "p1", message_id, limit=2, window=3600, now=now)

    assert await check("m1", 1000)
    assert await check("m2", 1001)
    assert not await check("m3", 1002)
    assert await check("m1", 1003)  # counted already: a replay never uses up the cap
    assert 0 < await state.redis.ttl(state.cap_key("*", "p1")) <= 3660
    assert await check("m3", 1000 + 3601)  # m1 and m2 are out of the window
    assert await state.redis.zcard(state.cap_key("*", "p1")) == 1


async def test_within_caps_batch_judges_in_order_in_one_trip(state: HotState) -> None:
    day, week = 86400.0, 7 * 86400.0
    scenario_cap, profile_cap = ("s1", 1, day), ("*", 2, week)
    verdicts = await state.within_caps_batch([
        ([scenario_cap, profile_cap], "p1", "m1"),  # fits both, counted in both
        ([scenario_cap, profile_cap], "p1", "m2"),  # the scenario's cap is full now (m1 counts)
        ([profile_cap], "p1", "m3"),  # the profile's second message: fits
        ([profile_cap], "p1", "m4"),  # the third: full
        ([], "p1", "m5"),  # no caps (a transactional message)
        ([scenario_cap], "p2", "m6"),  # another profile's counters
        ([scenario_cap, profile_cap], "p1", "m1"),  # the same message again (a replay) passes
    ], now=1000.0)
    assert verdicts == [None, "s1", None, "*", None, None, None]
    members = await state.redis.zrange(state.cap_key("*", "p1"), 0, -1, withscores=True)
    assert members == [(b"m1", 1000.0), (b"m3", 1000.0)]  # m2 and m4 held back count nowhere
    assert await state.redis.zrange(state.cap_key("s1", "p1"), 0, -1) == [b"m1"]
    assert 0 < await state.redis.ttl(state.cap_key("*", "p1")) <= week + 60
    assert day < await state.redis.ttl(state.cap_key("*", "p1"))
    # A day later the scenario's counter has emptied; the profile's week still holds m1 and m3.
    later = await state.within_caps_batch([([scenario_cap], "p1", "m7"), ([profile_cap], "p1", "m8")],
                                          now=1000.0 + day + 1)
    assert later == [None, "*"]
    assert await state.within_caps_batch([], now=1.0) == []
    assert await state.within_caps_batch([([], "p1", "m9")], now=1.0) == [None]


async def test_replace_segment_swaps_the_whole_set(state: HotState) -> None:
    async def chunks(*parts: list[str]) -> AsyncIterator[list[str]]:
        for part in parts:
            yield part

    await state.update_segments(entered=[("vip", "old")])
    assert await state.replace_segment("vip", chunks(["a", "b"], ["c"])) == 3
    assert await state.redis.smembers(state.segment_key("vip")) == {b"a", b"b", b"c"}
    assert [k async for k in state.redis.scan_iter(match=state.segment_key("vip") + ":*")] == []
    assert await state.replace_segment("vip", chunks()) == 0
    assert not await state.redis.exists(state.segment_key("vip"))


async def test_ping(state: HotState) -> None:
    await state.ping()
    await state.stop()
    with pytest.raises(RuntimeError):
        await state.ping()
    await state.start()


async def test_first_sightings_within_a_window_and_forgetting_them(state: HotState) -> None:
    assert await state.first_sightings("web", ["m1", "m2", "m1"], 60) == [True, True, False]
    assert await state.first_sightings("web", ["m2", "m3"], 60) == [False, True]
    assert await state.first_sightings("app", ["m1"], 60) == [True]  # another source: another message
    assert 0 < await state.redis.ttl(state.seen_key("web", "m1")) <= 60
    await state.forget_sightings("web", ["m3"])  # its publication failed: the retry must get through
    assert await state.first_sightings("web", ["m3"], 60) == [True]
    assert await state.first_sightings("web", [], 60) == []


async def test_claim_priority_the_best_of_a_window_wins(state: HotState) -> None:
    # One batch is judged against the window as it was before it (the stage settles a batch among itself);
    # the best claim of each profile takes the window.
    lost = await state.claim_priority([("p1", "m-low", 5), ("p1", "m-high", 10), ("p2", "a", 3), ("p2", "b", 3)],
                                      window_seconds=60)
    assert lost == set()
    # A later batch: a lower priority loses to the held one, the held message itself passes (a replay),
    # a higher one wins and takes the key.
    assert await state.claim_priority([("p1", "m-later", 7), ("p1", "m-high", 10)], window_seconds=60) == {"m-later"}
    assert await state.claim_priority([("p1", "m-top", 20)], window_seconds=60) == set()
    assert await state.claim_priority([("p1", "m-high", 10)], window_seconds=60) == {"m-high"}
    assert await state.claim_priority([], window_seconds=60) == set()


async def test_within_caps_chunk_is_within_caps_batch_in_one_script(state: HotState) -> None:
    """The campaign sender's Lua cap check gives the batch check's verdicts and leaves the same counters: random
    chunks over a few profiles, three caps (two windows on one profile-wide scope, one per campaign), replays
    of counted messages, a profile twice in a batch, time moving past windows, batches split into scripts."""
    import random

    twin = HotState(state.url, prefix=state.prefix + "twin:")
    await twin.start()
    try:
        rng = random.Random(14)
        profiles = [f"p{i}" for i in range(30)]
        caps_sets: list[list[tuple[str, int, float]]] = [
            [("*:1d", 2, 86400.0), ("*:7d", 3, 7 * 86400.0)],
            [("campaign:spring", 1, 3600.0), ("*:1d", 2, 86400.0), ("*:7d", 3, 7 * 86400.0)],
            [],
        ]
        now = 1_780_000_000.25
        sent: list[str] = []
        verdicts: list[str | None] = []
        for round_ in range(25):
            now += rng.choice([1.5, 600.0, 3601.0, 86400.0])
            chosen = rng.sample(profiles, 12)
            chosen += rng.choices(chosen, k=6)  # a profile twice in a batch: judged in order
            items = []
            for n, pid in enumerate(chosen):
                mid = rng.choice(sent) if sent and rng.random() < 0.2 else f"m{round_}-{n}"
                sent.append(mid)
                items.append((caps_sets[rng.randrange(3)], pid, mid))
            batch = await state.within_caps_batch(items, now=now)
            chunk = await twin.within_caps_chunk(items, now=now, per_call=rng.choice([5, 1000]))
            assert chunk == batch, round_
            verdicts += chunk
        assert {v for v in verdicts} == {None, "*:1d", "*:7d", "campaign:spring"}, "every cap was full some time"
        for pid in profiles:
            for scope in ("*:1d", "*:7d", "campaign:spring"):
                mine = await twin.redis.zrange(twin.cap_key(scope, pid), 0, -1, withscores=True)
                theirs = await state.redis.zrange(state.cap_key(scope, pid), 0, -1, withscores=True)
                assert mine == theirs, (pid, scope)
                ttl, twin_ttl = await state.redis.ttl(state.cap_key(scope, pid)), await twin.redis.ttl(
                    twin.cap_key(scope, pid))
                assert abs(ttl - twin_ttl) <= 2, (pid, scope, ttl, twin_ttl)
    finally:
        keys = [k async for k in twin.redis.scan_iter(match=twin.prefix + "*")]
        if keys:
            await twin.redis.delete(*keys)
        await twin.stop()


async def test_within_caps_chunk_names_the_first_full_cap(state: HotState) -> None:
    caps = [("campaign:x", 1, 3600.0), ("*:1d", 2, 86400.0)]
    now = 1_780_000_000.0
    assert await state.within_caps_chunk([(caps, "p", "m1"), (caps, "q", "m2")], now=now) == [None, None]
    assert await state.within_caps_chunk([(caps, "p", "m3"), (caps, "p", "m1"), ([], "p", "m4")], now=now) == [
        "campaign:x", None, None]
    assert await state.within_caps_chunk([(caps, "p", "m5")], now=now + 3601) == [None]
    assert await state.within_caps_chunk([(caps, "p", "m6")], now=now + 7200) == ["campaign:x"]
    assert await state.within_caps_chunk([(caps, "p", "m7")], now=now + 7201 + 3600) == ["*:1d"]
