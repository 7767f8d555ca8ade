"""Date-based triggers on real PostgreSQL and Redis: birthdays in the customer's time zone, Feb 29, one
event per profile per year however often the scan runs, and a "last run" that survives a restart."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from cdp_hub.bus.base import Record
from cdp_hub.bus.memory import MemoryBus
from cdp_hub.delivery.rendering import TemplateRenderer
from cdp_hub.hub import Hub
from cdp_hub.pipeline.build import birthday_scheduler, build_stage
from cdp_hub.schema import MessageIntent
from cdp_hub.schema.events import Event
from cdp_hub.segments.daily import birthdays_on, local_today
from cdp_hub.store import ConsentRepository, ConsentStatement

# 20:30 UTC on March 15: 23:30 in Moscow, already 06:30 on March 16 in Vladivostok.
EVENING = datetime(2026, 3, 15, 20, 30, tzinfo=UTC)
MORNING = datetime(2026, 3, 15, 6, 0, tzinfo=UTC)  # 09:00 in Moscow


async def add_profile(hub: Hub, golden: dict[str, Any]) -> uuid.UUID:
    pid = uuid.uuid4()
    await hub.store.execute("INSERT INTO profiles (profile_id, golden) VALUES ($1, $2)", pid, golden)
    await hub.store.execute("INSERT INTO identities (kind, value, profile_id) VALUES ('phone', $1, $2)",
                            f"+7916{pid.int % 10_000_000:07d}", pid)
    return pid


async def birthday_events(hub: Hub) -> list[Event]:
    assert isinstance(hub.bus, MemoryBus)
    records = await hub.bus.read_all(hub.topics.events)
    return [e for e in (Event.model_validate_json(r.value) for r in records) if e.type == "profile.birthday"]


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2027, 2, 28), ["02-28", "02-29"]),  # a common year: Feb 29 birthdays are celebrated today
        (date(2028, 2, 28), ["02-28"]),           # a leap year: they wait for tomorrow
        (date(2028, 2, 29), ["02-29"]),
        (date(2027, 3, 1), ["03-01"]),
    ],
)
def test_birthdays_on(day: date, expected: list[str]) -> None:
    assert birthdays_on(day) == expected


def test_local_today_uses_the_zone_and_falls_back_to_moscow() -> None:
    assert local_today(EVENING, "Asia/Vladivostok") == date(2026, 3, 16)
    assert local_today(EVENING, "Europe/Moscow") == date(2026, 3, 15)
    assert local_today(EVENING, "Mars/Olympus") == local_today(EVENING, None) == date(2026, 3, 15)


async def test_birthday_scan_in_each_customers_time_zone(hub: Hub) -> None:
    vladivostok = await add_profile(hub, {"birth_date": "1990-03-16", "timezone": "Asia/Vladivostok"})
    moscow_tomorrow = await add_profile(hub, {"birth_date": "1985-03-16", "timezone": "Europe/Moscow"})
    default_zone = await add_profile(hub, {"birth_date": "1985-03-15"})
    bad_zone = await add_profile(hub, {"birth_date": "2000-03-15", "timezone": "Mars/Olympus"})
    vladivostok_yesterday = await add_profile(hub, {"birth_date": "1990-03-15", "timezone": "Asia/Vladivostok"})
    await add_profile(hub, {"birth_date": "1990-02-30"})  # not a date: never matches
    await add_profile(hub, {"first_name": "Без даты"})
    merged = await add_profile(hub, {"birth_date": "1970-03-15"})
    await hub.store.execute("UPDATE profiles SET merged_into = $1 WHERE profile_id = $2", default_zone, merged)

    result = await birthday_scheduler(hub).scan(EVENING)
    events = {e.profile_id: e for e in await birthday_events(hub)}
    assert set(events) == {vladivostok, default_zone, bad_zone}
    assert (result.found, result.published, result.skipped) == (3, 3, 0)
    assert moscow_tomorrow not in events and vladivostok_yesterday not in events
    v = events[vladivostok]
    assert v.properties == {"birth_date": "1990-03-16", "year": 2026, "age": 36}
    assert v.occurred_at == datetime(2026, 3, 15, 14, 0, tzinfo=UTC)  # midnight in Vladivostok
    assert v.source == "cdp-hub.scheduler" and v.identities[0].kind == "phone"
    assert events[default_zone].occurred_at == datetime(2026, 3, 14, 21, 0, tzinfo=UTC)  # midnight in Moscow


async def test_scanning_twice_sends_nothing_twice_and_next_year_is_new(hub: Hub) -> None:
    pid = await add_profile(hub, {"birth_date": "1990-03-15"})
    scheduler = birthday_scheduler(hub)
    assert (await scheduler.scan(EVENING)).published == 1
    again = await scheduler.scan(EVENING - timedelta(hours=8))  # earlier the same local day
    assert (again.found, again.published) == (0, 0)
    [first] = await birthday_events(hub)

    # A crash after the publish, before it was recorded: the next scan publishes the very same event.
    await hub.store.execute("DELETE FROM scheduler_emitted")
    assert (await scheduler.scan(EVENING)).published == 1
    first_again = (await birthday_events(hub))[-1]
    assert (first_again.event_id, first_again.occurred_at) == (first.event_id, first.occurred_at)

    await scheduler.scan(EVENING.replace(year=2027))
    assert len({e.event_id for e in await birthday_events(hub)}) == 2
    assert all(e.profile_id == pid for e in await birthday_events(hub))


async def test_feb_29_birthdays_are_celebrated_on_feb_28_in_common_years(hub: Hub) -> None:
    leapling = await add_profile(hub, {"birth_date": "2000-02-29"})
    feb28 = await add_profile(hub, {"birth_date": "1999-02-28"})
    scheduler = birthday_scheduler(hub)
    await scheduler.scan(datetime(2027, 2, 28, 9, 0, tzinfo=UTC))  # 2027: a common year
    assert {e.profile_id for e in await birthday_events(hub)} == {leapling, feb28}
    await scheduler.scan(datetime(2028, 2, 28, 9, 0, tzinfo=UTC))  # 2028: a leap year
    await scheduler.scan(datetime(2028, 2, 29, 9, 0, tzinfo=UTC))
    in_2028 = [(e.profile_id, e.properties["year"]) for e in await birthday_events(hub)
               if e.properties["year"] == 2028]
    assert sorted(in_2028, key=str) == sorted([(feb28, 2028), (leapling, 2028)], key=str)
    leap_event = next(e for e in await birthday_events(hub) if e.profile_id == leapling and e.properties["year"] == 2028)
    assert leap_event.occurred_at == datetime(2028, 2, 28, 21, 0, tzinfo=UTC)  # Feb 29, 00:00 in Moscow


async def test_the_last_run_is_persisted_so_a_restart_does_not_scan_again_early(hub: Hub) -> None:
    await add_profile(hub, {"birth_date": "1990-03-15"})
    now = MORNING
    hub.clock = lambda: now
    assert (await birthday_scheduler(hub).run_if_due()) is not None
    assert await birthday_scheduler(hub).run_if_due() is None  # a new object: a restarted daemon
    now = MORNING + timedelta(minutes=20)
    assert await birthday_scheduler(hub).run_if_due() is None
    now = MORNING + timedelta(minutes=31)
    assert await birthday_scheduler(hub).run_if_due() is not None
    row = await hub.store.fetchrow("SELECT last_run_at, last_result FROM scheduler_runs WHERE job = 'birthday'")
    assert row["last_run_at"] == now and row["last_result"]["published"] == 0  # already sent this morning
    assert len({e.event_id for e in await birthday_events(hub)}) == 1


async def test_a_stale_claim_of_a_crashed_process_expires(hub: Hub) -> None:
    hub.clock = lambda: EVENING
    await hub.store.execute("INSERT INTO scheduler_runs (job, claimed_at) VALUES ('birthday', $1)",
                            EVENING - timedelta(minutes=2))
    assert await birthday_scheduler(hub).run_if_due() is None  # another process is scanning right now
    hub.clock = lambda: EVENING + timedelta(minutes=11)
    assert await birthday_scheduler(hub).run_if_due() is not None


async def test_the_triggers_stage_runs_the_scan_from_its_timer_check(hub: Hub) -> None:
    pid = await add_profile(hub, {"birth_date": "1990-03-15"})
    hub.clock = lambda: EVENING
    await build_stage(hub, "triggers").idle()
    assert [e.profile_id for e in await birthday_events(hub)] == [pid]
    await build_stage(hub, "triggers").idle()  # restarted: the last run is in PostgreSQL
    assert len(await birthday_events(hub)) == 1


async def test_the_birthday_scenario_sends_the_birthday_template(hub: Hub) -> None:
    noon = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)
    hub.clock = lambda: noon
    pid = await add_profile(hub, {"birth_date": "1990-03-15", "first_name": "Анна"})
    await ConsentRepository(hub.store).record([ConsentStatement(
        pid, "email", "marketing", "opted_in", noon - timedelta(days=365), "crm", uuid.uuid4(), {"method": "form"})])
    await birthday_scheduler(hub).scan(noon)
    [event] = await birthday_events(hub)
    out = await build_stage(hub, "triggers").handle([Record("cdp.profile-events", 0, 0, str(pid).encode(), event.to_json())])
    [intent] = [MessageIntent.model_validate_json(m.value) for m in out.messages
                if m.topic.endswith("cdp.messages")]
    assert (intent.scenario, intent.template, intent.channel, intent.fallbacks) == (
        "birthday", "birthday", "email", ["sms"])


@pytest.mark.parametrize("template", ["birthday", "win_back"])
@pytest.mark.parametrize("locale", ["ru", "en"])
def test_the_new_templates_render_for_email_and_sms(template: str, locale: str) -> None:
    renderer = TemplateRenderer()
    context = {"profile": {"first_name": "Анна"}, "vars": {"bonus": 500, "promo_code": "BACK10"},
               "message": {"unsubscribe_url": "https://shop.example.ru/u/1"}, "event": {}}
    email = renderer.render(template, "email", context, locale=locale)
    sms = renderer.render(template, "sms", context, locale=locale)
    assert email.subject and "Анна" in email.subject and email.html and "Анна" in email.text
    assert "Анна" in sms.text and sms.subject is None
    assert email.template_file.endswith(f"email.{locale}.j2" if locale == "ru" else "email.j2")
