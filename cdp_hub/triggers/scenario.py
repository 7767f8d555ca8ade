"""Scenarios as data: YAML files validated against a JSON Schema, then loaded as pydantic models.

    id: abandoned_cart
    trigger: {event: cart.updated}
    conditions: [{field: event.properties.total, op: gte, value: 1000}]
    delay: 1h
    hold_until: {key: event.properties.cart_id, window: 1d}
    cancel_on: [order.placed]
    # or, instead of delay: send_at: {field: event.properties.delivery_slot_start, before: 1d}
    channel: email
    fallbacks: [sms]
    template: abandoned_cart
    frequency_cap: {max: 3, per: 7d}
    quiet_hours: {start: "21:00", end: "09:00"}
    priority: 10

A scenario with ``steps:`` instead of ``channel``/``template`` is a journey (a chain of sends, waits,
waits for an event, branches and splits; ``exit_on``, ``goals``, ``reentry``): the step models are here,
the engine is cdp_hub/triggers/journeys.py, docs/journeys.md explains them.

docs/scenarios.md explains each field; consent, lateness, hold-until, priorities and the decisions they make.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from cdp_hub.datafiles import DataFiles
from cdp_hub.durations import (
    DEFAULT_TIMEZONE,
    TIME_OF_DAY_PATTERN,
    DurationText,
    check_time_zone,
    parse_duration,
)
from cdp_hub.triggers.experiments import Experiment, refuse_goto

__all__ = ["END", "BranchRule", "CollectedValues", "Condition", "EventCount", "Exit", "Goal", "HoldUntil", "OncePer",
           "Predicate", "Scenario", "SendAt", "SendStep", "SplitArm", "Step", "WaitFor", "WaitSpec",
           "compile_conditions", "load_scenarios", "parse_duration", "path_reader", "scenario_json_schema",
           "step_problems"]


Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "not_exists", "contains"]


Predicate = Callable[[Mapping[str, Any]], bool]
"""A compiled condition (or a scenario's conditions together): ``scope`` -> whether it holds."""


class Condition(BaseModel):
    """``field`` is a dotted path into ``{"event": ..., "profile": ...}``; a path through a list collects
    the field of every element (``event.properties.items.category``: the categories of an order's lines), and
    then ``contains`` means one of them is the value, ``in`` any of them is in the list, ``not_in`` none is."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(pattern=r"^(event|profile)(\.[A-Za-z0-9_]+)+$")
    op: Op = "eq"
    value: Any = None
    _predicate: Predicate | None = PrivateAttr(default=None)

    def matches(self, scope: Mapping[str, Any]) -> bool:
        if self._predicate is None:
            self._predicate = self.compile()
        return self._predicate(scope)

    def compile(self) -> Predicate:
        """The condition as a closure: the path split, the value coerced and the operator chosen once.

        A busy triggers stage evaluates every scenario of an event's type against the event; the closure
        reads no model attribute (pydantic's private-attribute lookup costs more than the comparison)."""
        return _compile(tuple(self.field.split(".")), self.op, self.value)


def _compile(parts: tuple[str, ...], op: str, value: Any) -> Predicate:
    get = path_reader(parts)
    if op == "exists":
        def exists(scope: Mapping[str, Any]) -> bool:
            current = get(scope)
            return current is not _MISSING and current is not None
        return exists
    if op == "not_exists":
        def not_exists(scope: Mapping[str, Any]) -> bool:
            current = get(scope)
            return current is _MISSING or current is None
        return not_exists
    expected = _coerce(value)
    if op in ("eq", "ne") and isinstance(expected, str):
        # A value that is text and no number equals only the same text (no number or other value can).
        want_equal = op == "eq"

        def text_equals(scope: Mapping[str, Any]) -> bool:
            current = get(scope)
            if current is _MISSING:
                return False
            return (isinstance(current, str) and current == value) is want_equal
        return text_equals
    if op in ("eq", "ne"):
        want_equal = op == "eq"

        def equals(scope: Mapping[str, Any]) -> bool:
            current = get(scope)
            if current is _MISSING:
                return False
            return bool(_coerce(current) == expected) is want_equal
        return equals
    if op in ("in", "not_in"):
        members: Any = value or []
        hashed: frozenset[Any] | None = None
        if isinstance(members, list | tuple):
            try:  # a set when every member hashes: the same answers as the list (== after hash), in O(1)
                hashed = frozenset(members)
            except TypeError:
                hashed = None
        want_in = op == "in"

        def member(scope: Mapping[str, Any]) -> bool:
            current = get(scope)
            if current is _MISSING:
                return False
            if type(current) is CollectedValues:  # values collected through a list: any of them (in), none (not_in)
                return any(x in members for x in current) is want_in
            if hashed is not None:
                try:
                    return (current in hashed) is want_in
                except TypeError:  # an unhashable value (a list, an object) is compared one by one
                    pass
            return (current in members) is want_in
        return member
    if op == "contains":
        def contains(scope: Mapping[str, Any]) -> bool:
            current = get(scope)
            if current is _MISSING or not isinstance(current, str | list | dict):
                return False
            return value in current
        return contains
    compare = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}[op]

    def ordered(scope: Mapping[str, Any]) -> bool:
        current = get(scope)
        if current is _MISSING:
            return False
        try:
            return bool(compare(_coerce(current), expected))
        except TypeError:
            return False
    return ordered


class CollectedValues(list[Any]):
    """The values a path collected through a list (``event.properties.items.category``: every line's)."""


def path_reader(parts: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Any]:
    """A function that follows ``parts`` from a scope; ``_MISSING`` where a step is absent or not a mapping.
    A step into a list collects the field of every element that has it (a :class:`CollectedValues` list, told apart from a list value by its type)."""

    def get(scope: Mapping[str, Any]) -> Any:
        current: Any = scope
        for part in parts:
            if type(current) is dict:  # the common case (JSON), without the ABC check
                current = current.get(part, _MISSING)
                if current is _MISSING:
                    return _MISSING
            elif isinstance(current, Mapping) and part in current:
                current = current[part]
            elif type(current) is list or type(current) is CollectedValues:
                current = CollectedValues(x[part] for x in current if isinstance(x, Mapping) and x.get(part) is not None)
            else:
                return _MISSING
        return current
    return get


def compile_conditions(conditions: Sequence[Condition]) -> Predicate:
    """All of ``conditions`` as one predicate (no conditions: always true)."""
    predicates = tuple(c.compile() for c in conditions)
    if not predicates:
        return lambda scope: True
    if len(predicates) == 1:
        return predicates[0]
    return lambda scope: all(p(scope) for p in predicates)


_MISSING: Any = object()


def _coerce(value: Any) -> Any:
    # Money arrives as strings ("100.50"); compare numbers as numbers.
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


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: str = Field(description="the event type that starts the scenario, e.g. cart.updated")


class FrequencyCap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max: int = Field(ge=1)
    per: str = Field(description="window, e.g. 1d, 7d")
    scope: Literal["scenario", "profile"] = Field(
        "profile", description="count this scenario's messages only, or all marketing messages to the profile"
    )

    @property
    def window(self) -> timedelta:
        return parse_duration(self.per)


class QuietHours(BaseModel):
    """No marketing message from ``start`` to ``end`` (local ``HH:MM``, 24-hour) in the customer's zone."""

    model_config = ConfigDict(extra="forbid")

    start: str = Field(pattern=TIME_OF_DAY_PATTERN, description="local time of day, e.g. 21:00")
    end: str = Field(pattern=TIME_OF_DAY_PATTERN, description="local time of day, e.g. 09:00")
    default_timezone: str = DEFAULT_TIMEZONE

    @field_validator("default_timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        return check_time_zone(value, field="default_timezone")


class HoldUntil(BaseModel):
    """One message per key: a repeated trigger with the same key resets the wait instead of adding a message."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field("profile", pattern=r"^(profile|event(\.[A-Za-z0-9_]+)+)$",
                     description="'profile', or a path into the trigger event, e.g. event.properties.cart_id")
    window: str | None = Field(None, description="at most one message per key in this window, e.g. 1d")

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @property
    def window_td(self) -> timedelta | None:
        return parse_duration(self.window) if self.window else None

    def key_of(self, event: Mapping[str, Any]) -> str | None:
        """The key of a trigger event (its JSON form); None when the event does not have it."""
        if self.key == "profile":
            return "profile"
        current: Any = event
        for part in self.key.split(".")[1:]:
            if not isinstance(current, Mapping) or part not in current:
                return None
            current = current[part]
        return None if current is None or isinstance(current, dict | list) else str(current)


class SendAt(BaseModel):
    """Send relative to a time the trigger event carries (a delivery slot, points expiring) instead of after
    it: ``{field: event.properties.delivery_slot_start, before: 1d}``."""

    model_config = ConfigDict(extra="forbid")

    field: str = Field(pattern=r"^event(\.[A-Za-z0-9_]+)+$",
                       description="a date-time of the trigger event, e.g. event.properties.expires_at")
    before: str | None = Field(None, description="this long before it, e.g. 7d")
    after: str | None = Field(None, description="this long after it, e.g. 1h")

    @field_validator("before", "after")
    @classmethod
    def _check_offset(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    def time_of(self, event: Mapping[str, Any]) -> datetime | None:
        """The send time for a trigger event (its JSON form); None when the event lacks the field or it is no
        date-time."""
        current: Any = event
        for part in self.field.split(".")[1:]:
            if not isinstance(current, Mapping) or part not in current:
                return None
            current = current[part]
        if isinstance(current, str):
            try:
                current = datetime.fromisoformat(current.replace("Z", "+00:00"))
            except ValueError:
                return None
        if not isinstance(current, datetime):
            return None
        at = current if current.tzinfo else current.replace(tzinfo=UTC)
        if self.before:
            at -= parse_duration(self.before)
        if self.after:
            at += parse_duration(self.after)
        return at


# -- journeys: the step models -----------------------------------------------------------------------------

END = "end"
"""The target that ends a journey (``next: end``); the last step of the list ends it too."""
_STEP_ID = r"^[a-z0-9][a-z0-9_\-]{0,63}$"


class SendStep(BaseModel):
    """What a ``send`` step sends: through the scenario's contact policy (consent, caps, quiet hours, ...)."""

    model_config = ConfigDict(extra="forbid")

    channel: str
    fallbacks: list[str] = Field(default_factory=list)
    template: str
    vars: dict[str, Any] = Field(default_factory=dict, description="template variables added to the journey's")


class WaitSpec(BaseModel):
    """How long a ``wait`` step waits: ``duration`` after the step began, or ``since_entry`` after the
    profile entered the journey; ``at``: at this time of day on the day the wait ends, in the customer's time
    zone (their profile's ``timezone``, else ``timezone``): ``{duration: 3d, at: "11:00"}`` is the third day
    at 11:00; ``at`` alone the next 11:00."""

    model_config = ConfigDict(extra="forbid")

    duration: DurationText | None = Field(default=None, description="e.g. 3d")
    since_entry: DurationText | None = Field(default=None, description="until this long after the entry, e.g. 14d")
    at: str | None = Field(default=None, pattern=TIME_OF_DAY_PATTERN, description="at this local time on the day the wait ends, e.g. \"10:00\"")
    timezone: str = Field(DEFAULT_TIMEZONE, description="the time zone of a customer whose profile has none")

    @model_validator(mode="after")
    def _something(self) -> WaitSpec:
        if self.duration is None and self.since_entry is None and self.at is None:
            raise ValueError("a wait needs duration, since_entry or at")
        if self.duration is not None and self.since_entry is not None:
            raise ValueError("a wait counts from the step (duration) or from the entry (since_entry), not both")
        return self


class WaitFor(BaseModel):
    """A ``wait_for`` step: until an event of ``event`` (with ``conditions``) happens, at most ``within``."""

    model_config = ConfigDict(extra="forbid")

    event: str
    conditions: list[Condition] = Field(default_factory=list, description="on event.* (the awaited event) "
                                        "and profile.*")
    within: DurationText = Field(description="the timeout, e.g. 14d")
    match: list[str] = Field(default_factory=list, description="properties the awaited event must share with the "
                             "event that started the journey, e.g. [order_id]: the delivery of this order")


class EventCount(BaseModel):
    """An event aggregate for a ``branch``: how many events of a type the profile had ``within`` before."""

    model_config = ConfigDict(extra="forbid")

    count: str = Field(description="an event type, e.g. order.placed")
    within: DurationText = Field(description="the look-back window, e.g. 90d")
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte"] = "gte"
    value: int = Field(ge=0)


class BranchRule(BaseModel):
    """One arm of a ``branch``: when every condition holds, go to ``then``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    when: list[Condition | EventCount] = Field(alias="if", min_length=1,
                                               description="conditions on profile.* (traits, profile.segments) "
                                               "and event.* (the entry event), or event counts")
    then: str = Field(pattern=_STEP_ID)


class SplitArm(BaseModel):
    """One arm of a ``split``: its weight among the arms, and the step it goes to."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(gt=0)
    then: str = Field(pattern=_STEP_ID)


class Step(BaseModel):
    """One step of a journey: exactly one of ``send``, ``wait``, ``wait_for``, ``branch``, ``split``. The next
    step is the following one in the list unless ``next`` (or ``on_event``/``on_timeout``, ``then``/``else``)
    names another; ``end`` ends the journey."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=_STEP_ID)
    send: SendStep | None = None
    wait: str | WaitSpec | None = Field(default=None, description="a duration (3d), or {duration, since_entry, at}")
    wait_for: WaitFor | None = None
    on_event: str | None = Field(default=None, pattern=_STEP_ID, description="wait_for: where to go when it came")
    on_timeout: str | None = Field(default=None, pattern=_STEP_ID, description="wait_for: where to go when it "
                                   "did not come in time")
    branch: list[BranchRule] | None = Field(default=None, min_length=1)
    otherwise: str | None = Field(default=None, alias="else", pattern=_STEP_ID,
                                  description="branch: where to go when no arm holds")
    split: list[SplitArm] | None = Field(default=None, min_length=1)
    next: str | None = Field(default=None, pattern=_STEP_ID)

    @field_validator("wait")
    @classmethod
    def _check_wait(cls, value: str | WaitSpec | None) -> str | WaitSpec | None:
        if isinstance(value, str):
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        kinds = [k for k in ("send", "wait", "wait_for", "branch", "split") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"step {self.id!r} must be exactly one of send, wait, wait_for, branch, split "
                             f"(it has {', '.join(kinds) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("send", "wait", "wait_for", "branch", "split") if getattr(self, k) is not None)

    @property
    def wait_spec(self) -> WaitSpec | None:
        if isinstance(self.wait, str):
            return WaitSpec(duration=self.wait)
        return self.wait


class Goal(BaseModel):
    """An event that marks the journey converted and ends it (recorded as ``journey.converted``)."""

    model_config = ConfigDict(extra="forbid")

    event: str
    conditions: list[Condition] = Field(default_factory=list)


class Exit(BaseModel):
    """An event that ends the journey at whatever step it is (recorded as ``journey.exited``); with
    ``conditions``, only an event they hold for (a ``segment.entered`` of one segment, an order over a sum)."""

    model_config = ConfigDict(extra="forbid")

    event: str
    conditions: list[Condition] = Field(default_factory=list)


class OncePer(BaseModel):
    """Re-entry at most once per window (event time of the entries)."""

    model_config = ConfigDict(extra="forbid")

    once_per: DurationText = Field(description="e.g. 7d")


def step_problems(steps: Any, experiment: Any = None) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of a journey's step references, each with its JSON path: a duplicate id, a target that names
    no step (a step's, or an experiment variant's ``goto``), a step no path reaches (a variant's ``goto`` is
    an entry too). Works on the document as written (so a check can name the file line), and on a parsed
    journey's steps and experiment dumped by alias."""
    if not isinstance(steps, Sequence) or isinstance(steps, str):
        return []
    entries: list[tuple[tuple[str | int, ...], Any]] = []
    variants = experiment.get("variants") if isinstance(experiment, Mapping) else None
    if isinstance(variants, Sequence) and not isinstance(variants, str):
        entries = [(("experiment", "variants", j, "goto"), v["goto"]) for j, v in enumerate(variants)
                   if isinstance(v, Mapping) and v.get("goto") is not None]
    ids: dict[str, int] = {}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, step in enumerate(steps):
        if isinstance(step, Mapping) and isinstance(step.get("id"), str):
            if step["id"] in ids:
                problems.append((("steps", i, "id"), f"duplicate step id {step['id']!r}"))
            elif step["id"] == END:
                problems.append((("steps", i, "id"), f"{END!r} ends a journey; give the step another id"))
            else:
                ids[step["id"]] = i
    edges: dict[int, list[str]] = {}
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping):
            continue
        targets: list[tuple[tuple[str | int, ...], Any]] = []
        for key in ("next", "on_event", "on_timeout", "else"):
            if step.get(key) is not None:
                targets.append(((key,), step[key]))
        for key in ("branch", "split"):
            arms = step.get(key)
            if isinstance(arms, Sequence) and not isinstance(arms, str):
                targets.extend(((key, j, "then"), arm.get("then")) for j, arm in enumerate(arms)
                               if isinstance(arm, Mapping) and arm.get("then") is not None)
        following = steps[i + 1]["id"] if i + 1 < len(steps) and isinstance(steps[i + 1], Mapping) else END
        falls_through = (step.get("next") is None and "branch" not in step and "split" not in step
                         and not ("wait_for" in step and step.get("on_event") and step.get("on_timeout")))
        if "branch" in step and step.get("else") is None:
            falls_through = True
        edges[i] = [str(t) for _, t in targets] + ([str(following)] if falls_through else [])
        for path, target in targets:
            if target != END and target not in ids:
                problems.append((("steps", i, *path), f"unknown step {target!r}"
                                 + (f" (steps: {', '.join(ids)})" if ids else "")))
    for path, target in entries:
        if target not in ids:
            problems.append((path, f"unknown step {target!r}" + (f" (steps: {', '.join(ids)})" if ids else "")))
    if problems or not ids:
        return problems
    reached = {0, *(ids[target] for _, target in entries)}
    todo = list(reached)
    while todo:
        for target in edges.get(todo.pop(), []):
            j = ids.get(target)
            if j is not None and j not in reached:
                reached.add(j)
                todo.append(j)
    for i, step in enumerate(steps):
        if i not in reached and isinstance(step, Mapping):
            problems.append((("steps", i), f"step {step.get('id')!r} is unreachable (no step leads to it)"))
    return problems


JOURNEY_VARIANT_REFUSES = ("template", "channel", "delay", "at", "timezone")
"""What a journey's variant may not change: its branch's steps name their own templates, channels and waits (a
``wait`` step takes ``at`` and ``timezone``)."""


_SINGLE_OR_STEPS: dict[str, Any] = {"anyOf": [{"required": ["channel", "template"]}, {"required": ["steps"]}]}
"""A single send names its channel and template, a journey has steps (the model refuses both at once, with a
plainer message than the schema's)."""


class Scenario(BaseModel):
    """A single send (``channel``, ``template``) or a journey (``steps``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_SINGLE_OR_STEPS)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    description: str = ""
    enabled: bool = True
    trigger: Trigger
    conditions: list[Condition] = Field(default_factory=list)
    delay: str | None = Field(default=None, description="wait before sending, e.g. 1h")
    max_age: str | None = Field(default=None, description="ignore trigger events older than this, e.g. 1d "
                                "(default: the deployment's max_trigger_age for marketing scenarios)")
    lateness: str | None = Field(default=None, description="drop a trigger that arrives this long after its "
                                 "send time (default: the deployment's allowed_lateness)")
    hold_until: HoldUntil | None = Field(default=None, description="one message per key; repeats reset the wait")
    send_at: SendAt | None = Field(default=None, description="send relative to a date-time on the trigger event "
                                   "(e.g. a day before the delivery slot) instead of after a delay")
    priority: int = Field(0, description="when marketing scenarios fire for one profile within the priority "
                          "window, the highest priority wins; the others are decided lost_priority")
    cancel_on: list[str] = Field(default_factory=list, description="event types that cancel a pending send")
    channel: str = Field("", description="the channel of a single-send scenario (a journey's sends name theirs)")
    fallbacks: list[str] = Field(default_factory=list)
    template: str = Field("", description="the template of a single-send scenario")
    steps: list[Step] | None = Field(default=None, min_length=1, description="a journey: its steps, the first "
                                     "one where a profile enters (docs/journeys.md)")
    exit_on: list[str | Exit] = Field(default_factory=list, description="journeys: events that end the journey "
                                      "at any step: an event type, or {event, conditions}")
    goals: list[Goal] = Field(default_factory=list, description="journeys: events that mark it converted and "
                              "end it")
    reentry: Literal["once", "always"] | OncePer = Field(
        "once", description="journeys: enter once ever, once per window ({once_per: 7d}), or always (a new "
        "entry whenever the profile is not in the journey)")
    category: Literal["marketing", "transactional", "service"] = "marketing"
    once_per_profile: bool = False
    frequency_cap: FrequencyCap | None = None
    quiet_hours: QuietHours | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    experiment: Experiment | None = Field(
        default=None, description="variants with weights and a control group that receives nothing "
        "(docs/experiments.md)")

    @field_validator("delay", "max_age", "lateness")
    @classmethod
    def _check_duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> Scenario:
        if self.send_at is not None and self.delay is not None:
            raise ValueError("a scenario waits either a delay after its trigger or until send_at, not both")
        if self.steps is None and (not self.channel or not self.template):
            raise ValueError("a scenario needs channel and template, or steps (a journey)")
        if self.steps is not None:
            if self.channel or self.template:
                raise ValueError("a journey's sends name their channel and template; drop them from the top")
            single = [f for f in ("delay", "send_at", "hold_until") if getattr(self, f) is not None]
            if single or self.cancel_on or self.once_per_profile:
                raise ValueError("a journey waits with its steps and leaves with exit_on; drop "
                                 + ", ".join(single + ["cancel_on"] * bool(self.cancel_on)
                                             + ["once_per_profile"] * self.once_per_profile))
            if self.experiment is not None:
                for variant in self.experiment.variants:
                    sends = [f for f in JOURNEY_VARIANT_REFUSES if getattr(variant, f, None) is not None]
                    if sends:
                        raise ValueError(
                            f"experiment.variants: in a journey, variant {variant.name!r} takes its own branch "
                            f"(goto: a step) and may add vars; drop {', '.join(sends)} and give the send and wait "
                            "steps of its branch their own")
            problems = step_problems([s.model_dump(by_alias=True, exclude_none=True) for s in self.steps],
                                     self.experiment.model_dump(exclude_none=True) if self.experiment else None)
            if problems:
                path, message = problems[0]
                raise ValueError(".".join(map(str, path)) + ": " + message)
        else:
            if self.exit_on or self.goals or self.reentry != "once":
                raise ValueError("exit_on, goals and reentry are for journeys (steps)")
            refuse_goto(self.experiment)
        return self

    @property
    def is_journey(self) -> bool:
        return self.steps is not None

    @property
    def exits(self) -> list[Exit]:
        """``exit_on`` with every entry as an :class:`Exit` (an event type alone has no conditions)."""
        return [Exit(event=e) if isinstance(e, str) else e for e in self.exit_on]

    @property
    def stream_types(self) -> frozenset[str]:
        """Every event type whose records on ``cdp.profile-events`` this scenario reads: its trigger and
        ``cancel_on``; a journey's waits, exits, goals and the events its conditions count. The resolver must
        pass each of them on (``profile_events_omit`` may name none of them)."""
        types = {self.trigger.event, *self.cancel_on, *(e.event for e in self.exits), *(g.event for g in self.goals)}
        for step in self.steps or ():
            if step.wait_for is not None:
                types.add(step.wait_for.event)
            types.update(c.count for rule in step.branch or () for c in rule.when if isinstance(c, EventCount))
        return frozenset(types)

    @property
    def delayed(self) -> bool:
        """Whether the scenario waits (a durable timer) rather than deciding at once."""
        return bool(self.delay_td) or self.send_at is not None

    def fire_time(self, event_time: datetime, event: Mapping[str, Any]) -> datetime | None:
        """When a message for a trigger at ``event_time`` (``event``: its JSON form) is due; None when the
        scenario sends relative to a field the event lacks."""
        if self.send_at is not None:
            return self.send_at.time_of(event)
        return event_time + (self.delay_td or timedelta(0))

    @property
    def delay_td(self) -> timedelta | None:
        return parse_duration(self.delay) if self.delay else None

    @property
    def max_age_td(self) -> timedelta | None:
        return parse_duration(self.max_age) if self.max_age else None

    @property
    def lateness_td(self) -> timedelta | None:
        return parse_duration(self.lateness) if self.lateness else None

    def matches(self, scope: Mapping[str, Any]) -> bool:
        return all(c.matches(scope) for c in self.conditions)

    def compile(self) -> Predicate:
        """The scenario's conditions as one predicate, for a caller that matches many events (the stage)."""
        return compile_conditions(self.conditions)


SCENARIO_FILES: DataFiles[Scenario] = DataFiles(Scenario, what="scenario", schema_name="scenario.schema.json",
                                                 package="cdp_hub.triggers", folder="scenarios")


def scenario_json_schema() -> dict[str, Any]:
    return SCENARIO_FILES.json_schema()


def parse_scenario(data: Any, *, origin: str) -> Scenario:
    """Validate one scenario document; errors name the file, the JSON path and the offending value."""
    return SCENARIO_FILES.parse(data, origin=origin)


def load_scenarios(paths: Iterable[Path] = (), *, builtin: bool = True) -> list[Scenario]:
    """Built-in scenarios plus every ``*.yaml`` in ``paths`` (files or folders); a later id replaces an
    earlier one, so a deployment can override a built-in."""
    return [s for s in SCENARIO_FILES.load(paths, builtin=builtin) if s.enabled]
