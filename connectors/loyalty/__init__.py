"""The built-in ``loyalty`` connector, registered through the ``cdp_hub.connectors`` entry point like any plugin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cdp_hub
from connectors.loyalty.connector import LoyaltyConnector

__all__ = ["LoyaltyConnector", "cdp_hub_register_connectors"]


@cdp_hub.hookimpl
def cdp_hub_register_connectors(register: Callable[[type[Any]], None]) -> None:
    """Register :class:`LoyaltyConnector`."""
    register(LoyaltyConnector)
