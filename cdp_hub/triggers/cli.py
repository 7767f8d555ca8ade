"""Scenario commands of the ``cdp-hub`` CLI.

    cdp-hub scenarios validate [PATH...]                 shape, and every reference against what is installed
    cdp-hub scenarios init --catalogue retail DIR        write a ready catalogue (scenarios, templates, segments)
    cdp-hub scenarios list                               the scenarios the triggers stage would run
    cdp-hub scenarios simulate ID (--profile P | --events FILE) [--now] [--with-others] [--live-state] [--json]
        a profile's stored events (or a JSON Lines file of events) through the real triggers stage and its
        contact policy, sends disabled: every decision with its reason, and the message each sent one renders;
        --with-others loads the other scenarios too (priorities), --live-state copies the profile's caps and
        claims from the deployment's Redis first (read only)
    cdp-hub scenarios simulate JOURNEY --events FILE [--profile-file PROFILE.json] [--json]
        a journey walked step by step over the file's timeline for one profile (traits, segments, consent,
        time zone from the profile file): every step, its time, and each send's consent/quiet-hours decision;
        offline (triggers/journeys.py simulate_journey)
    cdp-hub scenarios positions [--json]                where profiles are in the journeys: entries by journey, status
                                                         and step (journey_positions)

The simulation runs on a :class:`~cdp_hub.store.db.RollbackStore` (what it writes, timers and segment
memberships, is rolled back) with an in-process bus and hot state: it reads the deployment's profiles,
consent and send log, and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cdp_hub.cli.helpers import Args, command, group, json_option, print_json, store_for
from cdp_hub.config import Settings
from cdp_hub.durations import parse_duration
from cdp_hub.errors import ConfigurationError
from cdp_hub.triggers.checks import Installed, Problem, check_scenario_files
from cdp_hub.triggers.scenario import Scenario

if TYPE_CHECKING:
    from cdp_hub.schema.events import Event

__all__ = ["check_scenarios", "commands", "installed", "simulate"]

log = logging.getLogger(__name__)


PATH = click.Path(path_type=Path)

commands: list[click.Command] = []
scenarios_group = group(commands, "scenarios", "scenarios (YAML): validate, init, list and simulate")


def installed(settings: Settings, beside: Path | None = None) -> Installed:
    """What the deployment has installed and configured, for the scenario checks. ``beside``: a catalogue
    folder (``scenarios init``) whose ``templates/`` and ``segments/`` count as installed too, before the
    deployment's, so a catalogue checks before the config points at it."""
    from cdp_hub.delivery.rendering import TemplateRenderer
    from cdp_hub.pipeline.build import channel_kind
    from cdp_hub.plugins import get_registry
    from cdp_hub.resolver.rules import load_rules
    from cdp_hub.segments.model import load_segments

    registry = get_registry()  # loads the plugins: their event types count
    kind_of = channel_kind(settings, registry)
    if not settings.channels:
        # A deployment without [channels.*] has not chosen providers yet: names are not checked then.
        def kind(name: str) -> str | None:
            return kind_of(name) or "email"
    else:
        def kind(name: str) -> str | None:
            return kind_of(name) if name in settings.channels else None
    renderers = [TemplateRenderer(directory, default_locale=settings.default_locale,
                                  default_currency=settings.default_currency)
                 for directory in (_part(beside, "templates"), settings.templates_dir) if directory is not None]
    renderers = renderers or [TemplateRenderer(None, default_locale=settings.default_locale)]
    segment_dirs = [d for d in (settings.segments_dir, _part(beside, "segments")) if d is not None]
    segments = load_segments(segment_dirs)

    def template_exists(name: str, kind: str, locale: str) -> bool:
        return any(r.exists(name, kind, locale) for r in renderers)

    return Installed(channel_kind=kind, template_exists=template_exists,
                     segments=frozenset(s.id for s in segments), locales=(settings.default_locale,),
                     traits=frozenset(load_rules().traits), omitted=frozenset(settings.profile_events_omit))


def _sends(scenario: Scenario) -> str:
    """What a scenario sends, for listings: ``email/sms (welcome)``, or a journey's steps."""
    if scenario.steps is None:
        return f"{'/'.join([scenario.channel, *scenario.fallbacks])} ({scenario.template})"
    sends = list(dict.fromkeys(s.send.template for s in scenario.steps if s.send is not None))
    return f"journey of {len(scenario.steps)} steps, sends {', '.join(sends) or 'nothing'}"


def _channels(scenario: Scenario) -> list[str]:
    """The channels a scenario sends on (a journey: its send steps', in order)."""
    if scenario.steps is None:
        return [scenario.channel, *scenario.fallbacks]
    names = [c for step in scenario.steps if step.send is not None for c in (step.send.channel, *step.send.fallbacks)]
    return list(dict.fromkeys(names))


def _part(catalogue: Path | None, name: str) -> Path | None:
    """``catalogue/name`` when it is a folder (a catalogue's templates or segments)."""
    if catalogue is None:
        return None
    return catalogue / name if (catalogue / name).is_dir() else None


def _catalogue_root(paths: list[Path]) -> Path | None:
    """The catalogue a validated path belongs to: a folder with a scenarios/ folder, or the scenarios/ folder
    (or a file in it) of one."""
    for path in paths:
        folder = path if path.is_dir() else path.parent
        for candidate in (folder, folder.parent):
            if (candidate / "scenarios").is_dir() and ((candidate / "templates").is_dir()
                                                       or (candidate / "segments").is_dir()):
                return candidate
    return None


def check_scenarios(settings: Settings, paths: list[Path] | None = None) -> list[Scenario]:
    """The deployment's scenarios, checked; raises :class:`ConfigurationError` listing every problem (the
    daemon refuses to start the triggers stage with an invalid scenario)."""
    scenarios, problems = _check(settings, paths)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigurationError("invalid scenarios (cdp-hub scenarios validate):\n  " + "\n  ".join(map(str, errors)))
    for warning in problems:
        log.warning("scenario %s", warning)
    return scenarios


def _check(settings: Settings, paths: list[Path] | None = None) -> tuple[list[Scenario], list[Problem]]:
    builtin = not paths
    # Only folders named on the command line bring their own templates and segments: the deployment's own
    # scenarios are checked against what it is configured with, as `cdp-hub run` will use them.
    catalogue = _catalogue_root(paths) if paths else None
    if not paths:
        paths = [settings.scenarios_dir] if settings.scenarios_dir else []
    # A catalogue's root stands for its scenarios/ folder.
    paths = [p / "scenarios" if catalogue is not None and p == catalogue else p for p in paths]
    return check_scenario_files(paths, installed(settings, catalogue), builtin=builtin)


@command(scenarios_group, "init", help="write a ready scenario catalogue to DIR: scenarios/, templates/, segments/")
@click.option("--catalogue", required=True, help="which catalogue (retail)")
@click.argument("dir", type=PATH)
@click.option("--force", is_flag=True, help="overwrite files that exist")
@json_option("print the written files as JSON")
def cmd_init(args: Args, settings: Settings) -> int:
    from cdp_hub.triggers.catalogues import write_catalogue

    written = write_catalogue(args.catalogue, args.dir, overwrite=args.force)
    if args.json:
        print_json({"written": [str(p) for p in written], "dir": str(args.dir.resolve())})
        return 0
    scenarios = sum(1 for p in written if p.parent.name == "scenarios")
    print(f"wrote {len(written)} files to {args.dir}: {scenarios} scenario files, their templates and segments")
    print("point the deployment at them (cdp-hub.toml):")
    root = args.dir.resolve()
    print(f'  scenarios_dir = "{root / "scenarios"}"')
    print(f'  templates_dir = "{root / "templates"}"')
    print(f'  segments_dir = "{root / "segments"}"')
    print(f"then check them: cdp-hub scenarios validate {args.dir}")
    return 0


@command(scenarios_group, "validate", help="check scenario files (PATHS: files or folders; default: built-ins "
                                             "and scenarios_dir): shape, event types, fields, channels, "
                                             "templates, segments")
@click.argument("paths", nargs=-1, type=PATH)
@json_option("print the scenarios and problems as JSON")
def cmd_validate(args: Args, settings: Settings) -> int:
    scenarios, problems = _check(settings, list(args.paths) or None)
    errors = [p for p in problems if p.severity == "error"]
    if args.json:
        print_json({"ok": not errors, "scenarios": [s.id for s in scenarios],
                    "problems": [{"severity": p.severity, "problem": str(p)} for p in problems]})
        return 1 if errors else 0
    for problem in problems:
        print(problem, file=sys.stderr)
    errors = [p for p in problems if p.severity == "error"]
    failing = {p.origin for p in errors}
    for s in scenarios:
        print(f"ok  {s.id}: on {s.trigger.event} -> {_sends(s)}")
    if errors:
        print(f"{len(errors)} error(s) in {len(failing)} file(s)", file=sys.stderr)
        return 1
    return 0


@command(scenarios_group, "list", help="the scenarios the triggers stage would run")
@json_option("print the scenarios as JSON")
def cmd_list(args: Args, settings: Settings) -> int:
    from cdp_hub.triggers.scenario import load_scenarios

    loaded = load_scenarios([settings.scenarios_dir] if settings.scenarios_dir else [])
    if args.json:
        print_json([{"id": s.id, "event": s.trigger.event, "channels": _channels(s),
                     "template": s.template, "category": s.category, "delay": s.delay, "priority": s.priority,
                     "cancel_on": list(s.cancel_on),
                     **({"steps": [step.id for step in s.steps], "exit_on": _exits_json(s)} if s.steps else {})}
                    for s in loaded])
        return 0
    for s in loaded:
        extra = []
        if s.steps:
            extra.append(f"journey: {len(s.steps)} steps")
        if s.exit_on:
            extra.append(f"exits on {', '.join(e.event + (' (conditions)' if e.conditions else '') for e in s.exits)}")
        if s.delay:
            extra.append(f"after {s.delay}")
        if s.send_at is not None:
            offset = (f"{s.send_at.before} before " if s.send_at.before else
                      f"{s.send_at.after} after " if s.send_at.after else "at ")
            extra.append(offset + s.send_at.field.removeprefix("event.properties."))
        if s.hold_until:
            extra.append(f"one per {s.hold_until.key}")
        if s.cancel_on:
            extra.append(f"cancelled by {', '.join(s.cancel_on)}")
        if s.priority:
            extra.append(f"priority {s.priority}")
        print(f"{s.id:<22} on {s.trigger.event:<18} -> {'/'.join(_channels(s)):<18} "
              f"{s.category:<13} {'; '.join(extra)}")
    return 0


@command(scenarios_group, "positions", help="where profiles are in the journeys: entries by journey, status "
                                              "(active, completed, converted, exited, merged) and step")
@json_option("print the counts as JSON")
async def cmd_positions(args: Args, settings: Settings) -> int:
    from cdp_hub.store import JourneyRepository

    async with store_for(settings, pool_size=1) as store:
        counts = await JourneyRepository(store).counts()
    if args.json:
        print_json(counts)
        return 0
    for row in counts:
        print(f"{row['journey']:<24} {row['status']:<10} {row['step'] or '-':<20} {row['n']:>9}")
    if not counts:
        print("nobody has entered a journey")
    return 0


@command(scenarios_group, "simulate", help="what scenario SCENARIO would decide for a profile's events, sends "
                                             "disabled", one_of=[("profile", "events")])
@click.argument("scenario")
@click.option("--profile", help="a profile id: replay its stored events")
@click.option("--events", type=PATH, help="JSON Lines of canonical events (profile_id set, or --for)")
@click.option("--for", "for_profile", help="with --events: the profile the events belong to")
@click.option("--now", is_flag=True,
              help="judge the events as arriving now (a replay: old ones are too_late), not as live")
@click.option("--limit", type=int, default=1000, show_default=True, help="at most this many stored events")
@click.option("--with-others", is_flag=True,
              help="load every configured scenario too, so priorities are judged (lost_priority) and each one's "
              "decisions are printed")
@click.option("--live-state", is_flag=True,
              help="with --now: start from the deployment's Redis state of the profile (cap counters, priority, "
              "once-per and hold-until claims; read, never written) instead of an empty one")
@click.option("--profile-file", type=PATH, help="journeys: the profile as JSON (traits such as loyalty_tier and "
              "timezone, segments: [...], consent: {email: opted_in}, profile_id)")
@json_option("print the decisions as JSON")
async def cmd_simulate(args: Args, settings: Settings) -> int:
    scenarios = {s.id: s for s in check_scenarios(settings)}
    scenario = scenarios.get(args.scenario)
    if scenario is None:  # one switched off (a built-in journey) can be tried before it is switched on
        from cdp_hub.triggers.scenario import SCENARIO_FILES

        everything = SCENARIO_FILES.load([settings.scenarios_dir] if settings.scenarios_dir else [])
        scenario = next((s for s in everything if s.id == args.scenario), None)
    if scenario is None:
        raise ConfigurationError(f"no scenario {args.scenario!r}; scenarios: {', '.join(sorted(scenarios))}")
    if scenario.steps is not None:
        return await _simulate_journey(args, settings, scenario)
    if args.profile_file is not None:
        raise ConfigurationError("--profile-file is for journeys (scenarios with steps)")
    if args.live_state and not args.now:
        raise ConfigurationError("--live-state needs --now: the real counters are of this moment, so the events "
                                 "are judged as arriving now")
    others = [s for s in scenarios.values() if s.id != scenario.id] if args.with_others else []
    rows = await simulate(settings, scenario, profile=args.profile, events_file=args.events,
                          for_profile=args.for_profile, now=args.now, limit=args.limit, others=others,
                          live_state=args.live_state)
    if args.json:
        print_json(rows, ensure_ascii=False)
        return 0
    for row in rows:
        who = f"{row['scenario']:<24} " if others else ""
        print(f"{row['at'][:19]}  {row['trigger']:<20} {who}{row['decision']:<14} {row['reason']}")
        message = row.get("message")
        if message:
            head = message.get("subject") or ""
            body = " ".join(str(message.get("text", "")).split())[:160]
            print(f"    {message['channel']} ({message['locale']}): {head}" + (f" | {body}" if body else ""))
        elif row.get("render_error"):
            print(f"    not renderable: {row['render_error']}")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["decision"]] = counts.get(row["decision"], 0) + 1
    print(", ".join(f"{n} {d}" for d, n in sorted(counts.items())) or "no decisions: the scenario never matched")
    return 0


async def _simulate_journey(args: Args, settings: Settings, scenario: Scenario) -> int:
    from cdp_hub.plugins import get_registry
    from cdp_hub.triggers.journeys import simulate_journey
    from cdp_hub.triggers.stage import TriggerOptions

    if args.events is None:
        raise ConfigurationError("a journey walks a timeline: give it with --events FILE (JSON Lines of events)")
    profile = {}
    if args.profile_file is not None:
        profile = await asyncio.to_thread(_read_json_object, args.profile_file)
    events = await asyncio.to_thread(_read_events, args.events, None)
    from cdp_hub.pipeline.build import channel_kind

    options = TriggerOptions.from_settings(settings, channel_kind=channel_kind(settings, get_registry()))
    rows = simulate_journey(scenario, [e.model_dump(mode="json", exclude_none=True) for e in events], profile,
                            options=options)
    if args.json:
        print_json(rows, ensure_ascii=False)
        return 0
    for row in rows:
        line = f"{row['at'][:19]}  {row['step'] or '-':<16} {row['kind']:<9} {row['outcome']:<18} {row['detail']}"
        if "decision" in row:
            line += f"  => {row['decision']}: {row['reason']}"
        print(line)
    counts: dict[str, int] = {}
    for row in rows:
        if "decision" in row:
            counts[row["decision"]] = counts.get(row["decision"], 0) + 1
    ends = [row["outcome"] for row in rows if row["kind"] in ("end", "loop")
            or row["outcome"] in ("converted", "exited")]
    print(f"{sum(1 for r in rows if r['outcome'] == 'entered')} entries; "
          + (", ".join(f"{n} {d}" for d, n in sorted(counts.items())) or "no sends")
          + (f"; ended: {', '.join(ends)}" if ends else ""))
    return 0


def _read_json_object(path: Path) -> dict[str, Any]:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: a profile is a JSON object (traits, segments, consent)")
    return data


def _read_events(path: Path, owner: uuid.UUID | None, *, need_profile: bool = False) -> list[Any]:
    """The events of a JSON Lines file, validated (``owner``: the profile they all belong to; with
    ``need_profile``, an event that names no profile and has no owner is an error naming its line)."""
    from cdp_hub.schema.events import parse_event

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = parse_event(line.encode())
        except ValueError as exc:
            raise ConfigurationError(f"{path}:{n}: {exc}") from None
        if owner is not None:
            event.profile_id = owner
        if need_profile and event.profile_id is None:
            raise ConfigurationError(f"{path}:{n}: no profile_id; give the profile with --for")
        events.append(event)
    return events


async def simulate(settings: Settings, scenario: Scenario, *, profile: str | None = None,
                   events_file: Path | None = None, for_profile: str | None = None, now: bool = False,
                   limit: int = 1000, others: Sequence[Scenario] = (),
                   live_state: bool = False) -> list[dict[str, Any]]:
    """Run ``scenario`` over a profile's stored events (or a file's) with sends disabled; one row per
    decision, in order, with the rendered message of each sent one.

    ``others``: more scenarios loaded alongside (the deployment's), so priorities are judged among them; their
    decisions are rows too. ``live_state``: the profiles' contact-policy state in the deployment's Redis
    (``redis_url``) is copied into the simulation's in-memory Redis first, so caps, priorities and once-per
    claims count what was really sent; only meaningful with ``now`` (the counters are of this moment)."""
    from cdp_hub.bus.base import Record
    from cdp_hub.bus.memory import MemoryBus
    from cdp_hub.delivery.profiles import ProfileSnapshot, load_profiles
    from cdp_hub.delivery.rendering import TemplateError, TemplateRenderer
    from cdp_hub.delivery.stage import message_locale, template_context
    from cdp_hub.hotstate import HotState
    from cdp_hub.hub import Hub
    from cdp_hub.pipeline.build import build_stage, channel_kind, trigger_options
    from cdp_hub.pipeline.stage import StageOutput
    from cdp_hub.resolver.stage import profile_created_event
    from cdp_hub.schema.events import Event
    from cdp_hub.store import EventRepository, ProfileRepository
    from cdp_hub.store.db import RollbackStore
    from cdp_hub.triggers.stage import Decision, TriggerStage

    quiet = settings.model_copy(update={"bus": "memory", "auto_create_topics": True, "auto_migrate": False})
    store = RollbackStore.for_settings(settings)
    rows: list[dict[str, Any]] = []
    async with Hub(quiet, bus=MemoryBus(), store=store, hotstate=HotState("fakeredis://")) as hub:
        events: list[Event] = []
        if profile is not None:
            pid = _uuid(profile, "--profile")
            stored = [Event.from_json(body) for body in await EventRepository(store).of_profile(pid, limit)]
            if not stored:
                raise ConfigurationError(f"profile {profile} has no stored events")
            # profile.created is not stored: the profile's first event made it.
            events = [profile_created_event(pid, stored[0]), *stored]
        elif events_file is not None:
            owner = _uuid(for_profile, "--for") if for_profile else None
            events = await asyncio.to_thread(_read_events, events_file, owner, need_profile=True)
        events.sort(key=lambda e: e.occurred_at)
        wall = datetime.now(UTC)
        clock = [wall if now or not events else events[0].occurred_at]
        hub.clock = lambda: clock[0]
        options = trigger_options(hub, daily_jobs=False)
        stage = build_stage(hub, "triggers", scenarios=[scenario, *others], trigger_options=options)
        assert isinstance(stage, TriggerStage)
        if live_state:
            await _copy_live_state(settings, hub.hotstate, stage, events)
        stage.record_decisions = True
        kind_of = channel_kind(settings, hub.registry)
        renderer = TemplateRenderer(settings.templates_dir, default_locale=settings.default_locale,
                                    default_currency=settings.default_currency)
        snapshots = await load_profiles(ProfileRepository(store), {str(e.profile_id) for e in events})

        async def fire() -> None:
            out = StageOutput()
            await stage.fire_due_timers(out)
            for callback in out.on_durable:
                await callback()

        for offset, event in enumerate(events):
            if not now:
                clock[0] = max(clock[0], event.occurred_at)
                stage.watermarks.caught_up()
                await fire()
            await stage.handle([Record(hub.topics.profile_events, 0, offset, None, event.to_json())])
        # Let every wait run out: the longest delay, a send-time variant's, the lateness, a day for quiet hours.
        wait = scenario.delay_td or timedelta(0)
        if scenario.send_at is not None:  # until the latest send time the events name
            times = [scenario.fire_time(e.occurred_at, e.model_dump(mode="json")) for e in events]
            wait = max([t - clock[0] for t in times if t is not None] + [timedelta(0)])
        wait += _longest_variant_wait(scenario)
        clock[0] = clock[0] + wait + options.allowed_lateness + timedelta(days=1)
        stage.watermarks.caught_up()
        await fire()
        decisions: list[Decision] = stage.decisions
        for d in decisions:
            row: dict[str, Any] = {
                "at": d.event.occurred_at.isoformat(), "trigger": d.event.type, "trigger_event_id": str(d.event.event_id),
                "scenario": d.scenario.id, "decision": d.decision, "reason": d.reason, "profile_id": d.profile_id}
            if d.until is not None:
                row["until"] = d.until.isoformat()
            if d.decision == "sent" and d.intent is not None:
                snap = snapshots.get(d.profile_id) or ProfileSnapshot(d.profile_id, {})
                kind = kind_of(d.intent.channel) or "email"
                locale = message_locale(d.intent, snap, settings.default_locale)
                try:
                    rendered = renderer.render(d.intent.template, kind, template_context(d.intent, snap,
                                                                                         d.intent.channel),
                                               locale=locale, timezone=snap.traits.get("timezone"))
                    row["message"] = {"channel": d.intent.channel, "kind": kind, "locale": locale,
                                      "subject": rendered.subject, "text": rendered.text}
                except TemplateError as exc:
                    row["render_error"] = str(exc)
            rows.append(row)
    return rows


async def _copy_live_state(settings: Settings, into: Any, stage: Any, events: Sequence[Event]) -> None:
    """The deployment's Redis state of the profiles of ``events`` into the simulation's (read-only on the
    deployment), with the hold-until claims keyed by a value of these events (their cart ids, ...)."""
    from cdp_hub.hotstate import HotState

    if settings.redis_url.startswith("fakeredis"):
        raise ConfigurationError("--live-state reads the deployment's Redis, but redis_url is fakeredis:// (the "
                                 "embedded mode keeps it inside the running process)")
    async with HotState(settings.redis_url) as live:
        await into.copy_policy_state(live, sorted({str(e.profile_id) for e in events}), cap_scopes=stage.cap_scopes,
                                     scenarios=[s.id for s in stage.scenarios],
                                     dedupe_keys=stage.hold_until_claims(events))


def _exits_json(scenario: Scenario) -> list[Any]:
    """A journey's ``exit_on`` as written: event types, and ``{event, conditions}`` where conditions were given."""
    return [e if isinstance(e, str) else e.model_dump(mode="json", exclude_defaults=True) for e in scenario.exit_on]


def _longest_variant_wait(scenario: Scenario) -> timedelta:
    """The most a send-time variant adds to the scenario's wait: its delay, and up to a day (and the hour a
    clock change adds) to reach its next ``at``."""
    if scenario.experiment is None:
        return timedelta(0)
    return max((parse_duration(v.delay) if v.delay else timedelta(0))
               + (timedelta(hours=25) if v.at is not None else timedelta(0))
               for v in scenario.experiment.variants)


def _uuid(value: str, flag: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ConfigurationError(f"{flag}: not a profile id: {value[:80]!r}") from None
