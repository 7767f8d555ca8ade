"""The Golden Record: which observed trait value survives, per trait, by rule.

    events ─▶ observations (profile, trait, source, value, first_seen, observed_at, seen_count)
              stored in profile_traits (the provenance) ─▶ golden_record(rows, rules) ─▶ profiles.golden

Consent is not a trait like the others: ``consent.<channel>`` observations come only from
``consent.changed`` events, and the latest one wins, an opt-out winning a tie, so an opt-out from any
source holds until an explicit later opt-in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from cdp_hub.resolver.rules import IdentityRules
from cdp_hub.schema.events import Event

__all__ = [
    "CONSENT_CHANNELS",
    "Observation",
    "event_observations",
    "golden_record",
]

CONSENT_CHANNELS = ("email", "sms", "push")
_CONSENT_PREFIX = "consent."


@dataclass(frozen=True, slots=True)
class Observation:
    """One trait value a source asserted, aggregated over the observations that said the same."""

    trait: str
    source: str
    value: Any
    first_seen: datetime
    observed_at: datetime
    seen_count: int = 1


def event_observations(event: Event) -> list[tuple[str, Any]]:
    """The ``(trait, value)`` pairs an event asserts; empty values assert nothing."""
    out: list[tuple[str, Any]] = []
    for trait, value in event.traits.model_dump(mode="json", exclude_none=True).items():
        if value == "" or value == [] or value == {}:
            continue
        out.append((trait, value))
    if event.type == "consent.changed":
        channel = event.properties.get("channel")
        status = event.properties.get("status")
        channels = CONSENT_CHANNELS if channel == "all" else (channel,)
        for ch in channels:
            out.append((f"{_CONSENT_PREFIX}{ch}", status))
    elif event.type == "loyalty.tier_changed" and event.properties.get("to_tier"):
        out.append(("loyalty_tier", event.properties["to_tier"]))
    return out


def _source_rank(sources: Sequence[str], source: str) -> int:
    try:
        return len(sources) - sources.index(source)
    except ValueError:
        return 0


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _pick(rows: list[Observation], strategy: str, sources: Sequence[str]) -> Observation:
    # Every strategy breaks ties by recency, then by the value's JSON text, so the result never depends on
    # row order; the SQL of the resolver (sql.GOLDEN) orders the same way.
    if strategy == "source_priority":
        return max(rows, key=lambda r: (_source_rank(sources, r.source), r.observed_at, _text(r.value)))
    if strategy == "most_frequent":
        counts: dict[str, int] = defaultdict(int)
        latest: dict[str, Observation] = {}
        for r in rows:
            key = repr(r.value)
            counts[key] += r.seen_count
            if key not in latest or r.observed_at > latest[key].observed_at:
                latest[key] = r
        best = max(counts, key=lambda k: (counts[k], latest[k].observed_at,
                                          _source_rank(sources, latest[k].source), _text(latest[k].value)))
        return latest[best]
    if strategy == "first_non_empty":
        first = min(r.first_seen for r in rows)
        return max((r for r in rows if r.first_seen == first),
                   key=lambda r: (_source_rank(sources, r.source), r.observed_at, _text(r.value)))
    return max(rows, key=lambda r: (r.observed_at, _source_rank(sources, r.source), _text(r.value)))


def _consent(rows: list[Observation]) -> str:
    # The latest statement wins; at the same instant an opt-out wins.
    best = max(rows, key=lambda r: (r.observed_at, r.value == "opted_out"))
    return str(best.value)


def golden_record(rows: Iterable[Observation], rules: IdentityRules) -> dict[str, Any]:
    """The flat golden object (``{"first_name": ..., "consent": {"email": "opted_out"}}``) from observations.

    The reference statement of the survivorship rules: the store computes the same in SQL, set-wise
    (``sql.GOLDEN``), and a property test holds the two equal.
    """
    by_trait: dict[str, list[Observation]] = defaultdict(list)
    for row in rows:
        by_trait[row.trait].append(row)
    golden: dict[str, Any] = {}
    consent: dict[str, str] = {}
    for trait in sorted(by_trait):
        obs = by_trait[trait]
        if trait.startswith(_CONSENT_PREFIX):
            consent[trait[len(_CONSENT_PREFIX):]] = _consent(obs)
            continue
        rule = rules.trait_rule(trait)
        golden[trait] = _pick(obs, rule.strategy, rule.sources).value
    if consent:
        golden["consent"] = consent
    return golden
