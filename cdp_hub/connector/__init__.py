"""Connector SDK: base class and helpers for pulling or receiving source data."""

from cdp_hub.connector.base import Connector, ConnectorConfig, SourceRecord

__all__ = ["Connector", "ConnectorConfig", "SourceRecord"]
