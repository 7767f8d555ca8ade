"""Experiments (variants and a control group) and the global holdout: the model and the assignment.

    scenario or campaign file:
        experiment:
          id: cart_reminder_2026q2          # the hash key: renaming it reshuffles everybody
          control: 0.1                      # 10% receive nothing (what attribution compares against)
          variants:
            - {name: a, weight: 1}                              # the scenario's own template and channel
            - {name: b, weight: 1, template: cart_reminder_b}   # or channel:, vars:, delay:, at: (+ timezone:)
    journey file: the same block; a variant takes its own branch of steps instead:
            - {name: short, weight: 1, goto: one_reminder}     # enters at step one_reminder (its branch)
    settings: holdout_share = 0.05, holdout_salt = "..."       # 5% receive no marketing at all

    assign(experiment, profile key) ─▶ u = hash(experiment id, key) in [0, 1)
        u < control ─▶ "control";  else the variant whose share of the weights [control, 1) holds u
    in_holdout(salt, share, key)    ─▶ hash(salt, key) < share

Both are pure functions of their inputs: a replay, a restart or another process assigns the same. The *key*
is the profile id the decision is made for, i.e. the surviving profile after merges (``resolver/merge.py``: the
oldest profile of a merged group survives and keeps its id; the losers' events, timers and counters move to
it). So the survivor keeps its own assignment and the people merged into it take the survivor's; nobody who was
a profile on their own before is reshuffled unless they were merged into an older profile. The recorded
``experiment.assigned`` event keeps the key it was computed for (``profile_key``), so attribution prefers
the survivor's own assignment over a merged-away profile's (see ``store/attribution.py``).

The two hashes use different inputs (the experiment id, the holdout salt), so the holdout and every experiment
are independent of one another. docs/experiments.md explains the choice for marketers.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cdp_hub.durations import (
    DEFAULT_TIMEZONE,
    TIME_OF_DAY_PATTERN,
    check_time_zone,
    parse_duration,
    parse_time_of_day,
)
from cdp_hub.schema.events import Context, Event, Identity, Traits, deterministic_event_id

__all__ = ["ASSIGNED", "CONTROL", "GLOBAL_HOLDOUT", "NO_EXPERIMENT", "NO_VARIANT", "Allocation", "Experiment", "Variant", "allocate",
           "assign", "assignment_event", "experiment_problems", "in_holdout", "refuse_goto", "unit_hash"]

ASSIGNED = "experiment.assigned"
NO_VARIANT = "none"
"""The variant label of a message outside any experiment (metrics, reports)."""
GLOBAL_HOLDOUT = "global_holdout"
"""The reason of a ``holdout`` decision: the profile is in the global holdout and gets no marketing."""

CONTROL = "control"
"""The name of the control group in assignments, decisions and reports (no variant may take it)."""
ZONE_WITHOUT_AT = 'timezone is the zone of at: give the variant an at (e.g. at: "10:00") or drop it'
"""The model's and the file check's message for a variant with a zone and no time of day."""
MAX_CONTROL = 0.5
"""A control group larger than half the audience costs more than it teaches."""
_ID_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"


class Variant(BaseModel):
    """One arm of an experiment: its weight, and what it changes of the scenario's or campaign's message."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_ID_PATTERN, description="the variant's name in decisions and reports")
    weight: float = Field(gt=0, description="its share among the variants (relative to their sum)")
    template: str | None = Field(default=None, description="a template instead of the scenario's or campaign's")
    channel: str | None = Field(default=None, description="a channel instance instead of the scenario's or "
                                "campaign's (its fallbacks stay)")
    vars: dict[str, Any] = Field(default_factory=dict, description="template variables added to the message's")
    delay: str | None = Field(default=None, description="send this long later than the other variants (a send-time "
                              "test): a scenario's timer fires later, a campaign's row waits after launch")
    at: str | None = Field(default=None, pattern=TIME_OF_DAY_PATTERN, description="send at this time of day "
                           "(24-hour HH:MM) in the customer's time zone: the next one at or after the send time "
                           "(after delay), e.g. \"10:00\"")
    timezone: str | None = Field(default=None, description="the zone of at for a customer whose profile has no "
                                 f"valid timezone (an IANA name; default {DEFAULT_TIMEZONE})")

    goto: str | None = Field(default=None, description="journeys: the step this variant's profiles enter at, "
                             "its own branch of the journey (default: the first step)")

    @field_validator("delay")
    @classmethod
    def _check_delay(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    # "before": these messages name the field and the syntax, where the pattern's would show a regex.
    @field_validator("at", mode="before")
    @classmethod
    def _check_at(cls, value: Any) -> Any:
        if value is not None:
            parse_time_of_day(value, field="at")
        return value

    @field_validator("timezone", mode="before")
    @classmethod
    def _check_timezone(cls, value: Any) -> Any:
        return value if value is None else check_time_zone(value, field="timezone")

    @model_validator(mode="after")
    def _zone_needs_at(self) -> Variant:
        if self.timezone is not None and self.at is None:
            raise ValueError(ZONE_WITHOUT_AT)
        return self


class Experiment(BaseModel):
    """Variants with weights and an optional control group that receives nothing."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_ID_PATTERN, description="the experiment's id: hashed with the profile id to "
                    "assign; a new id is a new experiment (everybody is assigned afresh)")
    variants: list[Variant] = Field(min_length=1, description="the arms that receive a message")
    control: float = Field(0.0, ge=0.0, le=MAX_CONTROL, description="the share (0 to 0.5) that receives "
                           "nothing and is recorded as control")

    @model_validator(mode="after")
    def _distinct_names(self) -> Experiment:
        names = [v.name for v in self.variants]
        if CONTROL in names:
            raise ValueError(f"a variant may not be named {CONTROL!r} (the control group's name)")
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        return self

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


def refuse_goto(experiment: Experiment | None) -> None:
    """A variant's ``goto`` (a branch of steps) means something in a journey only: refuse it elsewhere."""
    for variant in experiment.variants if experiment is not None else ():
        if variant.goto is not None:
            raise ValueError(f"experiment.variants: variant {variant.name!r} has goto, which only a journey "
                             "(steps) has; a single send or a campaign changes template, channel, vars or delay")


def unit_hash(*parts: str) -> float:
    """A uniform number in [0, 1) from ``parts`` (SHA-256; the same everywhere, unlike Python's ``hash``)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign(experiment: Experiment, profile_key: str) -> str:
    """The variant name (or ``"control"``) of ``profile_key`` in ``experiment``."""
    u = unit_hash("experiment", experiment.id, profile_key)
    if u < experiment.control:
        return CONTROL
    # Spread the rest, [control, 1), over the variants by weight.
    total = sum(v.weight for v in experiment.variants)
    point = (u - experiment.control) / (1.0 - experiment.control) * total
    running = 0.0
    for variant in experiment.variants:
        running += variant.weight
        if point < running:
            return variant.name
    return experiment.variants[-1].name  # rounding at the very top


def in_holdout(salt: str, share: float, profile_key: str) -> bool:
    """Whether ``profile_key`` is in the global holdout (``share`` of all profiles, chosen by ``salt``)."""
    return share > 0 and unit_hash("holdout", salt, profile_key) < share


@dataclass(frozen=True, slots=True)
class Allocation:
    """What the experiment step decided for one message: held out, control, a variant, or no experiment."""

    outcome: Literal["none", "holdout", "control", "variant"]
    experiment: Experiment | None = None
    variant: Variant | None = None

    @property
    def variant_name(self) -> str | None:
        """The name reports and decisions carry: the variant's, ``control``, or None without an experiment."""
        if self.outcome == "control":
            return CONTROL
        return self.variant.name if self.variant is not None else None


NO_EXPERIMENT = Allocation("none")


def allocate(experiment: Experiment | None, profile_key: str, *, purpose: str, holdout_share: float,
             holdout_salt: str) -> Allocation:
    """The experiment step of the contact policy: the global holdout (marketing only), then the experiment's
    assignment. Transactional and service messages are never held out, but may still be in an experiment."""
    if purpose == "marketing" and in_holdout(holdout_salt, holdout_share, profile_key):
        return Allocation("holdout", experiment)
    if experiment is None:
        return NO_EXPERIMENT
    name = assign(experiment, profile_key)
    if name == CONTROL:
        return Allocation("control", experiment)
    return Allocation("variant", experiment, experiment.variant(name))


def assignment_event(*, source: str, scenario: str, allocation: Allocation, profile_id: str,
                     identities: Iterable[Identity], now: datetime) -> Event | None:
    """The ``experiment.assigned`` event of one profile's arm (None without an experiment or when held out).
    Its id is deterministic per scenario, experiment and profile: every later trigger or run emits the same
    event, which the events table stores once."""
    experiment = allocation.experiment
    variant = allocation.variant_name
    if experiment is None or variant is None:
        return None
    record_id = f"{scenario}:{experiment.id}:{profile_id}"
    return Event.model_construct(
        event_id=deterministic_event_id(source, record_id, ASSIGNED), type=ASSIGNED, source=source,
        source_record_id=record_id, occurred_at=now, received_at=now, identities=list(identities),
        traits=Traits(), context=Context(), profile_id=uuid.UUID(profile_id),
        properties={"experiment": experiment.id, "scenario": scenario, "variant": variant,
                    "profile_key": profile_id})


def experiment_problems(document: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of a scenario or campaign document's ``experiment`` block, each with its JSON path, so a check
    can name the file line (the schema check names the path only). Empty when the block is fine or absent."""
    if not isinstance(document, Mapping) or "experiment" not in document:
        return []
    block = document["experiment"]
    if not isinstance(block, Mapping):
        return [(("experiment",), "experiment must be a mapping with id, variants and control")]
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if not isinstance(block.get("id"), str) or not block["id"]:
        problems.append((("experiment",), "experiment.id is required (the hash key of the assignment)"))
    control = block.get("control", 0)
    if isinstance(control, bool) or not isinstance(control, int | float) or not 0 <= control <= MAX_CONTROL:
        problems.append((("experiment", "control"),
                         f"control must be a share from 0 to {MAX_CONTROL} (e.g. 0.1 for 10%), not {control!r}"))
    variants = block.get("variants")
    if not isinstance(variants, Sequence) or isinstance(variants, str) or not variants:
        problems.append((("experiment", "variants"), "an experiment needs at least one variant"))
        return problems
    seen: dict[str, int] = {}
    for i, variant in enumerate(variants):
        if not isinstance(variant, Mapping):
            problems.append((("experiment", "variants", i), "a variant is a mapping with name and weight"))
            continue
        name = variant.get("name")
        if not isinstance(name, str) or not name:
            problems.append((("experiment", "variants", i), "a variant needs a name"))
        elif name == CONTROL:
            problems.append((("experiment", "variants", i, "name"),
                             f"{CONTROL!r} is the control group's name; give the variant another"))
        elif name in seen:
            problems.append((("experiment", "variants", i, "name"),
                             f"variant name {name!r} is used twice (also variant {seen[name]})"))
        else:
            seen[name] = i
        weight = variant.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
            problems.append((("experiment", "variants", i, "weight"),
                             f"weight must be a positive number, not {weight!r}"))
        problems.extend((("experiment", "variants", i, key), message) for key, message in _send_time_problems(variant))
    return problems


def _send_time_problems(variant: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A variant's send-time fields that are wrong, as ``(field, message)``."""
    problems = []
    for key, check in (("delay", parse_duration), ("at", parse_time_of_day), ("timezone", check_time_zone)):
        if variant.get(key) is not None:
            try:
                check(variant[key])  # the problem's path names the field
            except ValueError as exc:
                problems.append((key, str(exc)))
    if variant.get("timezone") is not None and variant.get("at") is None:
        problems.append(("timezone", ZONE_WITHOUT_AT))
    return problems
