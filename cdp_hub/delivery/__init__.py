"""Delivery: message intents become rendered, sent messages and ``message.*`` receipts.

    stage.py      DeliveryStage: the consumer of cdp.messages (send log, profiles, fallbacks, retries)
    rendering.py  sandboxed Jinja2 templates per channel kind and locale, money/date filters (Babel)
    sendlog.py    the idempotent send log and the suppression list (PostgreSQL, set-based)
    profiles.py   Golden Record, consent and addresses of a batch of profiles
    ratelimit.py  per-provider token bucket and concurrency slots
    receipts.py   receipts -> canonical message.* events
    callbacks.py  provider callbacks (delivery reports, opens, clicks) -> receipts -> events
    http.py       POST /v1/callbacks/{channel} for the daemon
    cli.py        cdp-hub templates render, cdp-hub templates list
"""

from cdp_hub.delivery.rendering import RenderedMessage, TemplateError, TemplateRenderer
from cdp_hub.delivery.sendlog import FINAL_STATUSES, SendLog

__all__ = ["FINAL_STATUSES", "RenderedMessage", "SendLog", "TemplateError", "TemplateRenderer"]
