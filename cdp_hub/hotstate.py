"""Hot state in Redis (or fakeredis for the embedded default): once-per-profile guards, frequency caps,
priority claims, hold-until windows and segment membership caches. Every key the hub uses is built and read here (key table: docs/operations.md,
"Redis keys"); the stages call the named methods, never the client.

Nothing here is the system of record: PostgreSQL is. Losing Redis loses counters and caches, never data.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from collections.abc import AsyncIterable, Sequence
from typing import Any

import redis.asyncio as aioredis

from cdp_hub.errors import ConfigurationError
from cdp_hub.lifecycle import AsyncLifecycle
from cdp_hub.redact import redact_url

__all__ = ["HotState"]

_FIRST_SIGHTINGS = """
local seen = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, '1', 'NX', 'EX', ARGV[1]) then seen[i] = 1 else seen[i] = 0 end
end
return seen
"""
"""KEYS: the seen-keys; ARGV[1]: their TTL. Returns 1 for each key set now, 0 for each that existed."""

_CLAIM_PRIORITY = """
local held = {}
for i, key in ipairs(KEYS) do held[i] = redis.call('GET', key) end
local lost, best, order = {}, {}, {}
for i, key in ipairs(KEYS) do
  local message, priority = ARGV[2 * i], ARGV[2 * i + 1]
  local beaten = false
  if held[i] then
    local bar = string.find(held[i], '|', 1, true)
    if string.sub(held[i], bar + 1) ~= message and tonumber(string.sub(held[i], 1, bar - 1)) > tonumber(priority) then
      beaten = true
    end
  end
  if beaten then
    lost[#lost + 1] = message
  elseif best[key] == nil then
    best[key] = {priority, message}
    order[#order + 1] = key
  elseif tonumber(priority) > tonumber(best[key][1]) then
    best[key] = {priority, message}
  end
end
for _, key in ipairs(order) do
  redis.call('SET', key, best[key][1] .. '|' .. best[key][2], 'EX', ARGV[1])
end
return lost
"""
"""KEYS: a priority key per claim; ARGV[1]: the window in seconds, then message id and priority per claim.
Judges every claim against the keys as they were before the batch, then the best claim per key takes it.
Returns the message ids that lost."""


_WITHIN_CAPS = """
local now, scopes = ARGV[1], tonumber(ARGV[2])
local keys = {}
for key in string.gmatch(ARGV[3 + 2 * scopes], '[^\\n]+') do keys[#keys + 1] = key end
local sets, counts, added = {}, {}, {}
local out = {}
for item in string.gmatch(ARGV[4 + 2 * scopes], '[^\\n]+') do
  local bar = string.find(item, '|', 1, true)
  local mid = string.sub(item, bar + 1)
  local caps = {}
  for k, s, limit in string.gmatch(string.sub(item, 1, bar - 1), '(%d+),(%d+),(%d+)') do
    k = tonumber(k)
    if sets[k] == nil then
      s = tonumber(s)
      redis.call('ZREMRANGEBYSCORE', keys[k], '-inf', ARGV[1 + 2 * s])
      local members = redis.call('ZRANGE', keys[k], 0, -1)
      local set = {}
      for _, m in ipairs(members) do set[m] = true end
      sets[k], counts[k] = set, #members
    end
    caps[#caps + 1] = {k, tonumber(s), tonumber(limit)}
  end
  local full = 0
  for j, cap in ipairs(caps) do
    if not sets[cap[1]][mid] and counts[cap[1]] >= cap[3] then
      full = j
      break
    end
  end
  if full == 0 then
    for _, cap in ipairs(caps) do
      local k = cap[1]
      if not sets[k][mid] then
        if added[k] == nil then added[k] = {cap[2], counts[k] == 0} end
        sets[k][mid], counts[k] = true, counts[k] + 1
        redis.call('ZADD', keys[k], now, mid)
      end
    end
  end
  out[#out + 1] = full
end
for k, how in pairs(added) do
  local ttl = ARGV[2 + 2 * how[1]]
  if how[2] then
    redis.call('EXPIRE', keys[k], ttl)  -- a counter this batch created: no TTL yet
  elseif redis.call('EXPIRE', keys[k], ttl, 'GT') == 0 then
    redis.call('EXPIRE', keys[k], ttl, 'NX')
  end
end
return table.concat(out, ',')
"""
"""ARGV[1]: now (the score of a counted message); ARGV[2]: the number of scopes, then per scope its cutoff
(members scored at or below it have left the window) and its TTL; then the cap counters' keys, one per line;
then the messages, one per line, ``k,s,limit;k,s,limit|message id`` (key index, scope index and limit of each
of its caps, 1-based). Judges the messages in order against the counters as trimmed, counting each that fits
in all its caps. Returns per message 0 (counted) or the 1-based index of its first full cap, comma-separated.

Keys and messages travel as two arguments, and the verdicts come back as one string: a chunk of a campaign is
thousands of messages with a few counters each, and redis-py packed every argument and parsed every reply
line in Python (most of the sender's CPU in the caps step). The keys are therefore not in KEYS: the script
runs on a standalone Redis (and its replicas), as the hub's other batch scripts, which touch many profiles'
keys in one call and so could not run on Redis Cluster anyway."""

class HotState(AsyncLifecycle):
    """The hub's Redis state behind named operations. ``url`` is ``redis://...`` or ``fakeredis://``; every key
    starts with ``prefix``. ``redis`` (the raw client) is for tests and tooling, not for stages."""

    def __init__(self, url: str = "fakeredis://", *, prefix: str = "cdp:") -> None:
        self.url = url
        self.prefix = prefix
        self._client: Any = None
        self._first_sightings: Any = None
        self._claim_priority: Any = None
        self._within_caps: Any = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("HotState is not started")
        return self._client  # type: ignore[no-any-return]

    @property
    def backend(self) -> str:
        return "fakeredis" if self.url.startswith("fakeredis") else "redis"

    @property
    def dependency(self) -> str:
        """The dependency behind this state, as the outage board names it."""
        return "redis"

    async def start(self) -> None:
        if self._client is not None:
            return
        if self.url.startswith("fakeredis"):
            try:
                from fakeredis import FakeAsyncRedis
            except ImportError:  # pragma: no cover
                raise ConfigurationError("redis_url='fakeredis://' needs: pip install 'cdp-hub[embedded]'") from None
            # The embedded default runs the hub's Lua scripts (first_sightings) with lupa: fakeredis[lua].
            self._client = FakeAsyncRedis(decode_responses=False)
        else:
            self._client = aioredis.Redis.from_url(self.url, decode_responses=False)
        try:
            await self._client.ping()
        except (OSError, aioredis.RedisError) as exc:
            await self.stop()
            raise ConfigurationError(
                f"cannot reach Redis at {redact_url(self.url)} ({type(exc).__name__}: {exc}); is it running, "
                "and are redis_url's host, port and password right?"
            ) from exc

    async def stop(self) -> None:
        self._first_sightings = None
        self._claim_priority = None
        self._within_caps = None
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def key(self, *parts: str) -> str:
        """``<prefix>part:part:...``: the one way a key is named."""
        return self.prefix + ":".join(parts)

    async def ping(self) -> None:
        """One round trip to Redis (the readiness probe); raises when it does not answer."""
        await self.redis.ping()

    # -- general primitives under a caller-named key (<prefix><key>); for extensions, the hub uses none ------

    async def claim(self, key: str, ttl_seconds: int) -> bool:
        """Set ``key`` if absent (with a TTL); True when this caller got it."""
        return bool(await self.redis.set(self.key(key), b"1", nx=True, ex=ttl_seconds))

    async def incr_window(self, key: str, ttl_seconds: int, amount: int = 1) -> int:
        """Increment a counter that expires ``ttl_seconds`` after its first increment."""
        full = self.key(key)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incrby(full, amount)
        pipe.expire(full, ttl_seconds, nx=True)
        value, _ = await pipe.execute()
        return int(value)

    async def get_int(self, key: str) -> int:
        """The value of a counter; 0 when it is absent (never set, or expired)."""
        value = await self.redis.get(self.key(key))
        return int(value) if value is not None else 0

    # -- once per profile: <prefix>once:<scenario>:<profile_id> = the message id that took it ---------------

    def once_key(self, scenario: str, profile_id: str) -> str:
        return self.key("once", scenario, profile_id)

    async def claim_once(self, claims: Sequence[tuple[str, str, str]]) -> set[str]:
        """Claim ``(scenario, profile_id, message_id)`` once-per-profile guards; return the message ids whose
        guard another message already holds.

        SET NX GET with the message id as value, one pipelined round trip for the batch: a replay of the
        same intent passes (the key holds its own id), another intent does not. The keys have no TTL.
        """
        if not claims:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for scenario, profile_id, message_id in claims:
            pipe.set(self.once_key(scenario, profile_id), message_id.encode(), nx=True, get=True)
        owners = await pipe.execute()
        return {message_id for (_, _, message_id), owner in zip(claims, owners, strict=True)
                if isinstance(owner, bytes) and owner.decode() != message_id}

    # -- dedupe windows at the edge: <prefix>seen:<scope>:<id> = 1, expiring after the window ---------------

    def seen_key(self, scope: str, item: str) -> str:
        return self.key("seen", scope, item)

    async def first_sightings(self, scope: str, items: Sequence[str], ttl_seconds: int) -> list[bool]:
        """Mark ``items`` (tracking message ids, ids of events the hub derives from a callback) as seen in
        ``scope`` for ``ttl_seconds``; True for each one not seen before in that window.

        SET NX EX for each item inside one Lua script: one command for the batch, atomic, and a quarter of the
        client CPU of a pipeline of SETs (bench/ingest_http.py). An item twice in ``items`` is True only the first
        time. A caller that then fails to make the items durable calls :meth:`forget_sightings`, so a retry is
        not dropped.
        """
        if not items:
            return []
        if self._first_sightings is None:
            self._first_sightings = self.redis.register_script(_FIRST_SIGHTINGS)
        keys = [self.seen_key(scope, item) for item in items]
        return [bool(ok) for ok in await self._first_sightings(keys=keys, args=[max(1, ttl_seconds)])]

    async def forget_sightings(self, scope: str, items: Sequence[str]) -> None:
        """Undo :meth:`first_sightings` for ``items`` (their publication failed; the sender will retry)."""
        if items:
            await self.redis.delete(*(self.seen_key(scope, item) for item in items))

    # -- frequency caps: <prefix>cap:<scenario or *>:<profile_id> = sorted set of message ids by send time --

    def cap_key(self, scope: str, profile_id: str) -> str:
        return self.key("cap", scope, profile_id)

    async def within_cap(self, scope: str, profile_id: str, message_id: str, *, limit: int, window: float,
                         now: float) -> bool:
        """Count ``message_id`` against the cap of ``scope`` (a scenario id, or ``*`` for all marketing) for
        the profile: False when ``limit`` other messages were counted in the ``window`` seconds before
        ``now`` (a Unix time). A message counted before passes again, so a replay never uses up a cap twice."""
        key = self.cap_key(scope, profile_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zremrangebyscore(key, "-inf", now - window)
        pipe.zscore(key, message_id)
        pipe.zcard(key)
        _, already, count = await pipe.execute()
        if already is not None:
            return True
        if count >= limit:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(key, {message_id: now})
        pipe.expire(key, int(window) + 60)
        await pipe.execute()
        return True

    async def within_caps(self, caps: Sequence[tuple[str, int, float]], profile_id: str, message_id: str, *,
                          now: float) -> str | None:
        """Count ``message_id`` against every ``(scope, limit, window seconds)`` cap of the profile at once:
        the scope of the first cap that is full (nothing is counted then), or None when the message fits
        them all and is counted in each. A message counted before passes again (a replay)."""
        if not caps:
            return None
        pipe = self.redis.pipeline(transaction=True)
        for scope, _, window in caps:
            key = self.cap_key(scope, profile_id)
            pipe.zremrangebyscore(key, "-inf", now - window)
            pipe.zscore(key, message_id)
            pipe.zcard(key)
        replies = await pipe.execute()
        for index, (scope, limit, _) in enumerate(caps):
            already, count = replies[index * 3 + 1], replies[index * 3 + 2]
            if already is None and count >= limit:
                return scope
        pipe = self.redis.pipeline(transaction=True)
        for scope, _, window in caps:
            key = self.cap_key(scope, profile_id)
            pipe.zadd(key, {message_id: now})
            pipe.expire(key, int(window) + 60, gt=True)
            pipe.expire(key, int(window) + 60, nx=True)
        await pipe.execute()
        return None

    async def within_caps_batch(self, items: Sequence[tuple[Sequence[tuple[str, int, float]], str, str]], *,
                                now: float) -> list[str | None]:
        """:meth:`within_caps` for a batch of ``(caps, profile_id, message_id)`` in one round trip (one Lua
        script, :data:`_WITHIN_CAPS`): the counters are trimmed and read once, the batch is judged in order (a
        message counts against the ones after it), and the counted messages are written, all inside the
        script. One writer per profile is assumed (the stage that owns the profile's partition)."""
        if not any(caps for caps, _, _ in items):
            return [None] * len(items)
        return await self.within_caps_chunk(items, now=now, per_call=max(1, len(items)))

    async def within_caps_chunk(self, items: Sequence[tuple[Sequence[tuple[str, int, float]], str, str]], *,
                                now: float, per_call: int = 500) -> list[str | None]:
        """:meth:`within_caps_batch` (the same verdicts and counters) as Lua scripts of about ``per_call``
        messages each, sent at once: one command per script instead of five per counter, and a small fraction
        of the client's CPU (the campaign sender judges thousands of messages a second; with a pipeline,
        redis-py's packing and parsing took nine tenths of its time). A profile's messages all go to the same
        script, in their order, so the scripts share no counter and may run in any order. One writer per
        profile is assumed. Each script holds Redis for a few milliseconds."""
        if self._within_caps is None:
            self._within_caps = self.redis.register_script(_WITHIN_CAPS)
        parts = max(1, -(-len(items) // per_call))
        split: list[list[int]] = [[] for _ in range(parts)]
        for index, (_, profile_id, _) in enumerate(items):
            split[zlib.crc32(profile_id.encode()) % parts if parts > 1 else 0].append(index)
        verdicts: list[str | None] = [None] * len(items)

        async def judge(indexes: list[int]) -> None:
            keys: dict[str, int] = {}
            scopes: dict[tuple[str, float], int] = {}
            encoded: list[str] = []
            for index in indexes:
                caps, profile_id, message_id = items[index]
                fields = []
                for scope, limit, window in caps:
                    k = keys.setdefault(self.cap_key(scope, profile_id), len(keys) + 1)
                    s = scopes.setdefault((scope, window), len(scopes) + 1)
                    fields.append(f"{k},{s},{int(limit)}")
                encoded.append(";".join(fields) + "|" + message_id)
            if not keys:
                return
            args: list[str | int] = [repr(now), len(scopes)]
            for _, window in scopes:
                args += [repr(now - window), int(window) + 60]
            lines = "\n".join(keys), "\n".join(encoded)
            if any("\n" in text for text in encoded) or lines[0].count("\n") != len(keys) - 1:
                raise ValueError("a cap key or message id contains a line break")
            reply = await self._within_caps(keys=[], args=[*args, *lines])
            verdict_of = (reply.decode() if isinstance(reply, bytes) else str(reply)).split(",")
            for index, full in zip(indexes, verdict_of, strict=True):
                if full != "0":
                    verdicts[index] = items[index][0][int(full) - 1][0]

        await asyncio.gather(*(judge(indexes) for indexes in split if indexes))
        return verdicts

    # -- priorities: <prefix>prio:<profile_id> = "<priority>|<message_id>" of the window's best message ------

    def priority_key(self, profile_id: str) -> str:
        return self.key("prio", profile_id)

    async def claim_priority(self, claims: Sequence[tuple[str, str, int]], window_seconds: int) -> set[str]:
        """``(profile_id, message_id, priority)`` marketing messages: return the message ids that lose to a
        higher-priority message of the same profile within the window. A winner takes the key (for the
        window); the same message again (a replay) passes; equal priorities both pass."""
        if not claims:
            return set()
        # One Lua script: one round trip and a fraction of the client CPU of two pipelines (the triggers
        # stage claims for every marketing message it gates).
        if self._claim_priority is None:
            self._claim_priority = self.redis.register_script(_CLAIM_PRIORITY)
        args: list[str | int] = [max(1, window_seconds)]
        for _, message_id, priority in claims:
            args += [message_id, int(priority)]
        lost = await self._claim_priority(keys=[self.priority_key(p) for p, _, _ in claims], args=args)
        return {m.decode() if isinstance(m, bytes) else str(m) for m in lost}

    # -- hold-until windows: <prefix>dedupe:<scenario>:<profile_id>:<key> = the message id that took it ------

    def dedupe_key(self, scenario: str, profile_id: str, key: str) -> str:
        return self.key("dedupe", scenario, profile_id, key)

    async def claim_dedupe(self, claims: Sequence[tuple[str, str, str, str, int]]) -> set[str]:
        """``(scenario, profile_id, key, message_id, window seconds)``: one message per key per window.
        Return the message ids whose key another message holds (SET NX GET EX, one pipelined trip)."""
        if not claims:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for scenario, profile_id, key, message_id, window in claims:
            pipe.set(self.dedupe_key(scenario, profile_id, key), message_id.encode(), nx=True, get=True,
                     ex=max(1, window))
        owners = await pipe.execute()
        return {claim[3] for claim, owner in zip(claims, owners, strict=True)
                if isinstance(owner, bytes) and owner.decode() != claim[3]}

    async def move_dedupe(self, moves: Sequence[tuple[str, str]], scenarios: Sequence[str]) -> None:
        """Merges: a loser's profile-keyed hold-until windows of ``scenarios`` follow the survivor, unless the
        survivor has its own (which then stands)."""
        if not moves or not scenarios:
            return
        pairs = [(self.dedupe_key(s, loser, "profile"), self.dedupe_key(s, survivor, "profile"))
                 for loser, survivor in moves for s in scenarios]
        pipe = self.redis.pipeline(transaction=False)
        for source, _ in pairs:
            pipe.get(source)
            pipe.pttl(source)
        replies = await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        for index, (source, target) in enumerate(pairs):
            value, ttl = replies[index * 2], replies[index * 2 + 1]
            if value is not None and isinstance(ttl, int) and ttl > 0:
                pipe.set(target, value, nx=True, px=ttl)
                pipe.delete(source)
        await pipe.execute()

    async def move_caps(self, moves: Sequence[tuple[str, str]], scopes: Sequence[str]) -> None:
        """Merges: the losers' cap counters of ``scopes`` follow the survivor (``(loser, survivor)`` pairs);
        the sets are unioned, so the survivor's caps count the losers' messages too."""
        if not moves or not scopes:
            return
        pipe = self.redis.pipeline(transaction=False)
        for loser, survivor in moves:
            for scope in scopes:
                source, target = self.cap_key(scope, loser), self.cap_key(scope, survivor)
                pipe.zunionstore(target, [target, source], aggregate="MAX")
                pipe.delete(source)
                pipe.expire(target, 35 * 86400, nx=True)  # the counters' own TTLs are renewed by new messages
        await pipe.execute()

    async def copy_policy_state(self, source: HotState, profile_ids: Sequence[str], *, cap_scopes: Sequence[str],
                                scenarios: Sequence[str],
                                dedupe_keys: Sequence[tuple[str, str, str]] = ()) -> int:
        """Copy from ``source`` what the contact policy holds about these profiles: their cap counters of
        ``cap_scopes``, their priority claim, their once-per and profile-keyed hold-until claims of
        ``scenarios``, and the hold-until claims keyed by an event value that ``dedupe_keys`` names
        (``(scenario, profile_id, key)``, e.g. the cart ids of the events a dry run replays: finding the others
        would mean scanning the whole keyspace), with the time each has left. ``source`` is only read. For a
        dry run that judges against the deployment's real counters (``scenarios simulate --live-state``) while
        writing to this one. Returns how many keys were copied."""
        names = list(dict.fromkeys([*(parts for pid in profile_ids for parts in (
            *(("cap", scope, pid) for scope in cap_scopes), ("prio", pid),
            *(("once", s, pid) for s in scenarios), *(("dedupe", s, pid, "profile") for s in scenarios))),
            *(("dedupe", s, pid, key) for s, pid, key in dedupe_keys)]))
        if not names:
            return 0
        keys = [source.key(*parts) for parts in names]  # the names of cap_key, priority_key, once_key, dedupe_key
        target = {source.key(*parts): self.key(*parts) for parts in names}
        pipe = source.redis.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
            pipe.pttl(key)
        kinds = await pipe.execute()
        found = [(key, kind.decode() if isinstance(kind, bytes) else str(kind), ttl)
                 for key, kind, ttl in zip(keys, kinds[0::2], kinds[1::2], strict=True)
                 if kind not in (b"none", "none")]
        pipe = source.redis.pipeline(transaction=False)
        for key, kind, _ in found:
            if kind == "zset":
                pipe.zrange(key, 0, -1, withscores=True)
            else:
                pipe.get(key)
        values = await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        copied = 0
        for (key, kind, ttl), value in zip(found, values, strict=True):
            to = target[key]
            if kind == "zset" and value:
                pipe.zadd(to, {member: score for member, score in value})
            elif kind == "string" and value is not None:
                pipe.set(to, value)
            else:
                continue  # a type the policy does not write: not its state
            if isinstance(ttl, int) and ttl > 0:
                pipe.pexpire(to, ttl)
            copied += 1
        await pipe.execute()
        return copied

    # -- segment membership caches: <prefix>segment:<segment_id> = set of profile ids ----------------------

    def segment_key(self, segment_id: str) -> str:
        return self.key("segment", segment_id)

    async def replace_segment(self, segment_id: str, chunks: AsyncIterable[Sequence[str]]) -> int:
        """Replace a segment's cached members with the profile ids in ``chunks`` (one SADD per chunk into a
        private key, then RENAME: readers see the old set or the new one, never a half-built one). Returns
        the member count; with none the key is deleted."""
        key = self.segment_key(segment_id)
        tmp = f"{key}:building:{uuid.uuid4().hex}"
        count = 0
        async for chunk in chunks:
            if chunk:
                await self.redis.sadd(tmp, *chunk)
                count += len(chunk)
        if count:
            await self.redis.rename(tmp, key)
        else:
            await self.redis.delete(key)
        return count

    async def update_segments(self, entered: Sequence[tuple[str, str]] = (),
                              exited: Sequence[tuple[str, str]] = ()) -> None:
        """Add and remove ``(segment_id, profile_id)`` cache memberships, in one pipelined round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for segment_id, profile_id in entered:
            pipe.sadd(self.segment_key(segment_id), profile_id)
        for segment_id, profile_id in exited:
            pipe.srem(self.segment_key(segment_id), profile_id)
        await pipe.execute()

    async def is_segment_member(self, segment_id: str, profile_id: str) -> bool:
        """Whether the cache has the profile in the segment."""
        return bool(await self.redis.sismember(self.segment_key(segment_id), profile_id))
