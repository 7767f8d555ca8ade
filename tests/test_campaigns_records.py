"""The campaign sender's fast records (cdp_hub/campaigns/records.py) are byte for byte what the models give:
message ids as ``message_id_for``, intents as ``MessageIntent(...).model_dump_json()``, ``message.decided``
events as ``event_message(Event(...))`` with the same key and headers, over a broad set of campaigns
(fallbacks, vars with unicode and nesting, every purpose, variants of channel, template and vars, a control
group), profiles (locales present, absent, not text) and outcomes (every decision, deferrals with a time, long
reasons, identities with unicode, quotes and control characters)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from cdp_hub.campaigns.model import CAMPAIGN_FILES, Campaign
from cdp_hub.campaigns.records import ChunkRecords, decision_model, intent_model
from cdp_hub.schema.events import Event
from cdp_hub.schema.messages import MessageIntent, message_id_for
from cdp_hub.triggers.experiments import allocate


def _campaigns() -> list[Campaign]:
    base: dict[str, Any] = {"audience": {"segment": "buyers"}, "channel": "email", "template": "spring",
                            "rate_limit": 100}
    shapes: list[dict[str, Any]] = [
        {"id": "plain"},
        {"id": "spring-2026", "fallbacks": ["push", "email", "sms"], "purpose": "transactional",
         "vars": {"discount": 20, "title": "Скидка «20%»\n\t\"вам\"", "nested": {"a": [1, 2.5, None, True]},
                  "emoji": "🌷", "control": "\x00\x1f\x7f"}},
        {"id": "service_note", "purpose": "service", "vars": {"empty": {}, "list": []}},
        {"id": "split_test", "fallbacks": ["sms"],
         "experiment": {"id": "split_2026", "control": 0.2,
                        "variants": [{"name": "a", "weight": 1},
                                     {"name": "b", "weight": 1, "template": "spring_short", "vars": {"tone": "тёплый"}},
                                     {"name": "c", "weight": 1, "channel": "push"},
                                     {"name": "d", "weight": 1, "delay": "2h", "vars": {"discount": 30}}]}},
    ]
    return [CAMPAIGN_FILES.parse({**base, **shape}, origin="test") for shape in shapes]


_PROFILES: list[dict[str, Any]] = [{}, {"locale": "ru"}, {"locale": "en-GB", "timezone": "Europe/London"},
                                   {"locale": 7}, {"locale": None}]
_IDENTITIES = [{"kind": "email", "value": "anna@example.ru"}, {"kind": "email", "value": "анна@пример.рф"},
               {"kind": "phone", "value": "+79161234567"}, {"kind": "crm_id", "value": 'c"1\\2\x01\x1f\u2028'},
               {"kind": "loyalty_card", "value": "🎫" * 40}]
_TIMES = [datetime(2026, 4, 1, 7, 0, tzinfo=UTC), datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
          datetime(2026, 6, 1, 10, 30, 0, 1234, tzinfo=timezone(timedelta(hours=3)))]


def test_message_ids_are_message_id_for() -> None:
    rng = random.Random(1)
    pids = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(300)] + [uuid.UUID(int=0)]
    for campaign in _campaigns():
        run = uuid.UUID(int=rng.getrandbits(128))
        records = ChunkRecords(campaign, run, _TIMES[0], messages_topic="m", events_topic="e")
        assert records.message_ids(pids) == [message_id_for(campaign.scenario, str(run), str(p)) for p in pids]


def test_intents_are_the_models_json() -> None:
    rng = random.Random(2)
    checked = 0
    for campaign in _campaigns():
        for now in _TIMES:
            run = uuid.UUID(int=rng.getrandbits(128))
            records = ChunkRecords(campaign, run, now, messages_topic="t.messages", events_topic="t.events")
            for i in range(60):
                pid = uuid.UUID(int=rng.getrandbits(128))
                mid = message_id_for(campaign.scenario, str(run), str(pid))
                allocation = allocate(campaign.experiment, str(pid), purpose=campaign.purpose, holdout_share=0.0, holdout_salt="")
                profile = _PROFILES[i % len(_PROFILES)]
                fast = records.intent(pid, mid, profile, allocation)
                assert fast == intent_model(campaign, run, pid, mid, profile, now, allocation, topic="t.messages")
                # ... and what the delivery stage reads back is the same intent.
                assert MessageIntent.model_validate_json(fast.value).model_dump_json().encode() == fast.value
                checked += 1
    assert checked == 4 * 3 * 60


def test_decision_events_are_the_models_json_with_the_same_key_and_headers() -> None:
    rng = random.Random(3)
    decisions = [("no_consent", "no email marketing consent recorded", None),
                 ("suppressed", "the profile was merged into another or deleted after launch", None),
                 ("holdout", "global_holdout", None), ("capped", "cap reached: marketing_caps 2/7d", None),
                 ("control", "control group of experiment split_2026", None),
                 ("deferred", "quiet hours 21:00-09:00 in the customer's time zone",
                  datetime(2026, 4, 2, 6, 0, tzinfo=UTC)),
                 ("deferred", "variant d sends 2h after launch", datetime(2026, 4, 1, 9, 0, 0, 5, tzinfo=UTC)),
                 ("no_consent", "«нет согласия» \"x\"\n" * 60, None)]
    checked = 0
    for campaign in _campaigns():
        for now in _TIMES:
            run = uuid.UUID(int=rng.getrandbits(128))
            records = ChunkRecords(campaign, run, now, messages_topic="t.messages", events_topic="t.events")
            for i in range(40):
                pid = uuid.UUID(int=rng.getrandbits(128))
                decision, reason, until = decisions[i % len(decisions)]
                outcome = (pid, decision, reason, message_id_for(campaign.scenario, str(run), str(pid)), until)
                identity = _IDENTITIES[i % len(_IDENTITIES)]
                allocation = allocate(campaign.experiment, str(pid), purpose=campaign.purpose, holdout_share=0.0, holdout_salt="")
                fast = records.decision(outcome, identity, allocation)
                assert fast == decision_model(campaign, run, outcome, identity, now, allocation, topic="t.events")
                event = Event.model_validate_json(fast.value)
                assert event.type == "message.decided" and event.profile_id == pid
                assert orjson.loads(fast.value)["properties"]["decision"] == decision
                checked += 1
    assert checked == 4 * 3 * 40
