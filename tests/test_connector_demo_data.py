"""The demo data set: realistic, overlapping across systems, deterministic, with a few broken records."""

from __future__ import annotations

import re
from collections import defaultdict

import orjson

from cdp_hub.connector.ingest import Ingestor
from cdp_hub.demo.data import SYSTEMS, generate
from cdp_hub.dlq import DeadLetter
from cdp_hub.errors import RecordError
from cdp_hub.hub import Hub
from cdp_hub.plugins import load_plugins


def normalize_all(data: dict[str, list[dict]]) -> tuple[list, int, int]:  # type: ignore[type-arg]
    registry = load_plugins()
    events, units, dead = [], 0, 0
    for system, records in data.items():
        connector = registry.connector(system)(instance=system)
        for record in records:
            for unit in connector.split(record):
                units += 1
                try:
                    events.extend(connector.to_events(unit))
                except RecordError:
                    dead += 1
    return events, units, dead


def test_generate_is_deterministic_per_seed() -> None:
    assert generate(60, seed=3) == generate(60, seed=3)
    assert generate(60, seed=3) != generate(60, seed=4)
    assert tuple(generate(5)) == SYSTEMS


def test_demo_data_looks_like_a_retailer() -> None:
    data = generate(1000)
    events, units, dead = normalize_all(data)
    assert 5 <= len(events) / 1000 <= 10, len(events)
    assert 0.002 <= dead / units <= 0.01, (dead, units)
    types = {e.type for e in events}
    assert {"customer.updated", "consent.changed", "order.placed", "order.paid", "order.cancelled",
            "order.returned", "cart.updated", "product.viewed", "loyalty.points_earned",
            "loyalty.points_redeemed", "loyalty.tier_changed", "app.installed", "app.opened", "screen.viewed",
            "push.token_registered", "customer.deleted"} <= types

    # Cyrillic names and phones in local notations
    erp_customers = [r for r in data["erp"] if "Код" in r]
    assert all(re.search("[А-Яа-яЁё]", r["Наименование"]) for r in erp_customers)
    notations = {re.sub(r"\d", "9", r["Телефон"]) for r in erp_customers}
    assert "9 (999) 999-99-99" in notations and len(notations) >= 5

    # the same people appear in several systems under overlapping identities
    systems_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in events:
        for ident in e.identities:
            systems_of[(ident.kind, ident.value)].add(e.source)
    shared_phones = [k for k, v in systems_of.items() if k[0] == "phone" and len(v) >= 3]
    shared_emails = [k for k, v in systems_of.items() if k[0] == "email" and len(v) >= 2]
    assert len(shared_phones) > 100 and len(shared_emails) > 100
    # guest orders carry only an e-mail or a phone
    guests = [r for r in data["ecommerce"] if "line_items" in r and "financial_status" in r and not r["customer"]]
    assert guests and all(r["email"] or r["phone"] for r in guests)


async def test_demo_data_through_the_ingestor_fills_events_and_dlq(hub: Hub) -> None:
    data = generate(150, seed=11)
    registry = hub.registry
    total_events = total_dead = 0
    for system, records in data.items():
        result = await Ingestor(hub).ingest(hub.connector(system), records)
        total_events += result.events
        total_dead += result.dead
    published = await hub.bus.read_all(hub.topics.events)
    assert len(published) == total_events > 0
    dlq = [DeadLetter.model_validate_json(r.value) for r in await hub.bus.read_all(hub.topics.dlq)]
    assert len(dlq) == total_dead
    for letter in dlq:  # each names the field and keeps the raw record for a replay
        assert letter.stage == "ingest" and letter.field and letter.connector in registry.connectors
        assert isinstance(orjson.loads(letter.payload_bytes()), dict)
    # re-ingesting the same records yields the same event ids (no-ops downstream)
    first = {orjson.loads(r.value)["event_id"] for r in published}
    await Ingestor(hub).ingest(hub.connector("loyalty"), data["loyalty"])
    again = {orjson.loads(r.value)["event_id"] for r in (await hub.bus.read_all(hub.topics.events))[len(published):]}
    assert again and again <= first
