"""Channel interface for delivery plugins (email, SMS, push, webhooks)."""

from cdp_hub.channel.base import (
    Channel,
    ChannelConfig,
    ChannelLimits,
    OutboundMessage,
    Receipt,
    ReceiptStatus,
)

__all__ = ["Channel", "ChannelConfig", "ChannelLimits", "OutboundMessage", "Receipt", "ReceiptStatus"]
