"""Compiled scenario conditions answer exactly as the reading of a condition says (the oracle below is that
reading, written plainly: walk the path, coerce numbers, compare), over generated scopes and conditions; and the
scenario index (by trigger type, then equality lookups) finds what checking every scenario would."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cdp_hub.triggers.index import ScenarioIndex
from cdp_hub.triggers.scenario import Condition, Scenario, compile_conditions

_MISSING = object()


def _coerce(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return value
    return value


def oracle(field: str, op: str, value: Any, scope: Mapping[str, Any]) -> bool:
    current: Any = scope
    spread = False
    for part in field.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list):  # a path through a list collects the field of every element
            current = [x[part] for x in current if isinstance(x, Mapping) and x.get(part) is not None]
            spread = True
        else:
            current = _MISSING
            break
    if spread and op in ("in", "not_in"):  # any collected value in the list (in), none (not_in)
        hit = any(x in (value or []) for x in current)
        return hit if op == "in" else not hit
    if op == "exists":
        return current is not _MISSING and current is not None
    if op == "not_exists":
        return current is _MISSING or current is None
    if current is _MISSING:
        return False
    if op in ("eq", "ne") and isinstance(_coerce(value), str):
        same = isinstance(current, str) and current == value
        return same if op == "eq" else not same
    if op == "eq":
        return bool(_coerce(current) == _coerce(value))
    if op == "ne":
        return bool(_coerce(current) != _coerce(value))
    if op == "in":
        return current in (value or [])
    if op == "not_in":
        return current not in (value or [])
    if op == "contains":
        return value in current if isinstance(current, str | list | dict) else False
    a, b = _coerce(current), _coerce(value)
    try:
        if op == "gt":
            return bool(a > b)
        if op == "gte":
            return bool(a >= b)
        if op == "lt":
            return bool(a < b)
        return bool(a <= b)
    except TypeError:
        return False


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.5, 1.0, 2.5]),
                     st.sampled_from(["a", "b", "1", "2.5", "0", "gold", ""]))
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3))
_fields = st.sampled_from(["event.properties.x", "event.properties.y", "profile.x", "profile.tier",
                           "event.type", "profile.nested.x", "profile.lines.x"])
_ops = st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "not_exists", "contains"])


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    props = draw(st.dictionaries(st.sampled_from(["x", "y"]), _values, max_size=2))
    profile = draw(st.dictionaries(st.sampled_from(["x", "tier", "nested"]),
                                   st.one_of(_values, st.fixed_dictionaries({"x": _values})), max_size=3))
    if draw(st.booleans()):  # an order's lines: a list of objects, some without the field
        profile["lines"] = draw(st.lists(st.one_of(st.fixed_dictionaries({"x": _scalars}), st.just({})),
                                         max_size=3))
    return {"event": {"type": "cart.updated", "properties": props}, "profile": profile}


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except TypeError as exc:  # e.g. `1 in "abc"`: both must fail alike
        return type(exc)


@settings(max_examples=1500, deadline=None)
@given(field=_fields, op=_ops, value=_values, scope=scopes())
def test_compiled_conditions_answer_as_the_oracle(field: str, op: str, value: Any, scope: dict[str, Any]) -> None:
    condition = Condition(field=field, op=op, value=value)  # type: ignore[arg-type]
    compiled = condition.compile()
    assert _safe(lambda: compiled(scope)) == _safe(lambda: oracle(field, op, value, scope))
    assert _safe(lambda: condition.matches(scope)) == _safe(lambda: oracle(field, op, value, scope))


def test_conditions_together_and_none() -> None:
    scope = {"event": {"properties": {"total": "1990.00"}}, "profile": {"tier": "gold"}}
    both = [Condition(field="event.properties.total", op="gte", value=1000),
            Condition(field="profile.tier", op="eq", value="gold")]
    assert compile_conditions(both)(scope) is True
    assert compile_conditions([*both, Condition(field="profile.tier", op="eq", value="silver")])(scope) is False
    assert compile_conditions([])(scope) is True
    scenario = Scenario.model_validate({"id": "s", "trigger": {"event": "cart.updated"}, "channel": "email",
                                        "template": "welcome", "conditions": [c.model_dump() for c in both]})
    assert scenario.compile()(scope) is scenario.matches(scope) is True


_indexed_conditions = st.one_of(
    st.fixed_dictionaries({"field": _fields, "op": st.just("eq"), "value": st.sampled_from(["a", "b", "gold", "1"])}),
    st.fixed_dictionaries({"field": _fields, "op": st.just("in"),
                           "value": st.lists(st.sampled_from(["a", "b", "gold", "2.5"]), min_size=1, max_size=3)}),
    st.fixed_dictionaries({"field": _fields, "op": _ops, "value": _values}))


@settings(max_examples=400, deadline=None)
@given(conditions=st.lists(st.lists(_indexed_conditions, max_size=2), min_size=1, max_size=12),
       types=st.lists(st.sampled_from(["cart.updated", "order.placed"]), min_size=12, max_size=12),
       scope=scopes())
def test_the_index_matches_what_every_scenario_would(conditions: list[list[dict[str, Any]]], types: list[str],
                                                     scope: dict[str, Any]) -> None:
    scenarios = [Scenario.model_validate({"id": f"s{i}", "trigger": {"event": types[i]}, "channel": "email",
                                          "template": "welcome", "conditions": c}) for i, c in enumerate(conditions)]
    index = ScenarioIndex(scenarios)
    for event_type in ("cart.updated", "order.placed", "app.opened"):
        expected = [s.id for s in scenarios if s.trigger.event == event_type and _safe(lambda s=s: s.matches(scope))
                    is True]
        got = _safe(lambda t=event_type: [c.scenario.id for c in index.matching(t, scope)])
        assert got == expected or (got is TypeError and any(
            _safe(lambda s=s: s.matches(scope)) is TypeError for s in scenarios))
