"""cdp-hub: an open-source integration hub and connector SDK for a Customer Data Platform.

    connectors ─▶ [cdp.events] ─▶ resolver ─▶ [cdp.profile-events] ─▶ triggers ─▶ [cdp.messages] ─▶ delivery
    (plugins)       (Kafka)      (Golden Record                      (scenarios,                     (channel
                                  in Greenplum)                       Redis state)                    plugins)
"""

from cdp_hub.channel.base import Channel, ChannelConfig, ChannelLimits, OutboundMessage, Receipt
from cdp_hub.connector.base import Connector, ConnectorConfig
from cdp_hub.errors import (
    CdpHubError,
    ConfigurationError,
    FatalError,
    NormalizationError,
    RecordError,
    RetriableError,
    SchemaViolation,
)
from cdp_hub.hookspecs import hookimpl, hookspec
from cdp_hub.schema import Event, Identity, MessageIntent, NormalizationOptions, Traits, parse_event

__version__ = "0.1.0"

__all__ = [
    "CdpHubError",
    "Channel",
    "ChannelConfig",
    "ChannelLimits",
    "ConfigurationError",
    "Connector",
    "ConnectorConfig",
    "Event",
    "FatalError",
    "Identity",
    "MessageIntent",
    "NormalizationError",
    "NormalizationOptions",
    "OutboundMessage",
    "Receipt",
    "RecordError",
    "RetriableError",
    "SchemaViolation",
    "Traits",
    "__version__",
    "hookimpl",
    "hookspec",
    "parse_event",
]
