"""Dependency outages: which dependency an error says is down, and one record of each outage per process.

    stage runner / HTTP edge ── an operation failed ──▶ unavailable_dependency(exc) ─▶ "kafka" | "postgres"
                                                                                      | "redis" | None
                             ──▶ Outages.down(who, dependency, exc)   first reporter: one ERROR line,
                                                                      cdp_outages +1, cdp_outage{dep} = 1
                             ──▶ Outages.up(who)                      last reporter back: one WARNING line
                                                                      with the length, cdp_outage{dep} = 0

A Kafka broker restart makes four stages and the HTTP edge fail at once; the operator gets one ERROR line
naming the dependency when it goes and one WARNING line when it is back, not one per stage, batch or
record. ``/readyz`` asks :meth:`Outages.paused` which stages are waiting for a dependency.

``None`` from :func:`unavailable_dependency` means the error is not a dependency being down (a bug, a bad
state): the caller logs it with its traceback.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field

from cdp_hub.errors import RetriableError
from cdp_hub.metrics import Metrics

__all__ = ["DEPENDENCIES", "Outages", "unavailable_dependency"]

log = logging.getLogger(__name__)

DEPENDENCIES = ("kafka", "postgres", "redis")
FLAP_SECONDS = 30.0
"""An outage that comes back this soon after it ended is the same outage (no second ERROR line): a stage
that does not use the dependency for every operation can look recovered between two failures."""

# Client libraries by the module their code lives in, and the cdp_hub modules that front them.
_MODULE_DEPENDENCY = (
    ("aiokafka", "kafka"), ("cdp_hub.bus", "kafka"),
    ("asyncpg", "postgres"), ("cdp_hub.store", "postgres"),
    ("redis", "redis"), ("fakeredis", "redis"), ("cdp_hub.hotstate", "redis"),
)
# asyncpg errors that mean the server or the connection is gone (not a bad statement). A server that rejects
# connections by its access rules (SQLSTATE 28000, pg_hba.conf "reject", as during a maintenance window)
# cannot be worked with either: the work waits for it like for a stopped server.
_PG_UNAVAILABLE = frozenset({
    "PostgresConnectionError", "CannotConnectNowError", "AdminShutdownError", "CrashShutdownError",
    "InterfaceError", "ConnectionDoesNotExistError", "TooManyConnectionsError", "ConnectionFailureError",
    "InternalClientError", "InvalidAuthorizationSpecificationError",
})
# redis-py errors that mean the server is gone or not serving yet.
_REDIS_UNAVAILABLE = frozenset({"ConnectionError", "TimeoutError", "BusyLoadingError"})


def _by_module(module: str) -> str | None:
    for prefix, dependency in _MODULE_DEPENDENCY:
        if module == prefix or module.startswith(prefix + "."):
            return dependency
    return None


def _frames_dependency(exc: BaseException) -> str | None:
    """The dependency whose client code raised ``exc`` (innermost such frame wins)."""
    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        dependency = _by_module(str(frame.f_globals.get("__name__", "")))
        if dependency is not None:
            found = dependency
    return found


def _one(exc: BaseException) -> str | None:
    cls = type(exc)
    names = {c.__name__ for c in cls.__mro__}
    dependency = getattr(exc, "dependency", None)
    if isinstance(exc, RetriableError) and isinstance(dependency, str):
        return dependency
    owner = _by_module(cls.__module__)
    if owner == "kafka":
        if getattr(exc, "retriable", False) or names & {"KafkaConnectionError", "KafkaTimeoutError",
                                                        "NodeNotReadyError", "RequestTimedOutError"}:
            return "kafka"
        return None
    if owner == "postgres":
        return "postgres" if names & _PG_UNAVAILABLE else None
    if owner == "redis":
        return "redis" if names & _REDIS_UNAVAILABLE else None
    if isinstance(exc, (OSError, TimeoutError)):
        # A refused connection or a timeout raised by the runtime: the client library on the stack names it.
        return _frames_dependency(exc)
    return None


def unavailable_dependency(exc: BaseException) -> str | None:
    """``"kafka"``, ``"postgres"`` or ``"redis"`` when ``exc`` (or an error it was raised from) says that
    dependency is unreachable or not serving; ``None`` for anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        dependency = _one(current)
        if dependency is not None:
            return dependency
        current = current.__cause__ or current.__context__
    return None


@dataclass
class _Outage:
    dependency: str
    started: float
    error: str
    reporters: set[str] = field(default_factory=set)


class Outages:
    """The dependency outages one process sees, reported by whoever met them (a stage, the HTTP edge)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self._open: dict[str, _Outage] = {}
        self._closed: dict[str, tuple[float, _Outage]] = {}  # dependency -> when it ended, the outage
        self._paused: dict[str, str] = {}  # reporter -> dependency it waits for

    def down(self, who: str, dependency: str, exc: BaseException) -> bool:
        """``who`` cannot work because ``dependency`` is down; True when this opened the outage (and logged
        its one ERROR line)."""
        previous = self._paused.get(who)
        if previous is not None and previous != dependency:
            self._release(who, previous)
        self._paused[who] = dependency
        outage = self._open.get(dependency)
        if outage is not None:
            outage.reporters.add(who)
            return False
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        ended = self._closed.pop(dependency, None)
        if ended is not None and time.monotonic() - ended[0] < FLAP_SECONDS:
            outage = self._open[dependency] = ended[1]
            outage.reporters.add(who)
            if self.metrics is not None:
                self.metrics.outage.labels(dependency).set(1)
            log.info("%s unavailable again (%s; %s): the same outage", dependency, error, who)
            return False
        self._open[dependency] = _Outage(dependency, time.monotonic(), error, {who})
        if self.metrics is not None:
            self.metrics.outages.labels(dependency).inc()
            self.metrics.outage.labels(dependency).set(1)
        log.error("%s unavailable (%s; first noticed by %s): pausing the work that needs it and retrying "
                  "with backoff; nothing is committed or acknowledged until it is back", dependency, error, who)
        return True

    def up(self, who: str) -> None:
        """``who`` works again (whatever it was waiting for is back)."""
        dependency = self._paused.pop(who, None)
        if dependency is not None:
            self._release(who, dependency)

    def _release(self, who: str, dependency: str) -> None:
        outage = self._open.get(dependency)
        if outage is None:
            return
        outage.reporters.discard(who)
        if outage.reporters:
            return
        del self._open[dependency]
        self._closed[dependency] = (time.monotonic(), outage)
        if self.metrics is not None:
            self.metrics.outage.labels(dependency).set(0)
        log.warning("%s is back after %.1fs; work resumed", dependency, time.monotonic() - outage.started)

    def waiting(self, who: str) -> str | None:
        """The dependency ``who`` is waiting for, if any."""
        return self._paused.get(who)

    def paused(self, prefix: str = "") -> dict[str, str]:
        """Reporters (whose name starts with ``prefix``) waiting for a dependency, and what they wait for."""
        return {who: dep for who, dep in self._paused.items() if who.startswith(prefix)}

    def open(self) -> dict[str, float]:
        """Dependencies down now, with the seconds they have been down."""
        now = time.monotonic()
        return {dep: now - o.started for dep, o in self._open.items()}
