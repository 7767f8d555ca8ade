"""Campaigns through the pipeline (real Kafka, PostgreSQL, Redis): launch snapshots the audience set-wise, the
sender holds the rate limit and the contact policy, the delivery stage sends each profile one message even
when a chunk is published twice, and pause, resume and cancel take effect within a chunk."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cdp_hub.campaigns.model import CAMPAIGN_FILES, Campaign
from cdp_hub.campaigns.runner import CampaignRunner
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline, campaign_runner
from cdp_hub.schema.messages import MessageIntent, message_id_for
from tests.campaign_data import EXCLUDED, SEGMENT, eligible, in_audience, profile_id, seed
from tests.conftest import _drop_keys, _test_hotstate, hub_settings


def campaign(**overrides: Any) -> Campaign:
    data: dict[str, Any] = {"id": "spring_sale", "audience": {"segment": SEGMENT, "exclude": [EXCLUDED]},
                            "channel": "email", "template": "welcome", "rate_limit": 100}
    data.update(overrides)
    return CAMPAIGN_FILES.parse(data, origin="test")


@pytest.fixture
async def outbox_hub(tmp_path: Path, pg_dsn: str, redis_url: str, kafka_bootstrap: str) -> Any:
    """A hub on real Kafka whose e-mail channel writes files (so delivery really runs)."""
    settings = hub_settings(tmp_path, bus="kafka", pg_dsn=pg_dsn, redis_url=redis_url,
                            kafka_bootstrap=kafka_bootstrap,
                            channels={"email": {"type": "outbox", "config": {"directory": str(tmp_path / "outbox")}}})
    h = Hub(settings, metrics=Metrics(), hotstate=_test_hotstate(redis_url))
    await h.start()
    yield h
    await _drop_keys(h.hotstate)
    await h.stop()


async def _send_log(hub: Hub, scenario: str) -> list[Any]:
    return await hub.store.fetch(
        "SELECT profile_id, message_id, status, attempts FROM messages WHERE scenario = $1", scenario)


async def test_a_campaign_is_sent_at_its_rate_once_per_eligible_profile(outbox_hub: Hub, tmp_path: Path) -> None:
    n = 400
    await seed(outbox_hub.store, n, tag="rate", extra=40)
    spring = campaign(rate_limit=100)
    runner = campaign_runner(outbox_hub)
    launched = await runner.launch(spring)
    assert launched is not None
    assert launched.planned == sum(1 for g in range(1, n + 1) if in_audience(g))

    started = time.monotonic()
    reported: list[tuple[int, int | None]] = []
    result = await runner.execute(launched.run_id, progress=lambda done, total: reported.append((done, total)))
    elapsed = time.monotonic() - started
    want = {profile_id("rate", g) for g in range(1, n + 1) if eligible(g)}
    assert result.status == "done"
    assert result.sent == len(want)
    # Progress after every chunk: the profiles decided so far, up to all of the planned ones.
    assert len(reported) > 1 and [d for d, _ in reported] == sorted(d for d, _ in reported)
    assert reported[-1] == (launched.planned, None)
    # The n-th intent goes no earlier than n/rate after the first: about 2.4 s for these ~240 messages.
    chunk = int(spring.rate_limit * 0.5)
    assert elapsed >= (len(want) - chunk) / spring.rate_limit
    assert elapsed < len(want) / spring.rate_limit + 5

    status = await runner.status(launched.run_id)
    assert status is not None
    assert status.sent == len(want) and status.pending == 0 and status.run.status == "done"
    assert status.skipped == {"no_consent": launched.planned - len(want)}
    assert status.eta_seconds is None

    # A crash after publishing a chunk and before recording it: the chunk is published again, same ids.
    replayed = [profile_id("rate", g) for g in range(1, 60) if eligible(g)]
    await outbox_hub.store.execute(
        "UPDATE campaign_audience SET status = 'pending', reason = NULL WHERE run_id = $1 AND profile_id = ANY($2)",
        launched.run_id, replayed)
    await outbox_hub.store.execute("UPDATE campaign_runs SET status = 'sending' WHERE run_id = $1", launched.run_id)
    again = await runner.execute(launched.run_id)
    assert again.status == "done" and again.sent == len(replayed)

    pipeline = Pipeline(outbox_hub, ["delivery"])
    task = asyncio.create_task(pipeline.run())
    try:
        await pipeline.drain(timeout=90)
    finally:
        pipeline.stop()
        await task
    rows = await _send_log(outbox_hub, spring.scenario)
    assert {r["profile_id"] for r in rows} == want, "exactly the eligible profiles, none outside the audience"
    assert len(rows) == len(want)
    assert all(r["status"] == "sent" and r["attempts"] == 1 for r in rows), "each sent once"
    assert len(list((tmp_path / "outbox").glob("*.json"))) == len(want)
    status = await runner.status(launched.run_id)
    assert status is not None and status.delivery == {"sent": len(want)}


async def test_decisions_are_events_with_reasons(hub: Hub) -> None:
    await seed(hub.store, 30, tag="dec")
    runner = campaign_runner(hub)
    spring = campaign(rate_limit=1000)
    launched = await runner.launch(spring)
    assert launched is not None
    published: list[Any] = []
    original = runner.ctx.publish

    async def spy(messages: Any) -> None:
        published.extend(messages)
        await original(messages)

    runner.ctx = runner.ctx.__class__(**{**runner.ctx.__dict__, "publish": spy})
    await runner.execute(launched.run_id)
    import orjson

    intents = [MessageIntent.model_validate_json(m.value) for m in published if m.topic == hub.topics.messages]
    assert len(intents) == sum(1 for g in range(1, 31) if eligible(g))
    assert {i.message_id for i in intents} == {
        message_id_for(spring.scenario, str(launched.run_id), i.profile_id) for i in intents}
    assert all(i.scenario == "campaign:spring_sale" and i.category == "marketing" and i.template == "welcome"
               and i.trigger_event_id == str(launched.run_id) for i in intents)
    decided = [orjson.loads(m.value) for m in published if m.topic == hub.topics.events]
    by_decision: dict[str, int] = {}
    for event in decided:
        assert event["type"] == "message.decided"
        assert event["properties"]["campaign_run"] == str(launched.run_id)
        assert event["identities"], "an event about a person carries an identity"
        by_decision[event["properties"]["decision"]] = by_decision.get(event["properties"]["decision"], 0) + 1
    # Every skip is an event with its reason; a sent message is its intent (and the delivery's receipts).
    assert by_decision == {"no_consent": sum(1 for g in range(1, 31) if in_audience(g) and not eligible(g))}
    reasons = {e["properties"]["reason"] for e in decided if e["properties"]["decision"] == "no_consent"}
    assert reasons == {"no email marketing consent recorded", "email consent opted out"}


async def test_caps_and_quiet_hours_apply(hub: Hub) -> None:
    await seed(hub.store, 40, tag="cap")
    runner = campaign_runner(hub)
    # Everyone is already at the cap: one marketing message a week, and an earlier one was counted.
    capped = campaign(id="capped", rate_limit=1000, frequency_cap={"max": 1, "per": "7d"})
    await hub.hotstate.within_caps_batch(
        [([("*", 1, 7 * 86400.0)], str(profile_id("cap", g)), f"earlier-{g}") for g in range(1, 41)],
        now=hub.clock().timestamp())
    launched = await runner.launch(capped)
    assert launched is not None
    await runner.execute(launched.run_id)
    status = await runner.status(launched.run_id)
    assert status is not None and status.sent == 0
    assert status.skipped["capped"] == sum(1 for g in range(1, 41) if eligible(g))

    # Quiet hours all day long: every eligible profile is deferred, the run waits for them.
    quiet = campaign(id="quiet", rate_limit=1000, quiet_hours={"start": "00:00", "end": "23:59"})
    launched = await runner.launch(quiet)
    assert launched is not None
    stop = asyncio.Event()
    task = asyncio.create_task(runner.execute(launched.run_id, stop=stop))
    await asyncio.sleep(1.5)
    stop.set()
    assert (await task).status == "stopped"
    status = await runner.status(launched.run_id)
    assert status is not None and status.sent == 0
    assert status.deferred == sum(1 for g in range(1, 41) if eligible(g))


async def _wait_sent(runner: CampaignRunner, run_id: uuid.UUID, at_least: int, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = await runner.status(run_id)
        assert status is not None
        if status.sent >= at_least:
            return status.sent
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} sent in {timeout}s")


async def test_pause_resume_and_cancel_take_effect_within_seconds(kafka_hub: Hub) -> None:
    await seed(kafka_hub.store, 600, tag="ctl")
    runner = campaign_runner(kafka_hub)
    other = campaign_runner(kafka_hub)  # the operator's CLI is another process
    launched = await runner.launch(campaign(rate_limit=50))
    assert launched is not None
    run_id = launched.run_id
    task = asyncio.create_task(runner.execute(run_id))
    await _wait_sent(runner, run_id, 30)
    assert await other.pause(run_id)
    paused_at = time.monotonic()
    result = await asyncio.wait_for(task, 5)
    assert result.status == "paused"
    assert time.monotonic() - paused_at < 2.0
    frozen = (await runner.status(run_id)).sent  # type: ignore[union-attr]
    await asyncio.sleep(1.0)
    assert (await runner.status(run_id)).sent == frozen  # type: ignore[union-attr]
    # A paused run is not sent by the daemon's job either.
    assert await other.execute_runnable() == []

    assert await other.resume(run_id)
    task = asyncio.create_task(runner.execute(run_id))
    await _wait_sent(runner, run_id, frozen + 30)
    assert await other.cancel(run_id)
    result = await asyncio.wait_for(task, 5)
    assert result.status == "cancelled"
    status = await runner.status(run_id)
    assert status is not None and status.run.status == "cancelled" and status.pending > 0
    stopped = status.sent
    assert (await runner.execute(run_id)).status == "cancelled"  # a cancelled run never sends again
    assert not await other.resume(run_id)
    assert (await runner.status(run_id)).sent == stopped  # type: ignore[union-attr]


async def test_a_schedule_slot_launches_once(hub: Hub) -> None:
    await seed(hub.store, 20, tag="slot")
    weekly = campaign(id="weekly", schedule={"cron": "0 10 * * MON", "timezone": "Europe/Moscow"})
    once = campaign(id="once", schedule={"at": "2026-03-02T10:00:00+03:00"})
    runner, other = campaign_runner(hub), campaign_runner(hub)
    monday = datetime.fromisoformat("2026-03-02T07:05:00+00:00")  # 10:05 in Moscow
    first = await runner.launch_due([weekly, once], monday)
    assert len(first) == 2
    assert await other.launch_due([weekly, once], monday + timedelta(minutes=1)) == []
    assert await runner.launch_due([weekly, once], monday + timedelta(hours=2)) == []  # past the catch-up


def test_campaign_files_are_checked_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("id: Bad Id\naudience: {segment: x}\nchannel: email\ntemplate: t\nrate_limit: 0\n")
    with pytest.raises(ConfigurationError) as err:
        CAMPAIGN_FILES.load([path], builtin=False)
    assert "$.id" in str(err.value) and "$.rate_limit" in str(err.value)
    with pytest.raises(ConfigurationError, match="either 'at'"):
        campaign(schedule={"timezone": "UTC"})


async def test_the_campaigns_job_launches_due_campaigns_and_sends_them(hub: Hub, tmp_path: Path) -> None:
    from cdp_hub.jobs.kinds import run_job_kind
    from cdp_hub.pipeline.embedded import settle_nothing

    await seed(hub.store, 50, tag="job")
    folder = tmp_path / "campaigns"
    folder.mkdir()
    due = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    (folder / "c.yaml").write_text(f"""
- id: due_now
  audience: {{segment: {SEGMENT}, exclude: [{EXCLUDED}]}}
  schedule: {{at: "{due}"}}
  channel: email
  template: welcome
  rate_limit: 1000
- id: by_hand
  audience: {{segment: {SEGMENT}}}
  channel: email
  template: welcome
  rate_limit: 1000
""")
    hub.settings.campaigns_dir = folder
    result = await run_job_kind(hub, "campaigns", {}, settle_nothing)
    [run_id] = result["launched"]
    assert result["runs"][run_id]["status"] == "done"
    assert result["runs"][run_id]["sent"] == sum(1 for g in range(1, 51) if eligible(g))
    again = await run_job_kind(hub, "campaigns", {}, settle_nothing)
    assert again == {"launched": [], "runs": {}}, "a slot launches once; a done run is not sent again"


async def test_a_chunk_reads_what_the_sender_needs_and_skips_profiles_merged_or_deleted_since_launch(
        hub: Hub) -> None:
    await seed(hub.store, 12, tag="chunk", timezone="Europe/Moscow")
    runner = campaign_runner(hub)
    spring = campaign(id="chunked", rate_limit=1000)
    launched = await runner.launch(spring)
    assert launched is not None
    members = sorted(profile_id("chunk", g) for g in range(1, 13) if in_audience(g))
    merged, deleted, odd, consenting = members[0], members[1], members[2], members[3]
    await hub.store.execute("UPDATE profiles SET merged_into = $2 WHERE profile_id = $1", merged, members[4])
    await hub.store.execute("DELETE FROM profiles WHERE profile_id = $1", deleted)
    await hub.store.execute(  # a locale and a time zone that are not text are not used
        """UPDATE profiles SET golden = golden || '{"locale": 7, "timezone": ["x"], "consent": null}'::jsonb
            WHERE profile_id = $1""", odd)
    await hub.store.execute(
        """UPDATE profiles SET golden = golden || '{"consent": {"email": "opted_in"}}'::jsonb
            WHERE profile_id = $1""", consenting)

    pending = await hub_campaigns(hub).pending_chunk(launched.run_id, uuid.UUID(int=0), 5, hub.clock())
    assert [p.profile_id for p in pending] == members[:5], "profile-id order, the first five"
    got = {p.profile_id: p.golden for p in pending}
    assert got[merged] is None and got[deleted] is None
    assert got[odd] == {}
    assert got[consenting] == {"locale": "ru", "timezone": "Europe/Moscow", "consent": {"email": "opted_in"}}
    assert got[members[4]] == {"locale": "ru", "timezone": "Europe/Moscow"}
    later = await hub_campaigns(hub).pending_chunk(launched.run_id, members[4], 100, hub.clock())
    assert [p.profile_id for p in later] == members[5:]

    result = await runner.execute(launched.run_id)
    assert result.status == "done" and result.decisions["suppressed"] == 2
    audience = await runner.campaigns.audience_of(launched.run_id)
    assert audience[merged] == ("skipped", "suppressed") and audience[deleted] == ("skipped", "suppressed")


def hub_campaigns(hub: Hub) -> Any:
    from cdp_hub.store.campaigns import CampaignRepository

    return CampaignRepository(hub.store)
