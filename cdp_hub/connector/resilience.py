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


def upstream_text(response: httpx.Response, limit: int = 200) -> str:
    """What the source said about its refusal: the start of its body on one line (redacted by the error)."""
    if not response.content:
        return ""
    text = " ".join(response.text[:limit].split())
    return f"; the source said: {text!r}" if text else ""


def raise_for_status_action(response: httpx.Response, action: Action, *, what: str,
                            config: str = "the connector's config") -> None:
    """Raise the error that ``action`` calls for (nothing for OK/SKIP).

    ``what`` names the request (connector, stream, page, endpoint), ``config`` where its options are written
    (``[connectors.shop.config]``). Each message says what the source answered and what to do about it; a
    retriable one does not promise a retry (the last try's error is the final error).
    """
    status = response.status_code
    said = upstream_text(response)
    if action is Action.RETRY:
        if status == 429:
            todo = ("the source is rate-limiting this connector: lower rate_limit_per_second in "
                    f"{config} or run the sync less often")
        elif status >= 500:
            todo = "the source API is failing: check its status page; the next sync resumes from the checkpoint"
        else:
            todo = "a transient answer from the source; if it persists, check the source API"
        raise RetriableError(f"{what}: HTTP {status}{said}; {todo}", retry_after=retry_after_seconds(response))
    if action in (Action.CONFIG_ERROR, Action.REFRESH_AUTH):
        todo = {401: f"the credentials were rejected: check auth (key, token, client secret) in {config}",
                403: "the credentials lack permission for this endpoint: grant the API scope or role to this "
                     f"account, or use a token that has it (auth in {config})",
                404: f"not found: check base_url and the API version in {config}"}.get(
                    status, f"check {config}")
        raise ConfigurationError(f"{what}: HTTP {status}{said}; {todo}")
    if action is Action.FATAL:
        raise FatalError(f"{what}: HTTP {status}{said}; the source refused the request, so this sync stops: check "
                         f"the options in {config} (start_date, filters); if they are right, report it as a "
                         "connector bug with this line")


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
            text = str(exc) if what in str(exc) else f"{what}: {exc}"
            log.warning("%s; attempt %d of %d, retrying in %.2fs", text, state.attempt_number,
                        self.max_attempts, wait)

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(RetriableError),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return await retrying(fn)
        except RetriableError as exc:
            if self.max_attempts <= 1:
                raise
            # The final error: says that the tries are over, keeps the retry hint for the caller.
            raise RetriableError(f"{exc} (gave up after {self.max_attempts} attempts)",
                                 retry_after=exc.retry_after, dependency=exc.dependency) from exc


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
