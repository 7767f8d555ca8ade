"""Which scenarios an event may fire: scenarios indexed by trigger event type, then by an equality condition.

    event ─▶ its type's scenarios ─┬─ indexed: the value at the condition's path ─▶ dict lookup ─▶ candidates
                                   └─ the others (ranges, exists, ...) ─────────────────────────▶ candidates
          candidates, in load order ─▶ their remaining conditions (compiled closures) ─▶ matched

A retailer's catalogue has many scenarios per event type, most of them told apart by an equality on one field
(a loyalty tier, a search query, a product set, a store): with the index an event costs one path read per
indexed field and a lookup, not one condition per scenario, so loading more scenarios does not slow the
triggers stage (bench/triggers.py compares 5 with 120). A condition is indexed when it is ``eq`` with a text
value or ``in`` with a list of texts: both hold only for a text at the path equal to one of the values, so a
lookup answers them exactly (see :meth:`cdp_hub.triggers.scenario.Condition.compile`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from cdp_hub.triggers.scenario import (
    CollectedValues,
    Condition,
    Predicate,
    Scenario,
    compile_conditions,
    path_reader,
)

__all__ = ["CompiledScenario", "ScenarioIndex"]


@dataclass(frozen=True, slots=True)
class CompiledScenario:
    """A scenario as the stage matches it: the conditions the index does not answer as one closure, its
    durations parsed once."""

    scenario: Scenario
    matches: Predicate
    delay: timedelta | None
    max_age: timedelta | None
    lateness: timedelta | None


@dataclass
class _Lookup:
    read: Callable[[Mapping[str, Any]], Any]
    by_value: dict[str, list[int]] = field(default_factory=dict)
    # Scenarios indexed by an ``in`` condition: on a path through a list (the categories of an order's lines)
    # ``in`` holds when any collected value is in its list; ``eq`` never holds for a list.
    by_any: set[int] = field(default_factory=set)


@dataclass
class _TypeIndex:
    scenarios: list[CompiledScenario] = field(default_factory=list)
    lookups: dict[str, _Lookup] = field(default_factory=dict)
    scanned: list[int] = field(default_factory=list)


class ScenarioIndex:
    """The scenarios of a deployment, indexed for matching events (built once, when the stage starts)."""

    def __init__(self, scenarios: Sequence[Scenario]) -> None:
        self._types: dict[str, _TypeIndex] = {}
        for scenario in scenarios:
            index = self._types.setdefault(scenario.trigger.event, _TypeIndex())
            position = len(index.scenarios)
            key = _indexable(scenario.conditions)
            rest = list(scenario.conditions)
            if key is not None:
                condition, values = key
                rest.remove(condition)
                lookup = index.lookups.get(condition.field)
                if lookup is None:
                    lookup = index.lookups[condition.field] = _Lookup(path_reader(tuple(condition.field.split("."))))
                for value in values:
                    positions = lookup.by_value.setdefault(value, [])
                    if not positions or positions[-1] != position:
                        positions.append(position)
                if condition.op == "in":
                    lookup.by_any.add(position)
            else:
                index.scanned.append(position)
            index.scenarios.append(CompiledScenario(scenario, compile_conditions(rest), scenario.delay_td,
                                                    scenario.max_age_td, scenario.lateness_td))

    def triggered_by(self, event_type: str) -> bool:
        return event_type in self._types

    def matching(self, event_type: str, scope: Mapping[str, Any]) -> list[CompiledScenario]:
        """The scenarios of ``event_type`` whose conditions hold for ``scope``, in load order."""
        index = self._types.get(event_type)
        if index is None:
            return []
        positions = list(index.scanned)
        collected = False  # positions from a list's values: possibly several per lookup, in any order
        for lookup in index.lookups.values():
            value = lookup.read(scope)
            if isinstance(value, str):
                found = lookup.by_value.get(value)
                if found:
                    positions.extend(found)
            elif type(value) is CollectedValues and lookup.by_any:  # a path through a list; a list value is no key
                hits = {p for v in value if isinstance(v, str) for p in lookup.by_value.get(v, ()) if p in lookup.by_any}
                positions.extend(hits)
                collected = True
        if len(positions) > 1 and (len(index.lookups) + bool(index.scanned) > 1 or collected):
            positions.sort()  # from several sources; each scenario is in one of them, once
        scenarios = index.scenarios
        return [scenarios[p] for p in positions if scenarios[p].matches(scope)]


def _indexable(conditions: Sequence[Condition]) -> tuple[Condition, list[str]] | None:
    """The first condition a lookup answers exactly, with the texts it accepts; None when there is none."""
    for condition in conditions:
        if condition.op == "eq" and isinstance(condition.value, str) and not _is_number(condition.value):
            return condition, [condition.value]
        if (condition.op == "in" and isinstance(condition.value, list) and condition.value
                and all(isinstance(v, str) for v in condition.value)):
            return condition, list(dict.fromkeys(condition.value))
    return None


def _is_number(text: str) -> bool:
    # "150" as an eq value equals the number 150 too (conditions compare numbers as numbers): not a lookup.
    try:
        Decimal(text)
    except InvalidOperation:
        return False
    return True
