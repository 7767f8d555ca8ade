"""Plugin loading: entry points -> pluggy -> registries of connector and channel classes.

    entry points (cdp_hub.connectors, cdp_hub.channels)
        └─ import each plugin module; a failure is recorded by name, the others go on
             └─ pluggy registers it; check_pending() catches misspelled hooks
                  └─ hooks call register(...) -> PluginRegistry

Environment:
- ``CDP_HUB_PLUGINS``: comma-separated entry-point names to load (all when unset).
- ``CDP_HUB_DISABLE_PLUGINS``: comma-separated entry-point names to skip.
- ``CDP_HUB_TRACE_PLUGINS=1``: print each hook call to stderr.

Plugin names (a connector's or channel's ``name``): :data:`PLUGIN_NAME_RULE`, checked by
:func:`validate_plugin_name`.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from cdp_hub import hookspecs
from cdp_hub.errors import ConfigurationError
from cdp_hub.schema.identities import register_identity_kind
from cdp_hub.schema.payloads import register_event_type

__all__ = [
    "CHANNEL_GROUP",
    "CONNECTOR_GROUP",
    "PLUGIN_NAME_RE",
    "PLUGIN_NAME_RULE",
    "PluginFailure",
    "PluginInfo",
    "PluginRegistry",
    "get_registry",
    "load_plugins",
    "validate_plugin_name",
]

CONNECTOR_GROUP = "cdp_hub.connectors"
CHANNEL_GROUP = "cdp_hub.channels"
GROUPS = (CONNECTOR_GROUP, CHANNEL_GROUP)

PLUGIN_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,40}\Z")
"""The name of a connector or channel type. It is the entry-point name and the ``type`` in the
configuration, and the package names derive from it (``acme_shop``: distribution ``cdp-hub-acme-shop``,
module ``cdp_hub_acme_shop``), so it is a lower-case Python identifier without a leading ``_``."""
PLUGIN_NAME_RULE = "a lower-case letter, then lower-case letters, digits or _; 2 to 41 characters (e.g. acme_shop)"


def validate_plugin_name(name: str, *, kind: str = "plugin") -> str:
    """``name`` if it is a valid plugin name (:data:`PLUGIN_NAME_RE`); otherwise a
    :class:`~cdp_hub.errors.ConfigurationError` that says the rule. ``kind`` (``connector``, ``channel``)
    names what the name is for in the message."""
    if not PLUGIN_NAME_RE.fullmatch(name):
        raise ConfigurationError(f"{kind} name {name!r}: {PLUGIN_NAME_RULE}")
    return name


@dataclass(frozen=True)
class PluginInfo:
    """A registered connector or channel class and where it came from."""

    name: str
    cls: type[Any]
    plugin: str
    distribution: str | None
    version: str | None

    @property
    def description(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


@dataclass(frozen=True)
class PluginFailure:
    group: str
    name: str
    distribution: str | None
    error: str


@dataclass
class PluginRegistry:
    connectors: dict[str, PluginInfo] = field(default_factory=dict)
    channels: dict[str, PluginInfo] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)
    manager: pluggy.PluginManager | None = None

    def connector(self, name: str) -> type[Any]:
        try:
            return self.connectors[name].cls
        except KeyError:
            raise ConfigurationError(
                f"no connector named {name!r}; installed: {', '.join(sorted(self.connectors)) or 'none'}"
                + self._failure_hint(name)
            ) from None

    def channel(self, name: str) -> type[Any]:
        try:
            return self.channels[name].cls
        except KeyError:
            raise ConfigurationError(
                f"no channel named {name!r}; installed: {', '.join(sorted(self.channels)) or 'none'}"
                + self._failure_hint(name)
            ) from None

    def _failure_hint(self, name: str) -> str:
        for failure in self.failures:
            if failure.name == name:
                return f" (plugin {name!r} failed to load: {failure.error})"
        return ""


def _names(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _dist(ep: EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("CDP_HUB_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: print(msg, end="", file=sys.stderr))
        pm.enable_tracing()
    return pm


def load_plugins(extra: Iterable[object] = (), groups: Iterable[str] = GROUPS) -> PluginRegistry:
    """Load every plugin from the entry-point groups (plus ``extra`` plugin objects) into a registry.

    A plugin that fails to import or to register is recorded in ``registry.failures`` with its error; the
    others load regardless.
    """
    registry = PluginRegistry()
    pm = new_manager()
    registry.manager = pm
    only, skip = _names("CDP_HUB_PLUGINS"), _names("CDP_HUB_DISABLE_PLUGINS") or set()
    origin: dict[str, tuple[str, str, str | None, str | None]] = {}

    plugins: list[tuple[str, str, object, str | None, str | None]] = []
    for group in groups:
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            if (only is not None and ep.name not in only) or ep.name in skip:
                continue
            dist, version = _dist(ep)
            try:
                module = ep.load()
            except Exception as exc:
                registry.failures.append(PluginFailure(group, ep.name, dist, _describe(exc)))
                continue
            plugins.append((group, ep.name, module, dist, version))
    plugins.extend(("<extra>", getattr(p, "__name__", repr(p)), p, None, None) for p in extra)

    for group, name, module, dist, version in plugins:
        if pm.is_registered(module):
            continue
        try:
            pm.register(module, name=f"{group}:{name}")
        except Exception as exc:
            registry.failures.append(PluginFailure(group, name, dist, _describe(exc)))
            continue
        origin[f"{group}:{name}"] = (group, name, dist, version)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        registry.failures.append(PluginFailure("<hooks>", str(exc.plugin), None, str(exc)))

    def collect(hook_name: str, target: dict[str, PluginInfo]) -> None:
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            group, name, dist, version = origin.get(impl.plugin_name, ("<extra>", impl.plugin_name, None, None))

            def register(cls: type[Any], _name: str = name, _dist: str | None = dist, _ver: str | None = version) -> None:
                key = getattr(cls, "name", None)
                if not isinstance(key, str) or not key:
                    raise TypeError(f"{cls!r} has no 'name' class attribute")
                if key in target and target[key].cls is not cls:
                    raise ValueError(f"{key!r} is already registered by plugin {target[key].plugin!r}")
                target[key] = PluginInfo(key, cls, _name, _dist, _ver)

            try:
                impl.function(register)
            except Exception as exc:
                registry.failures.append(PluginFailure(group, name, dist, _describe(exc)))

    def simple(hook_name: str, fn: Any) -> None:
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            group, name, dist, _ = origin.get(impl.plugin_name, ("<extra>", impl.plugin_name, None, None))
            try:
                impl.function(fn)
            except Exception as exc:
                registry.failures.append(PluginFailure(group, name, dist, _describe(exc)))

    simple("cdp_hub_register_identity_kinds", register_identity_kind)
    simple("cdp_hub_register_event_types", register_event_type)
    collect("cdp_hub_register_connectors", registry.connectors)
    collect("cdp_hub_register_channels", registry.channels)
    return registry


def _describe(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {last[0].filename}:{last[0].lineno}" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


_REGISTRY: PluginRegistry | None = None


def get_registry(*, reload: bool = False) -> PluginRegistry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None or reload:
        _REGISTRY = load_plugins()
    return _REGISTRY
