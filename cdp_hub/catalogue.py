"""The catalogue of published schemas: everything ``cdp-hub schema export`` writes to ``schemas/``.

It sits above the modules whose models it publishes (events, message intents, dead letters, scenarios,
campaigns), so none of them needs to import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cdp_hub.campaigns.model import campaign_json_schema
from cdp_hub.dlq import DeadLetter
from cdp_hub.schema.export import SCHEMA_DIALECT, dumps, event_json_schema
from cdp_hub.schema.messages import MessageIntent
from cdp_hub.triggers.scenario import scenario_json_schema

__all__ = ["exported_schemas", "write_schemas"]


def exported_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema, for everything ``cdp-hub schema export`` writes."""

    def plain(model: Any, title: str, name: str) -> dict[str, Any]:
        s = model.model_json_schema()
        s["$schema"] = SCHEMA_DIALECT
        s["$id"] = f"https://cdp-hub.dev/schemas/{name}"
        s["title"] = title
        return dict(s)

    return {
        "cdp.event.v1.json": event_json_schema(),
        "cdp.message.v1.json": plain(MessageIntent, "cdp.message/1", "cdp.message.v1.json"),
        "cdp.dlq.v1.json": plain(DeadLetter, "cdp.dlq/1", "cdp.dlq.v1.json"),
        "scenario.schema.json": scenario_json_schema(),
        "campaign.schema.json": campaign_json_schema(),
    }


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in exported_schemas().items():
        path = folder / name
        path.write_bytes(dumps(schema))
        written.append(path)
    return written
