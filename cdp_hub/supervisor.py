"""``cdp-hub run --processes auto|N``: one command that uses every core, as supervised worker processes.

    cdp-hub run --processes auto                 cdp-hub run --processes 3
      ├─ worker "dlq"       + HTTP API + jobs      ├─ worker "all-1"  every stage + HTTP API + jobs
      ├─ worker "resolver"  --stage resolver       ├─ worker "all-2"  every stage
      ├─ worker "triggers"                         └─ worker "all-3"  every stage
      ├─ worker "delivery"
      └─ (cores beyond four: more resolver, triggers and delivery workers)

Each worker is ``cdp-hub run`` in a process of its own (a Python process uses one core: the stages of one
process share it). Workers of a stage are members of that stage's Kafka consumer group, so the broker spreads
the partitions over them; that is also why this needs ``bus = "kafka"`` (the in-process bus lives in one
process). One worker serves the HTTP API on ``http_port`` and runs the ``[jobs]`` schedule (with ``auto`` the dlq
stage's, idle in a healthy hub); every other worker answers on ``http_port + n`` for its own ``/metrics`` and
probes (scrape each).

The supervisor restarts a worker that exits (a crash, an out-of-memory kill) after a backoff that doubles from
1 s to 30 s while it keeps failing and starts over once a worker has run for a minute, logging one ERROR line
per exit. SIGTERM or SIGINT goes to every worker (each finishes its batch and commits, see "Graceful shutdown"
in docs/operations.md); a worker still running after ``shutdown_grace_seconds`` + 10 s is killed. The
supervisor exits 0 after a clean shutdown.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from cdp_hub.errors import ConfigurationError

__all__ = ["Worker", "plan_workers", "supervise"]

log = logging.getLogger(__name__)

FIRST_BACKOFF = 1.0
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0
"""A worker that ran this long before it exited starts again after the first backoff, not a longer one."""
# The stages that take more workers when there are more cores, in this order (the resolver does the most
# work per event, then triggers, then delivery; the dlq stage is idle in a healthy hub).
_SCALED_STAGES = ("resolver", "triggers", "delivery")


@dataclass
class Worker:
    """One supervised ``cdp-hub run`` process."""

    name: str
    args: list[str]
    """The ``run`` sub-command's arguments for this worker (after the global options)."""
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None


def plan_workers(processes: str, *, stages: Sequence[str], http_port: int, cores: int | None = None,
                 http: bool = True, scheduler: bool = True) -> list[Worker]:
    """The workers for ``--processes`` (``auto`` or a whole number of at least 1).

    ``auto``: one worker per stage in ``stages``, and one more resolver, triggers, delivery worker (in that
    order, round robin) for each core beyond four. The ``dlq`` worker (idle in a healthy hub), or the first
    one without it, also serves the HTTP API on ``http_port`` and runs the schedule. ``N``: N workers that
    each run every stage in ``stages``; the first one serves the HTTP API and runs the schedule. Every other
    worker answers ``/metrics`` and the probes on ``http_port + 1``, ``+ 2``, ... (unless ``http`` is off).
    """
    if not stages:
        raise ConfigurationError("--processes: no stage to run (use `cdp-hub serve` for HTTP only)")
    cores = cores or os.cpu_count() or 1
    if processes == "auto":
        plan = list(stages)
        scaled = [s for s in _SCALED_STAGES if s in stages]
        for extra in range(max(0, cores - 4) if scaled else 0):
            plan.append(scaled[extra % len(scaled)])
        seen: dict[str, int] = {}
        workers: list[Worker] = []
        for stage in plan:
            seen[stage] = seen.get(stage, 0) + 1
            name = stage if seen[stage] == 1 else f"{stage}-{seen[stage]}"
            workers.append(Worker(name, ["--stage", stage]))
        front = next((w for w in workers if w.name == "dlq"), workers[0])
    else:
        try:
            count = int(processes)
        except ValueError:
            raise ConfigurationError(f"--processes: {processes!r} is neither 'auto' nor a whole number") from None
        if count < 1:
            raise ConfigurationError(f"--processes: {count}: at least 1")
        workers = [Worker(f"all-{i + 1}", [a for stage in stages for a in ("--stage", stage)])
                   for i in range(count)]
        front = workers[0]
    port = http_port
    for worker in workers:
        if worker is front:
            worker.args += ["--http-port", str(http_port)] if http else ["--no-http"]
            if not scheduler:
                worker.args.append("--no-scheduler")
            continue
        worker.args.append("--no-scheduler")
        if http:
            port += 1
            worker.args += ["--http-port", str(port)]
        else:
            worker.args.append("--no-http")
    # The API's worker first: it is the one an operator looks for in the start-up line.
    return [front, *[w for w in workers if w is not front]]


def _backoff(failures: int) -> float:
    return float(min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** max(0, failures - 1)))


def supervise(workers: list[Worker], global_args: Sequence[str], *, grace: float,
              poll_seconds: float = 0.2) -> int:
    """Run ``workers`` until SIGTERM or SIGINT, restarting any that exits; 0 after a clean shutdown."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.warning("supervisor: %s received; stopping %d workers (grace %.0fs)",
                        signal.Signals(signum).name, len(workers), grace)
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    command = [sys.executable, "-m", "cdp_hub.cli", *global_args, "run"]
    try:
        for worker in workers:
            _start(worker, command)
        log.warning("supervisor: %d workers: %s", len(workers),
                    ", ".join(f"{w.name} (pid {w.process.pid if w.process else '-'})" for w in workers))
        while not stopping:
            now = time.monotonic()
            for worker in workers:
                if worker.process is not None and worker.process.poll() is not None:
                    code = worker.process.returncode
                    lived = now - worker.started
                    worker.failures = 1 if lived >= HEALTHY_AFTER else worker.failures + 1
                    wait = _backoff(worker.failures)
                    worker.process = None
                    worker.restart_at = now + wait
                    log.error("supervisor: worker %s exited with %s after %.0fs; starting it again in %.0fs",
                              worker.name, _describe(code), lived, wait)
                elif worker.process is None and worker.restart_at is not None and now >= worker.restart_at:
                    _start(worker, command)
            time.sleep(poll_seconds)
        return _shutdown(workers, grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_SEAL_KEY = secrets.token_hex(32)


def _start(worker: Worker, command: list[str]) -> None:
    env = {**os.environ, "CDP_HUB_WORKER": worker.name}
    # One seal key for every worker, so that a stage trusts the records the others produced (cdp_hub.bus.provenance);
    # made once per supervisor unless the deployment set its own.
    env.setdefault("CDP_HUB_RECORD_SEAL_KEY", _SEAL_KEY)
    worker.process = subprocess.Popen([*command, *worker.args], env=env)
    worker.started = time.monotonic()
    worker.restart_at = None


def _describe(code: int) -> str:
    if code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


def _shutdown(workers: list[Worker], grace: float) -> int:
    live = [w for w in workers if w.process is not None and w.process.poll() is None]
    for worker in live:
        assert worker.process is not None
        worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace + 10
    clean = True
    for worker in live:
        assert worker.process is not None
        try:
            code = worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("supervisor: worker %s still running %.0fs after SIGTERM; killed", worker.name, grace + 10)
            worker.process.kill()
            worker.process.wait()
            clean = False
            continue
        if code not in (0, -signal.SIGTERM):
            log.error("supervisor: worker %s stopped with %s", worker.name, _describe(code))
            clean = False
    log.warning("supervisor: every worker stopped")
    return 0 if clean else 1
