"""Segments compiled to one set-based SQL statement each, for batch recomputation in the warehouse.

    Segment ─▶ CTE per aggregate rule (one pass over ``events`` of that type, grouped by profile)
           ─▶ boolean expression over ``profiles.golden`` and the aggregates (all/any/none → AND/OR/NOT)
           ─▶ SELECT profile_id FROM profiles LEFT JOIN the CTEs WHERE merged_into IS NULL AND <expression>
    diff   ─▶ INSERT INTO segment_changes  members ∖ segment_members → entered,  segment_members ∖ members → exited

Everything a user writes is a bound parameter: trait names and property paths are validated by the model
(:data:`~cdp_hub.segments.model.TRAIT_PATTERN`) and then passed as ``text[]`` JSON paths (``golden #>> $1``),
event types, values and window bounds as typed parameters; the SQL text is built only from this module's
own fragments. The SQL runs on PostgreSQL 12+ and Greenplum 7: CTEs, ``LEFT JOIN``, ``NOT EXISTS``, no
``MERGE``, nothing PostgreSQL-15-only. Every leaf is ``COALESCE(..., false)``, so ``NOT`` and missing values
behave as in :meth:`Segment.evaluate` (two-valued logic, not SQL's three).

The compiler reads a segment through the protocols below, which :mod:`cdp_hub.segments.model` satisfies: the
store stays below the segment model and imports nothing of it. :func:`json_text` and
:data:`NUMERIC_SQL_PATTERN` are the SQL's value semantics, which the model's Python evaluator shares.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

__all__ = [
    "NUMERIC_SQL_PATTERN",
    "AggregateLeaf",
    "CompiledSegment",
    "RuleGroup",
    "SegmentDefinition",
    "TraitLeaf",
    "compile_segment",
    "json_text",
]

_SQL_OPS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}

# What SQL's regular expression accepts as a number (``properties.total`` arrives as the string "100.50").
NUMERIC_SQL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"

_Scalar = str | int | float | bool


def json_text(value: Any) -> str:
    """The text PostgreSQL's ``#>>`` gives for a JSON value: strings bare, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


class TraitLeaf(Protocol):
    """A condition on one Golden Record trait (``TraitRule``)."""

    @property
    def kind(self) -> Literal["trait"]: ...
    @property
    def path(self) -> list[str]: ...
    @property
    def op(self) -> str: ...
    @property
    def value(self) -> _Scalar | list[_Scalar] | None: ...


class AggregateLeaf(Protocol):
    """A condition on the profile's stored events of one type (``AggregateRule``)."""

    @property
    def kind(self) -> Literal["aggregate"]: ...
    @property
    def aggregate(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def within_td(self) -> timedelta | None: ...
    @property
    def older_than_td(self) -> timedelta | None: ...
    @property
    def op(self) -> str | None: ...
    @property
    def value(self) -> int | float | None: ...
    @builtins.property  # the member `property` shadows the builtin in this class body
    def property(self) -> str | None: ...


class RuleGroup(Protocol):
    """Rules combined by ``all`` / ``any`` / ``none`` (``Group``)."""

    @property
    def kind(self) -> Literal["group"]: ...
    @property
    def combinator(self) -> str: ...
    @property
    def rules(self) -> Sequence[SqlRule]: ...


SqlRule = TraitLeaf | AggregateLeaf | RuleGroup


class SegmentDefinition(RuleGroup, Protocol):
    """A segment: its top-level rule group and its id (``Segment``)."""

    @property
    def id(self) -> str: ...


@dataclass
class _Params:
    values: list[Any] = field(default_factory=list)

    def add(self, value: Any, cast: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{cast}"


@dataclass(frozen=True)
class CompiledSegment:
    """The SQL of one segment: CTEs, the membership predicate, and its bound parameters."""

    segment_id: str
    ctes: tuple[str, ...]
    joins: tuple[str, ...]
    predicate: str
    params: tuple[Any, ...]

    def members_sql(self) -> tuple[str, list[Any]]:
        """``SELECT profile_id`` of every current member (live, unmerged profiles)."""
        return self._with(self._members_select()), list(self.params)

    def _members_select(self, extra_columns: str = "") -> str:
        joins = "".join(f"\n  {j}" for j in self.joins)
        return (f"SELECT p.profile_id{extra_columns} FROM profiles p{joins}\n"
                f" WHERE p.merged_into IS NULL AND {self.predicate}")

    def _with(self, body: str, extra_ctes: tuple[str, ...] = ()) -> str:
        ctes = self.ctes + extra_ctes
        return ("WITH " + ",\n".join(ctes) + "\n" if ctes else "") + body

    def diff_sql(self, run_id: Any) -> tuple[str, list[Any]]:
        """One statement that stores the run's diff in ``segment_changes`` (entered and exited), with the
        version and update time of each profile's Golden Record at that moment."""
        params = _Params(list(self.params))
        seg = params.add(self.segment_id, "text")
        run = params.add(run_id, "uuid")
        members = f"members AS (\n{self._members_select(', p.version, p.updated_at')}\n)"
        body = (
            f"SELECT m.profile_id, {seg}, {run}, 'entered', m.version, m.updated_at FROM members m\n"
            f" WHERE NOT EXISTS (SELECT 1 FROM segment_members sm\n"
            f"                    WHERE sm.segment_id = {seg} AND sm.profile_id = m.profile_id)\n"
            f"UNION ALL\n"
            f"SELECT sm.profile_id, {seg}, {run}, 'exited', p.version, p.updated_at\n"
            f"  FROM segment_members sm LEFT JOIN profiles p ON p.profile_id = sm.profile_id\n"
            f" WHERE sm.segment_id = {seg}\n"
            f"   AND NOT EXISTS (SELECT 1 FROM members m WHERE m.profile_id = sm.profile_id)"
        )
        sql = ("INSERT INTO segment_changes (profile_id, segment_id, run_id, change, profile_version, changed_at)\n"
               + self._with(body, (members,)))
        return sql, params.values


class _Compiler:
    def __init__(self, as_of: datetime) -> None:
        self.as_of = as_of
        self.params = _Params()
        self.ctes: list[str] = []
        self.joins: list[str] = []
        self._numeric: str | None = None

    def numeric_pattern(self) -> str:
        if self._numeric is None:
            self._numeric = self.params.add(NUMERIC_SQL_PATTERN, "text")
        return self._numeric

    def rule(self, rule: SqlRule) -> str:
        if rule.kind == "trait":
            return f"COALESCE({self.trait(rule)}, false)"
        if rule.kind == "aggregate":
            return f"COALESCE({self.aggregate(rule)}, false)"
        return self.group(rule)

    def group(self, group: RuleGroup) -> str:
        parts = [self.rule(r) for r in group.rules]
        if group.combinator == "all":
            return "(" + " AND ".join(parts) + ")"
        if group.combinator == "any":
            return "(" + " OR ".join(parts) + ")"
        return "NOT (" + " OR ".join(parts) + ")"

    def trait(self, rule: TraitLeaf) -> str:
        path = self.params.add(rule.path, "text[]")
        text = f"(p.golden #>> {path})"
        if rule.op == "exists":
            return f"({text} IS NOT NULL)"
        if rule.op == "not_exists":
            return f"({text} IS NULL)"
        if rule.op in ("in", "not_in"):
            assert isinstance(rule.value, list)
            values = self.params.add([json_text(v) for v in rule.value], "text[]")
            return f"({text} = ANY({values}))" if rule.op == "in" else f"({text} <> ALL({values}))"
        if rule.op == "contains":
            node = f"(p.golden #> {path})"
            element = self.params.add(json.dumps(rule.value), "text")
            needle = self.params.add(json_text(rule.value), "text")
            return (f"(CASE jsonb_typeof({node}) WHEN 'array' THEN {node} @> jsonb_build_array(({element})::jsonb)"
                    f" WHEN 'string' THEN strpos({text}, {needle}) > 0 ELSE false END)")
        op = _SQL_OPS[rule.op]
        if isinstance(rule.value, int | float) and not isinstance(rule.value, bool):
            value = self.params.add(Decimal(str(rule.value)), "numeric")
            return (f"(CASE WHEN {text} ~ {self.numeric_pattern()} THEN {text}::numeric {op} {value} END)")
        # Text in code-point order (the "C" collation), the same order Python's str comparison uses.
        value = self.params.add(json_text(rule.value), "text")
        return f"({text} COLLATE \"C\" {op} {value})"

    def aggregate(self, rule: AggregateLeaf) -> str:
        name = f"agg_{len(self.ctes) + 1}"
        where = [f"e.type = {self.params.add(rule.event, 'text')}", "e.profile_id IS NOT NULL",
                 f"e.occurred_at <= {self.params.add(self.as_of, 'timestamptz')}"]
        if rule.aggregate == "last":
            value = "max(e.occurred_at)"
        else:
            if rule.within_td is not None:
                where.append(f"e.occurred_at >= {self.params.add(self.as_of - rule.within_td, 'timestamptz')}")
            if rule.aggregate == "count":
                value = "count(*)::numeric"
            else:
                assert rule.property is not None
                prop = f"((e.body -> 'properties') #>> {self.params.add(rule.property.split('.'), 'text[]')})"
                value = f"sum(CASE WHEN {prop} ~ {self.numeric_pattern()} THEN {prop}::numeric END)"
        self.ctes.append(f"{name} AS (\n  SELECT e.profile_id, {value} AS v FROM events e\n"
                         f"   WHERE {' AND '.join(where)}\n   GROUP BY e.profile_id)")
        self.joins.append(f"LEFT JOIN {name} ON {name}.profile_id = p.profile_id")
        if rule.aggregate == "last":
            if rule.older_than_td is not None:
                cut = self.params.add(self.as_of - rule.older_than_td, "timestamptz")
                return f"({name}.v < {cut})"
            assert rule.within_td is not None
            cut = self.params.add(self.as_of - rule.within_td, "timestamptz")
            return f"({name}.v >= {cut})"
        assert rule.op is not None and rule.value is not None
        value_param = self.params.add(Decimal(str(rule.value)), "numeric")
        return f"(COALESCE({name}.v, 0) {_SQL_OPS[rule.op]} {value_param})"


def compile_segment(segment: SegmentDefinition, as_of: datetime) -> CompiledSegment:
    """The SQL of ``segment`` evaluated at ``as_of`` (windows end there; events after it do not count)."""
    compiler = _Compiler(as_of)
    predicate = compiler.group(segment)
    return CompiledSegment(segment.id, tuple(compiler.ctes), tuple(compiler.joins), predicate,
                           tuple(compiler.params.values))
