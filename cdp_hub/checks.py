"""Configuration checks that need the installed plugins: every configured channel and connector instance.

    instance_problems(settings, registry)   one Problem per bad instance: unknown type, or options its plugin's
                                            model rejects (names the option, never the value); a key that is a
                                            top-level setting gets the TOML scoping hint
    reachability(settings)                  the bus, the database and Redis of the settings, each connected to
                                            once with a timeout: "ok" or what failed (redacted)

``cdp-hub config check`` prints both (plus scenarios and jobs); ``cdp-hub run`` logs each instance problem at
ERROR when it starts and ``/readyz`` answers 503 naming the instance and the reason, instead of passing while
every message to that channel becomes a dead letter.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from cdp_hub.config import Settings, validate_options
from cdp_hub.errors import CdpHubError, ConfigurationError
from cdp_hub.plugins import PluginRegistry
from cdp_hub.redact import redact

__all__ = ["Problem", "instance_problems", "reachability"]


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with one configured thing: ``kind`` (channel, connector, job, scenario), its name, why."""

    kind: str
    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.reason}"


def instance_problems(settings: Settings, registry: PluginRegistry) -> list[Problem]:
    """Every enabled channel and connector instance whose type is unknown or whose options are invalid."""
    problems: list[Problem] = []
    tables: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (
        ("channel", dict(settings.channels), dict(registry.channels)),
        ("connector", dict(settings.connectors), dict(registry.connectors)),
    )
    for kind, instances, installed in tables:
        for name, instance in sorted(instances.items()):
            if not instance.enabled:
                continue
            info = installed.get(instance.type)
            if info is None:
                problems.append(Problem(kind, name, f"unknown {kind} type {instance.type!r} (installed: "
                                        f"{', '.join(sorted(installed)) or 'none'}; see `cdp-hub plugins`)"))
                continue
            try:
                validate_options(info.cls.config_model, instance.config, where=f"{kind} {name}")
            except ConfigurationError as exc:
                reason = str(exc).removeprefix(f"{kind} {name}: ")
                hint = _scoping_hint(kind, name, instance.config)
                problems.append(Problem(kind, name, reason + hint))
    return problems


def _scoping_hint(kind: str, name: str, options: dict[str, Any]) -> str:
    """TOML puts every key after ``[connectors.x.config]`` into that table, top-level settings too."""
    misplaced = sorted(key for key in options if key in Settings.model_fields)
    if not misplaced:
        return ""
    one = len(misplaced) == 1
    return (f" (hint: {', '.join(misplaced)} {'is a top-level setting' if one else 'are top-level settings'}; "
            f"in TOML every key after the [{kind}s.{name}.config] header belongs to that table: move "
            f"{'it' if one else 'them'} above the first [table])")


async def reachability(settings: Settings, *, timeout: float = 5.0) -> dict[str, str]:
    """Connect to the bus, the database and Redis of ``settings`` once each: ``"ok"`` or what went wrong."""
    from cdp_hub.hotstate import HotState
    from cdp_hub.hub import create_bus
    from cdp_hub.store import Store

    async def bus() -> None:
        backend = create_bus(settings)
        try:
            await backend.start()
            if settings.auto_create_topics:  # as the hub would at start; else the topic must exist
                await backend.ensure_topics([settings.topics.events], partitions=settings.topic_partitions)
            await backend.end_offsets(settings.topics.events)
        finally:
            await backend.stop()

    async def store() -> None:
        db = Store.for_settings(settings, pool_size=1)
        try:
            await db.start()
            await db.fetchval("SELECT 1")
        finally:
            await db.stop()

    async def hotstate() -> None:
        state = HotState(settings.redis_url)
        try:
            await state.start()
            await state.ping()
        finally:
            await state.stop()

    results: dict[str, str] = {}
    for name, probe in (("bus", bus), ("postgres", store), ("redis", hotstate)):
        try:
            await asyncio.wait_for(probe(), timeout)
            results[name] = "ok"
        except TimeoutError:
            results[name] = f"no answer within {timeout:g}s"
        except (CdpHubError, OSError) as exc:
            results[name] = redact(str(exc))
        except Exception as exc:  # a client library's own error: its type and text, redacted
            results[name] = redact(f"{type(exc).__name__}: {exc}")
    return results
