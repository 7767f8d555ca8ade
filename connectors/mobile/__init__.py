"""The built-in ``mobile`` connector, registered through the ``cdp_hub.connectors`` entry point like any plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cdp_hub
from connectors.mobile.connector import MobileConnector

__all__ = ["MobileConnector", "cdp_hub_register_connectors"]


@cdp_hub.hookimpl
def cdp_hub_register_connectors(register: Callable[[type[Any]], None]) -> None:
    """Register :class:`MobileConnector`."""
    register(MobileConnector)
