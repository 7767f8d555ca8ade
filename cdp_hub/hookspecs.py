"""The plugin contract: every hook a cdp-hub plugin may implement.

A plugin is a module (or object) named by an entry point in the group ``cdp_hub.connectors`` or
``cdp_hub.channels``. It implements one or more of the hooks below, decorated with :data:`hookimpl`::

    from cdp_hub import hookimpl

    @hookimpl
    def cdp_hub_register_connectors(register):
        register(MyShopConnector)

Hooks are synchronous and do no I/O: they only *register* classes. The async work lives in the registered
classes' methods. The built-in connectors and channels are plugins loaded exactly this way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "cdp_hub"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def cdp_hub_register_connectors(register: Callable[[type[Any]], None]) -> None:
    """Register connector classes: call ``register(ConnectorClass)`` once per class.

    A connector class subclasses :class:`cdp_hub.Connector` and sets ``name`` (unique, e.g. ``"ecommerce"``),
    ``config_model`` and its streams. Registering a name twice is an error reported against the plugin.
    """


@hookspec
def cdp_hub_register_channels(register: Callable[[type[Any]], None]) -> None:
    """Register channel classes: call ``register(ChannelClass)`` once per class.

    A channel class subclasses :class:`cdp_hub.Channel`, sets ``name`` and ``config_model`` and implements
    ``send(message) -> Receipt`` and, where the provider calls back, ``parse_callback(headers, body)``.
    """


@hookspec
def cdp_hub_register_event_types(register: Callable[[str, type[Any]], None]) -> None:
    """Register extra event types: ``register("acme.gift_card_issued", PayloadModel)``.

    Names must be namespaced (dotted) and new; the payload model is a pydantic model that validates the
    event's ``properties``.
    """


@hookspec
def cdp_hub_register_identity_kinds(register: Callable[..., None]) -> None:
    """Register extra identity kinds: ``register("vk_id")`` or ``register("inn", normalizer)``.

    ``normalizer(value, options) -> str`` returns the normalized value or raises
    :class:`cdp_hub.errors.NormalizationError`.
    """
