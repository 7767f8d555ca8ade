"""Scenario checks beyond the shape: every reference must name something installed and configured.

    scenario files (built-ins, scenarios_dir) ─▶ parse (JSON Schema, pydantic) ─▶ for each scenario:
        trigger and cancel_on       registered event types (built-in and plugin-registered), passed on by the
                                    resolver (none of profile_events_omit)
        conditions, hold_until key, send_at  event properties of the trigger's payload, event fields, profile traits
        segments                    segment.entered/exited on a known segment, profile.segments contains one
        channel, fallbacks          a configured channel instance, or a channel type of that name
        template                    a template for every channel kind used, in the deployment's locale
        experiment                  weights positive, names unique, control 0..0.5 (with the line, before the
                                    schema check); a variant's channel configured, its template there
        steps (journeys)            step references: duplicate or unknown step ids, unreachable steps (with the
                                    line, before the schema check); wait_for, exit_on, goals and event counts
                                    name registered event types the resolver passes on; each send step's
                                    channel and template as above
    ─▶ problems, each ``file:line: $.json.path: message``

``cdp-hub scenarios validate`` prints them; ``cdp-hub run`` refuses to start the triggers stage while there is
one. The caller says what is installed (``channel_kind``, ``template_exists``): this module needs neither the
hub nor the delivery package.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cdp_hub.datafiles import LocatedDocument, located_documents
from cdp_hub.errors import ConfigurationError
from cdp_hub.schema.events import Event, Traits
from cdp_hub.schema.payloads import EVENT_TYPES
from cdp_hub.triggers.experiments import Experiment, experiment_problems
from cdp_hub.triggers.scenario import SCENARIO_FILES, EventCount, Scenario, step_problems

__all__ = ["Installed", "Problem", "check_experiment", "check_scenario_files", "check_sending", "did_you_mean", "located_problems",
           "scenario_documents"]

PROFILE_FIELDS = frozenset(Traits.model_fields) | {"segments", "consent", "profile_id"}
EVENT_FIELDS = frozenset(Event.model_fields)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario, where it is."""

    origin: str
    line: int | None
    path: str
    message: str
    severity: str = "error"
    """``error`` (the scenario cannot work: validate fails, the daemon does not start) or ``warning``."""

    @classmethod
    def at(cls, doc: LocatedDocument, path: tuple[str | int, ...], message: str,
           severity: str = "error") -> Problem:
        """A problem at JSON ``path`` of ``doc``, with its line."""
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        return cls(doc.origin, doc.line_of(path), where, message, severity)

    def __str__(self) -> str:
        where = f"{self.origin}:{self.line}" if self.line else self.origin
        label = "" if self.severity == "error" else "warning: "
        return f"{where}: {self.path}: {label}{self.message}"


@dataclass(frozen=True)
class Installed:
    """What the deployment has: how a channel instance is sent (its kind, or None when it is not there),
    whether a template exists for ``(name, kind, locale)``, the segments and the extra profile traits."""

    channel_kind: Callable[[str], str | None]
    template_exists: Callable[[str, str, str], bool]
    segments: frozenset[str]
    locales: tuple[str, ...] = ("ru",)
    traits: frozenset[str] = frozenset()
    omitted: frozenset[str] = frozenset()
    """Event types the resolver does not pass on to the triggers stage (settings.profile_events_omit)."""


def _omitted(name: str, installed: Installed) -> str | None:
    """Why a scenario cannot read events of type ``name``; None when the resolver passes them on."""
    if name not in installed.omitted:
        return None
    return (f"the resolver does not pass {name} events on to the triggers stage (profile_events_omit); remove "
            f"{name} from profile_events_omit in every process, or do without it")


def scenario_documents(paths: Iterable[Path], *, builtin: bool = True) -> list[LocatedDocument]:
    """Every scenario document of the built-ins and ``paths``, with the line of each JSON path."""
    return located_documents(paths, what="scenarios", texts=SCENARIO_FILES.builtin_files() if builtin else ())


def check_scenario_files(paths: Sequence[Path], installed: Installed, *,
                         builtin: bool = True) -> tuple[list[Scenario], list[Problem]]:
    """Parse and check every scenario; a later id replaces an earlier one (only the ones that run are
    checked). Returns the enabled scenarios and the problems found."""
    problems: list[Problem] = []
    by_id: dict[str, tuple[Scenario, LocatedDocument]] = {}
    for doc in scenario_documents(paths, builtin=builtin):
        origin = f"{doc.origin}[{doc.prefix[0]}]" if doc.prefix else doc.origin
        early = located_problems(doc)
        if early:
            problems.extend(early)
            continue
        try:
            scenario = SCENARIO_FILES.parse(doc.data, origin=origin)
        except ConfigurationError as exc:
            problems.append(Problem(doc.origin, doc.lines.get(doc.prefix), "$", str(exc)))
            continue
        by_id[scenario.id] = (scenario, doc)
    running = [(s, d) for s, d in by_id.values() if s.enabled]
    for scenario, doc in running:
        problems.extend(check_scenario(scenario, doc, installed))
    return [s for s, _ in running], problems


def check_scenario(scenario: Scenario, doc: LocatedDocument, installed: Installed) -> list[Problem]:
    problems: list[Problem] = []

    def problem(path: tuple[str | int, ...], message: str, severity: str = "error") -> None:
        problems.append(Problem.at(doc, path, message, severity))

    def event_type(path: tuple[str | int, ...], name: str) -> None:
        if name not in EVENT_TYPES:
            problem(path, f"unknown event type {name!r}{did_you_mean(name, EVENT_TYPES)}")
        elif (omitted := _omitted(name, installed)) is not None:
            problem(path, omitted)

    event_type(("trigger", "event"), scenario.trigger.event)
    for i, name in enumerate(scenario.cancel_on):
        event_type(("cancel_on", i), name)

    for i, cond in enumerate(scenario.conditions):
        message = _field_problem(cond.field, scenario.trigger.event, installed)
        if message:
            problem(("conditions", i, "field"), message)
        segment = _segment_named(cond.field, cond.op, cond.value, scenario.trigger.event)
        if segment is not None and segment not in installed.segments:
            problem(("conditions", i, "value"), f"unknown segment {segment!r}"
                    f"{did_you_mean(segment, installed.segments)}")
    if scenario.hold_until is not None and scenario.hold_until.key != "profile":
        message = _field_problem(scenario.hold_until.key, scenario.trigger.event, installed)
        if message:
            problem(("hold_until", "key"), message)

    if scenario.send_at is not None:
        message = _field_problem(scenario.send_at.field, scenario.trigger.event, installed)
        if message:
            problem(("send_at", "field"), message)

    if scenario.steps is not None:
        problems.extend(check_steps(scenario, doc, installed))
        return problems
    problems.extend(check_sending(doc, installed, channel=scenario.channel, fallbacks=scenario.fallbacks,
                                  template=scenario.template, experiment=scenario.experiment))
    return problems


def check_steps(scenario: Scenario, doc: LocatedDocument, installed: Installed) -> list[Problem]:
    """A journey's references: the event types it waits for, exits on, converts on and counts; the fields
    and segments its conditions name; each send step's channel and templates."""
    problems: list[Problem] = []

    def problem(path: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem.at(doc, path, message))

    def event_type(path: tuple[str | int, ...], name: str) -> bool:
        if name not in EVENT_TYPES:
            problem(path, f"unknown event type {name!r}{did_you_mean(name, EVENT_TYPES)}")
            return False
        if (omitted := _omitted(name, installed)) is not None:
            problem(path, omitted)
        return True

    def conditions(path: tuple[str | int, ...], conds: Sequence[Any], event: str) -> None:
        for i, cond in enumerate(conds):
            if isinstance(cond, EventCount):
                event_type((*path, i, "count"), cond.count)
                continue
            message = _field_problem(cond.field, event, installed)
            if message:
                problem((*path, i, "field"), message)
            segment = _segment_named(cond.field, cond.op, cond.value, event)
            if segment is not None and segment not in installed.segments:
                problem((*path, i, "value"), f"unknown segment {segment!r}{did_you_mean(segment, installed.segments)}")

    for i, leave in enumerate(scenario.exit_on):
        if isinstance(leave, str):
            event_type(("exit_on", i), leave)
        elif event_type(("exit_on", i, "event"), leave.event):
            conditions(("exit_on", i, "conditions"), leave.conditions, leave.event)
    for i, goal in enumerate(scenario.goals):
        if event_type(("goals", i, "event"), goal.event):
            conditions(("goals", i, "conditions"), goal.conditions, goal.event)
    for i, step in enumerate(scenario.steps or ()):
        if step.wait_for is not None and event_type(("steps", i, "wait_for", "event"), step.wait_for.event):
            conditions(("steps", i, "wait_for", "conditions"), step.wait_for.conditions, step.wait_for.event)
            for j, name in enumerate(step.wait_for.match):
                for event in dict.fromkeys((step.wait_for.event, scenario.trigger.event)):
                    message = _field_problem(f"event.properties.{name}", event, installed)
                    if message:
                        problem(("steps", i, "wait_for", "match", j), message)
        for j, rule in enumerate(step.branch or ()):
            conditions(("steps", i, "branch", j, "if"), rule.when, scenario.trigger.event)
        if step.send is not None:
            problems.extend(check_sending(doc, installed, channel=step.send.channel, fallbacks=step.send.fallbacks,
                                          template=step.send.template, experiment=None,
                                          at=("steps", i, "send")))
    return problems


def check_sending(doc: LocatedDocument, installed: Installed, *, channel: str, fallbacks: Sequence[str],
                  template: str, experiment: Experiment | None, at: tuple[str | int, ...] = ()) -> list[Problem]:
    """What a scenario or a campaign sends through: the channel configured (a missing fallback only matters
    when the channels before it fail: a warning), the template there for each channel's kind in every locale,
    and the experiment's variants likewise; shared by scenario and campaign checks (``at``: where the block is,
    e.g. a journey's send step)."""
    problems: list[Problem] = []
    kinds: list[str] = []
    for path, name in [(("channel",), channel), *((("fallbacks", i), n) for i, n in enumerate(fallbacks))]:
        kind = installed.channel_kind(name)
        if kind is None:
            problems.append(Problem.at(doc, (*at, *path), f"channel {name!r} is not configured (add "
                                       f"[channels.{name}] to the config)", "error" if path == ("channel",)
                                       else "warning"))
        else:
            kinds.append(kind)
    for kind in dict.fromkeys(kinds):
        for locale in installed.locales:
            if not installed.template_exists(template, kind, locale):
                problems.append(Problem.at(doc, (*at, "template"), f"no template {template!r} for {kind} in locale "
                                           f"{locale!r} (add {template}/{kind}.j2 to templates_dir)"))
    if experiment is not None:
        problems.extend(check_experiment(experiment, doc, installed, channel=channel, template=template))
    return problems


def located_problems(doc: LocatedDocument) -> list[Problem]:
    """The experiment block's problems with their file line (weights, names, control share) and a journey's
    step references (unknown, duplicate, unreachable steps), found before the schema check, which would name
    the JSON path only."""
    found = [Problem.at(doc, path, message) for path, message in experiment_problems(doc.data)]
    if isinstance(doc.data, dict):
        references = step_problems(doc.data.get("steps"), doc.data.get("experiment"))
        found.extend(Problem.at(doc, path, message) for path, message in references)
    return found


def check_experiment(experiment: Experiment, doc: LocatedDocument, installed: Installed, *, channel: str,
                     template: str) -> list[Problem]:
    """A variant's channel must be configured and its template (its own or the scenario's/campaign's) be
    there for that channel's kind in every locale; shared by scenario and campaign checks."""
    problems: list[Problem] = []
    for i, variant in enumerate(experiment.variants):
        if variant.channel is None and variant.template is None:
            continue
        name = variant.channel or channel
        kind = installed.channel_kind(name)
        if kind is None:
            if variant.channel is not None:
                problems.append(Problem.at(doc, ("experiment", "variants", i, "channel"),
                                           f"channel {name!r} is not configured (add [channels.{name}] to the "
                                           "config)"))
            continue
        chosen = variant.template or template
        for locale in installed.locales:
            if not installed.template_exists(chosen, kind, locale):
                problems.append(Problem.at(
                    doc, ("experiment", "variants", i, "template" if variant.template else "channel"),
                    f"no template {chosen!r} for {kind} in locale {locale!r} (add {chosen}/{kind}.j2 to "
                    "templates_dir)"))
    return problems


def _field_problem(field: str, trigger: str, installed: Installed) -> str | None:
    """Why a condition path names nothing the trigger event or the profile has; None when it is fine."""
    parts = field.split(".")
    if parts[0] == "profile":
        known = PROFILE_FIELDS | installed.traits
        if parts[1] not in known:
            return f"unknown profile trait {parts[1]!r}{did_you_mean(parts[1], known)}"
        return None
    if parts[1] not in EVENT_FIELDS:
        return f"events have no field {parts[1]!r}{did_you_mean(parts[1], EVENT_FIELDS)}"
    if parts[1] == "properties" and len(parts) > 2:
        model = EVENT_TYPES.get(trigger)
        if model is None:
            return None  # the unknown trigger is reported on its own
        names = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        if parts[2] not in names:
            return (f"{trigger} events have no property {parts[2]!r}{did_you_mean(parts[2], names)}"
                    f" (its properties: {', '.join(sorted(names)) or 'none'})")
    if parts[1] == "traits" and len(parts) > 2:
        known = frozenset(Traits.model_fields) | installed.traits
        if parts[2] not in known:
            return f"unknown trait {parts[2]!r}{did_you_mean(parts[2], known)}"
    return None


def _segment_named(field: str, op: str, value: Any, trigger: str) -> str | None:
    if field == "event.properties.segment" and trigger in ("segment.entered", "segment.exited") and op == "eq":
        return str(value)
    if field == "profile.segments" and op == "contains" and isinstance(value, str):
        return value
    return None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
