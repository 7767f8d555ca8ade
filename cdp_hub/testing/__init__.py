"""Conformance kit for plugin authors: inherit the standard tests, write a few lines.

    from cdp_hub.testing import ConnectorTests

    class TestMyShop(ConnectorTests):
        connector_class = MyShopConnector
        config = {"base_url": "https://shop.test"}
        records = [...]
        broken_record = {...}

The fixtures come from the ``cdp_hub`` pytest plugin (:mod:`cdp_hub.testing.plugin`), installed with cdp-hub.
"""

from cdp_hub.testing.connectors import ConnectorTests, state_store_for
from cdp_hub.testing.mockapi import MockApi

__all__ = ["ConnectorTests", "MockApi", "state_store_for"]

try:
    from cdp_hub.testing.channels import ChannelTests

    __all__ += ["ChannelTests"]
except ModuleNotFoundError as exc:
    if exc.name != "cdp_hub.testing.channels":
        raise
