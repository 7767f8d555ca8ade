"""Segments as data: YAML files validated against a JSON Schema, loaded as pydantic models.

    id: vip
    description: Spent at least 50,000 RUB in the last 365 days.
    all:
      - {aggregate: sum, event: order.paid, property: total, within: 365d, op: gte, value: 50000}
      - {trait: consent.email, op: eq, value: opted_in}

A segment is a tree of rules combined with ``all`` / ``any`` / ``none``. A leaf is either a **trait rule**
over the Golden Record (``profiles.golden``) or an **aggregate rule** over the profile's stored events
(``count``, ``sum`` of a numeric property, ``last`` occurrence). A segment without aggregates is
*trait-only*: it is re-evaluated in real time for every profile the triggers stage sees; every segment is
recomputed in batch by SQL (:mod:`cdp_hub.store.segments.compiler`).

The same rules are evaluated here in Python (:meth:`Segment.evaluate`) with exactly the SQL's semantics:
the real-time path uses it for trait-only segments, tests and the benchmark compare the two.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cdp_hub.datafiles import DataFiles
from cdp_hub.durations import DURATION_PATTERN, parse_duration
from cdp_hub.store.segments.compiler import NUMERIC_SQL_PATTERN, json_text

__all__ = [
    "AggregateRule",
    "EventFact",
    "Group",
    "Rule",
    "Segment",
    "TraitRule",
    "load_segments",
    "parse_segment",
    "segment_json_schema",
]

# Identifiers that end up in SQL (as bound parameters, never as SQL text) must still look like identifiers.
TRAIT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63}){0,3}$"
PROPERTY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z0-9_]{1,64}){0,3}$"
EVENT_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
SEGMENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
# What SQL's regular expression accepts as a number: the Python evaluator matches what the compiled SQL does.
_NUMERIC = re.compile(NUMERIC_SQL_PATTERN)

TraitOp = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "not_exists", "contains"]
CompareOp = Literal["eq", "ne", "gt", "gte", "lt", "lte"]
Scalar = str | int | float | bool


class TraitRule(BaseModel):
    """A condition on one Golden Record trait; ``consent.email`` reaches into a nested object.

    Numbers compare as numbers (a trait that is not a number never matches ``gt 5``), strings compare as
    text in code-point order (ISO dates such as ``birth_date`` compare correctly), ``in`` takes a list,
    ``contains`` is a substring of a text trait or an element of a list trait. Every operator but
    ``not_exists`` needs the trait to be present.
    """

    model_config = ConfigDict(extra="forbid")
    kind: ClassVar[Literal["trait"]] = "trait"  # what the SQL compiler tells the rule kinds apart by

    trait: str = Field(pattern=TRAIT_PATTERN, description="a Golden Record trait, e.g. city or consent.email")
    op: TraitOp = "eq"
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _check_value(self) -> TraitRule:
        if self.op in ("in", "not_in"):
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(f"trait {self.trait}: op {self.op} needs a non-empty list as value")
        elif self.op in ("exists", "not_exists"):
            if self.value is not None:
                raise ValueError(f"trait {self.trait}: op {self.op} takes no value")
        elif self.value is None or isinstance(self.value, list):
            raise ValueError(f"trait {self.trait}: op {self.op} needs one value (a string, number or boolean)")
        elif self.op in ("gt", "gte", "lt", "lte") and isinstance(self.value, bool):
            raise ValueError(f"trait {self.trait}: op {self.op} needs a number or a string, not a boolean")
        return self

    @property
    def path(self) -> list[str]:
        return self.trait.split(".")

    def evaluate(self, golden: Mapping[str, Any]) -> bool:
        raw = _lookup(golden, self.path)
        if self.op == "exists":
            return raw is not None
        if self.op == "not_exists":
            return raw is None
        if raw is None:
            return False
        text = json_text(raw)
        if self.op == "contains":
            if isinstance(raw, list):
                return self.value in raw
            return isinstance(raw, str) and json_text(self.value) in raw
        if self.op in ("in", "not_in"):
            assert isinstance(self.value, list)
            inside = text in {json_text(v) for v in self.value}
            return inside if self.op == "in" else not inside
        return compare_scalar(text, self.op, self.value)


class AggregateRule(BaseModel):
    """A condition on the profile's stored events of one type.

    ``count`` and ``sum`` (of a numeric ``property``) over the events ``within`` a window before now
    (all time without it), compared with ``op``/``value``; a profile without such events has 0.
    ``last``: the latest such event happened ``within`` the window, or is ``older_than`` a duration
    (a profile without any such event matches neither).
    """

    model_config = ConfigDict(extra="forbid")
    kind: ClassVar[Literal["aggregate"]] = "aggregate"

    aggregate: Literal["count", "sum", "last"]
    event: str = Field(pattern=EVENT_PATTERN, description="event type, e.g. order.paid")
    property: str | None = Field(None, pattern=PROPERTY_PATTERN,
                                 description="for sum: the numeric property, e.g. total")
    within: str | None = Field(None, pattern=DURATION_PATTERN,
                                        description="window before now, e.g. 365d or P30D")
    older_than: str | None = Field(None, pattern=DURATION_PATTERN, description="for last: e.g. 90d")

    @field_validator("within", "older_than")
    @classmethod
    def _is_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)  # the pattern above is for editors; this is the authority
        return value
    op: CompareOp | None = None
    value: int | float | None = None

    @model_validator(mode="after")
    def _check_shape(self) -> AggregateRule:
        what = f"aggregate {self.aggregate} of {self.event}"
        if self.aggregate == "sum" and not self.property:
            raise ValueError(f"{what}: sum needs the property to add up, e.g. property: total")
        if self.aggregate != "sum" and self.property:
            raise ValueError(f"{what}: property is only for sum")
        if self.aggregate == "last":
            if self.op is not None or self.value is not None:
                raise ValueError(f"{what}: last takes within or older_than, not op/value")
            if (self.within is None) == (self.older_than is None):
                raise ValueError(f"{what}: last needs exactly one of within or older_than")
        else:
            if self.op is None or self.value is None:
                raise ValueError(f"{what}: needs op and value, e.g. op: gte, value: 1")
            if self.older_than is not None:
                raise ValueError(f"{what}: older_than is only for last; use within")
        return self

    @builtins.property  # the field `property` shadows the builtin in this class body
    def within_td(self) -> timedelta | None:
        return parse_duration(self.within) if self.within else None

    @builtins.property  # the field `property` shadows the builtin in this class body
    def older_than_td(self) -> timedelta | None:
        return parse_duration(self.older_than) if self.older_than else None

    def evaluate(self, events: Sequence[EventFact], now: datetime) -> bool:
        start = now - self.within_td if self.within_td is not None else None
        mine = [e for e in events if e.type == self.event and e.occurred_at <= now]
        if self.aggregate == "last":
            if not mine:
                return False
            last = max(e.occurred_at for e in mine)
            if self.older_than_td is not None:
                return last < now - self.older_than_td
            assert start is not None
            return last >= start
        if start is not None:
            mine = [e for e in mine if e.occurred_at >= start]
        if self.aggregate == "count":
            amount = Decimal(len(mine))
        else:
            assert self.property is not None
            path = self.property.split(".")
            amount = Decimal(0)
            for e in mine:
                raw = _lookup(e.properties, path)
                text = json_text(raw) if raw is not None else ""
                if _NUMERIC.match(text):
                    amount += Decimal(text)
        assert self.op is not None and self.value is not None
        return _compare(amount, self.op, Decimal(str(self.value)))


class Group(BaseModel):
    """Exactly one of ``all`` (every rule), ``any`` (at least one) or ``none`` (no rule) matches."""

    model_config = ConfigDict(extra="forbid")
    kind: ClassVar[Literal["group"]] = "group"

    all: list[Rule] | None = Field(None, min_length=1)
    any: list[Rule] | None = Field(None, min_length=1)
    none: list[Rule] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_combinator(self) -> Group:
        given = [k for k in ("all", "any", "none") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a rule group needs exactly one of all, any, none (got {', '.join(given) or 'none'})")
        return self

    @property
    def combinator(self) -> Literal["all", "any", "none"]:
        return "all" if self.all is not None else "any" if self.any is not None else "none"

    @property
    def rules(self) -> list[Rule]:
        return self.all or self.any or self.none or []

    def evaluate(self, golden: Mapping[str, Any], events: Sequence[EventFact], now: datetime) -> bool:
        results = (_evaluate(r, golden, events, now) for r in self.rules)
        if self.combinator == "all":
            return all(results)
        if self.combinator == "any":
            return any(results)
        return not any(results)


Rule = TraitRule | AggregateRule | Group
Group.model_rebuild()


def _evaluate(rule: Rule, golden: Mapping[str, Any], events: Sequence[EventFact], now: datetime) -> bool:
    if isinstance(rule, TraitRule):
        return rule.evaluate(golden)
    if isinstance(rule, AggregateRule):
        return rule.evaluate(events, now)
    return rule.evaluate(golden, events, now)


@dataclass(frozen=True, slots=True)
class EventFact:
    """What an aggregate needs of one stored event (the Python evaluator's input)."""

    type: str
    occurred_at: datetime
    properties: Mapping[str, Any]


class Segment(Group):
    """A named segment: a top-level rule group plus its id."""

    id: str = Field(pattern=SEGMENT_ID_PATTERN)
    description: str = ""
    enabled: bool = True

    def leaves(self) -> Iterable[TraitRule | AggregateRule]:
        stack: list[Rule] = list(self.rules)
        while stack:
            rule = stack.pop()
            if isinstance(rule, Group):
                stack.extend(rule.rules)
            else:
                yield rule

    @property
    def trait_only(self) -> bool:
        """No aggregate: membership depends on the Golden Record alone, so it is checked in real time."""
        return not any(isinstance(leaf, AggregateRule) for leaf in self.leaves())

    def definition(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def fingerprint(self) -> str:
        """A short hash of the rules (not the description): a changed definition makes changes new."""
        rules = self.model_dump(mode="json", exclude_none=True, include={"all", "any", "none"})
        return hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:12]


# -- value semantics shared with the SQL compiler --------------------------------------------------------


def _lookup(obj: Mapping[str, Any], path: Sequence[str]) -> Any:
    current: Any = obj
    for part in path:
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def compare_scalar(text: str, op: str, value: Any) -> bool:
    """Compare a trait's text with a rule value: numerically when the value is a number, else as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not _NUMERIC.match(text):
            return False
        try:
            return _compare(Decimal(text), op, Decimal(str(value)))
        except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
            return False
    return _compare(text, op, json_text(value))


def _compare(a: Any, op: str, b: Any) -> bool:
    if op == "eq":
        return bool(a == b)
    if op == "ne":
        return bool(a != b)
    if op == "gt":
        return bool(a > b)
    if op == "gte":
        return bool(a >= b)
    if op == "lt":
        return bool(a < b)
    return bool(a <= b)


# -- loading ------------------------------------------------------------------------------------------------


SEGMENT_FILES: DataFiles[Segment] = DataFiles(Segment, what="segment", schema_name="segment.schema.json",
                                              package="cdp_hub.segments", folder="builtin")


def segment_json_schema() -> dict[str, Any]:
    return SEGMENT_FILES.json_schema()


def parse_segment(data: Any, *, origin: str) -> Segment:
    """Validate one segment document; errors name the file, the JSON path and the offending value."""
    return SEGMENT_FILES.parse(data, origin=origin)


def load_segments(paths: Iterable[Path] = (), *, builtin: bool = True,
                  include_disabled: bool = False) -> list[Segment]:
    """Built-in segments plus every ``*.yaml`` in ``paths`` (files or folders); a later id replaces an
    earlier one, so a deployment can redefine a built-in (or disable it with ``enabled: false``)."""
    return [s for s in SEGMENT_FILES.load(paths, builtin=builtin) if include_disabled or s.enabled]
