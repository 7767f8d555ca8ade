"""What a connector does when an upstream API misbehaves: the status table, retries, and the rate limit.

    response ──▶ action_for(status) ──▶ OK            use it
                                    ├─▶ RETRY         RetriableError(retry_after) ─▶ tenacity: backoff + jitter,
                                    │                 or exactly Retry-After when the server names it
                                    ├─▶ REFRESH_AUTH  renew the token once, then CONFIG_ERROR
                                    ├─▶ CONFIG_ERROR  ConfigurationError: fix credentials/URL; no retry
                                    ├─▶ SKIP          log and skip this request's records; the sync goes on
                                    └─▶ FATAL         FatalError: stop the sync; a human has to look

Network errors (connection refused, timeouts, a dropped connection) are retried like a 503.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import TypeVar

import httpx
import tenacity

from cdp_hub.errors import ConfigurationError, FatalError, RetriableError

__all__ = [
    "DEFAULT_STATUS_ACTIONS",
    "Action",
    "RateLimiter",
    "RetryPolicy",
    "action_for",
    "raise_for_status_action",
    "retry_after_seconds",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Action(StrEnum):
    """What to do about a response."""

    OK = "ok"
    RETRY = "retry"
    REFRESH_AUTH = "refresh_auth"
    CONFIG_ERROR = "config_error"
    SKIP = "skip"
    FATAL = "fatal"


DEFAULT_STATUS_ACTIONS: Mapping[int, Action] = {
    400: Action.FATAL,          # our request is wrong: a bug or a bad parameter; retrying repeats it
    401: Action.REFRESH_AUTH,   # token expired (renew once) or credentials wrong (then a config error)
    403: Action.CONFIG_ERROR,   # the credentials lack a permission/scope
    404: Action.CONFIG_ERROR,   # wrong base URL, API version or account
    408: Action.RETRY,
    409: Action.RETRY,          # a concurrent update upstream; it settles
    410: Action.SKIP,           # the resource is gone for good: nothing to read
    422: Action.FATAL,
    423: Action.RETRY,
    425: Action.RETRY,
    429: Action.RETRY,          # rate limited: wait Retry-After
    500: Action.RETRY,
    502: Action.RETRY,
    503: Action.RETRY,
    504: Action.RETRY,
}
"""The default table; a stream overrides single entries with ``status_actions``."""


def action_for(status: int, overrides: Mapping[int, Action] | None = None) -> Action:
    """The action for an HTTP status: the stream's override, the default table, then by class."""
    if overrides and status in overrides:
        return overrides[status]
    if 200 <= status < 300:
        return Action.OK
    action = DEFAULT_STATUS_ACTIONS.get(status)
    if action is not None:
        return action
    return Action.RETRY if status >= 500 else Action.FATAL


def retry_after_seconds(response: httpx.Response, *, now: datetime | None = None) -> float | None:
    """The ``Retry-After`` header in seconds (it may be a number or an HTTP date), or ``None``."""
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def raise_for_status_action(response: httpx.Response, action: Action, *, what: str) -> None:
    """Raise the error that ``action`` calls for (nothing for OK/SKIP). ``what`` names the request."""
    status = response.status_code
    detail = response.text[:200].replace("\n", " ") if response.content else ""
    if action is Action.RETRY:
        raise RetriableError(f"{what}: HTTP {status} (will retry) {detail}".rstrip(),
                             retry_after=retry_after_seconds(response))
    if action in (Action.CONFIG_ERROR, Action.REFRESH_AUTH):
        hint = {401: "the credentials were rejected: check the token/key in the connector config",
                403: "the credentials lack permission for this resource: check the API scopes",
                404: "not found: check base_url and the API version in the connector config"}.get(
                    status, "check the connector config")
        raise ConfigurationError(f"{what}: HTTP {status}: {hint}")
    if action is Action.FATAL:
        raise FatalError(f"{what}: HTTP {status}: the request was refused; stopping this sync. {detail}".rstrip())


@dataclass
class RetryPolicy:
    """Retries of retriable failures: exponential backoff with jitter, or exactly the server's Retry-After.

    ``sleep`` is injectable so that tests observe the waits without sleeping them.
    """

    max_attempts: int = 5
    initial_wait: float = 1.0
    max_wait: float = 60.0
    jitter: float = 1.0
    max_retry_after: float = 600.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetriableError) and exc.retry_after is not None:
            return float(min(exc.retry_after, self.max_retry_after))
        attempt: int = state.attempt_number
        backoff = min(self.initial_wait * 2.0 ** (attempt - 1), self.max_wait)
        return float(backoff + random.uniform(0, self.jitter * self.initial_wait))

    async def call(self, fn: Callable[[], Awaitable[T]], *, what: str) -> T:
        """Run ``fn``, retrying :class:`RetriableError` up to ``max_attempts`` times in all."""

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning("%s: %s; attempt %d of %d, retrying in %.2fs", what, exc, state.attempt_number,
                        self.max_attempts, wait)

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(RetriableError),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(fn)


class RateLimiter:
    """A token bucket shared by every request of one connector instance (``rate`` requests per second).

    ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, rate: float | None, *, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.rate = rate
        self.capacity = float(burst if burst is not None else max(1, int(rate or 1)))
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait for a token; return how long this call waited."""
        if not self.rate:
            return 0.0
        async with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            wait = (1 - self._tokens) / self.rate
            await self._sleep(wait)
            self._tokens = 0.0
            self._updated = self._clock()
            return wait
