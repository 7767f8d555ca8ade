"""Profiles: manual merge, unmerge with re-attributed events, the CLI and the admin HTTP routes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from cdp_hub.bus.memory import MemoryBus
from cdp_hub.cli import main
from cdp_hub.config import Settings
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import build_stage
from cdp_hub.resolver import IdentityRules, find_profile, load_profile
from cdp_hub.resolver.http import routes
from cdp_hub.resolver.merge import MergeRefused, UnmergeError, merge_profiles, unmerge_profile
from cdp_hub.resolver.stage import ResolverStage

from .test_resolver import decoded, event, records


@pytest.fixture
async def hub(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Hub]:
    settings = Settings(postgres_dsn=pg_dsn, redis_url=redis_url, data_dir=tmp_path / "data")
    h = Hub(settings, bus=MemoryBus(), metrics=Metrics())
    await h.start()
    yield h
    await h.stop()


async def _pid(stage: ResolverStage, body: dict[str, Any]) -> uuid.UUID:
    msgs = decoded(await stage.handle(records(body)))
    return uuid.UUID(next(m for m in msgs if m["type"] != "profile.created")["profile_id"])


async def test_wrong_merge_is_undone_and_events_follow_their_identities(hub: Hub) -> None:
    # Without the household rule, which would keep Anna and Boris apart (their first names differ): this test
    # needs the wrong merge to happen so it can undo it.
    stage = build_stage(hub, "resolver", rules=IdentityRules(household_rule=False))
    anna = await _pid(stage, event(("email", "anna@x.ru"), traits={"first_name": "Anna", "city": "Omsk"}))
    await stage.handle(records(event(("email", "anna@x.ru"), type="order.placed", at=1,
                                     properties={"order_id": "a1"})))
    boris = await _pid(stage, event(("phone", "+79160000100"), at=2, traits={"first_name": "Boris"}))
    await stage.handle(records(event(("phone", "+79160000100"), type="order.placed", at=3,
                                     properties={"order_id": "b1"})))
    # A shared family device glues them together.
    await stage.handle(records(event(("email", "anna@x.ru"), ("device_id", "tablet"), at=4, type="app.opened")))
    glue = decoded(await stage.handle(records(event(("phone", "+79160000100"), ("device_id", "tablet"), at=5,
                                                    type="app.opened"))))
    assert [m["type"] for m in glue] == ["app.opened", "profile.merged"]
    merged = await load_profile(hub.store, boris)
    assert merged is not None and merged.profile_id == anna and merged.golden["first_name"] == "Boris"

    outcome = await unmerge_profile(hub.store, boris)
    assert outcome.restored == boris and outcome.holder == anna
    assert set(outcome.identities) == {("phone", "+79160000100")}
    assert outcome.events_moved == 2  # Boris's own events; the gluing one stays with the survivor
    assert outcome.event is not None and outcome.event.type == "profile.unmerged"
    assert outcome.event.properties["merged_profile_ids"] == [str(boris)]

    a, b = await load_profile(hub.store, anna), await load_profile(hub.store, boris)
    assert a is not None and b is not None and b.profile_id == boris
    assert a.golden == {"first_name": "Anna", "city": "Omsk"} and b.golden == {"first_name": "Boris"}
    assert {i.value for i in b.identities} == {"+79160000100"}
    assert sorted(e.properties.get("order_id", "") for e in b.recent_events) == ["", "b1"]
    assert a.merges[0].undone_at is not None

    # The split holds: the next event with both sides is not merged again, and the refusal is visible.
    again = decoded(await stage.handle(records(event(("phone", "+79160000100"), ("device_id", "tablet"), at=6,
                                                     type="app.opened"))))
    assert [m["type"] for m in again] == ["app.opened"]
    rules = [r["rule"] for r in await hub.store.fetch("SELECT rule FROM identity_conflicts")]
    assert rules == ["unmerged"]
    with pytest.raises(UnmergeError):
        await unmerge_profile(hub.store, boris)


async def test_manual_merge_respects_the_rules_unless_forced(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    a = await _pid(stage, event(("crm_id", "C1"), ("email", "m1@x.ru")))
    b = await _pid(stage, event(("crm_id", "C2"), ("email", "m2@x.ru"), at=1))
    c = await _pid(stage, event(("email", "m3@x.ru"), at=2, traits={"city": "Perm"}))
    with pytest.raises(MergeRefused, match="crm_id"):
        await merge_profiles(hub.store, [a, b], reason="test")
    outcome = await merge_profiles(hub.store, [c, a], reason="fuzzy match 0.99")
    assert outcome is not None and outcome.survivor == a and outcome.losers == [c]
    assert outcome.event.type == "profile.merged" and outcome.event.profile_id == a
    view = await find_profile(hub.store, "email", "m3@x.ru")
    assert view is not None and view.profile_id == a and view.golden == {"city": "Perm"}
    assert await merge_profiles(hub.store, [a, c], reason="again") is None  # one profile already
    forced = await merge_profiles(hub.store, [b, a], reason="operator says so", force=True)
    assert forced is not None and forced.survivor == a


async def test_cli_show_and_unmerge(hub: Hub, pg_dsn: str, redis_url: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stage = build_stage(hub, "resolver")
    a = await _pid(stage, event(("email", "cli@x.ru"), traits={"first_name": "Cli"}))
    b = await _pid(stage, event(("phone", "+79160000200"), at=1))
    await stage.handle(records(event(("email", "cli@x.ru"), ("phone", "8 916 000-02-00"), at=2)))
    monkeypatch.setenv("CDP_HUB_POSTGRES_DSN", pg_dsn)
    monkeypatch.setenv("CDP_HUB_REDIS_URL", redis_url)
    monkeypatch.setenv("CDP_HUB_DATA_DIR", str(tmp_path / "cli"))

    assert await _run(["profiles", "show", "--phone", "8 (916) 000-02-00", "--json"]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["profile_id"] == str(a) and shown["golden"] == {"first_name": "Cli"}
    assert {i["value"] for i in shown["identities"]} == {"cli@x.ru", "+79160000200"}
    assert shown["merges"][0]["merged_profile_id"] == str(b)

    assert await _run(["profiles", "show", "--kind", "email", "--value", "CLI@x.ru"]) == 0
    text = capsys.readouterr().out
    assert f"Profile {a}" in text and "Merge history:" in text and "first_name" in text

    assert await _run(["profiles", "unmerge", str(b)]) == 0
    assert f"profile {b} split from {a}" in capsys.readouterr().out
    assert await _run(["profiles", "show", "--email", "nobody@x.ru"]) == 1


async def _run(argv: list[str]) -> int:
    # The CLI runs its own event loop; run it in a thread so the test's loop keeps going.
    import asyncio

    return await asyncio.to_thread(main, argv)


async def test_http_routes(hub: Hub) -> None:
    stage = build_stage(hub, "resolver")
    pid = await _pid(stage, event(("email", "web@x.ru"), traits={"city": "Ufa"}))
    app = Starlette(routes=routes(hub))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub") as client:
        r = await client.get("/v1/profiles", params={"kind": "email", "value": " WEB@x.ru "})
        assert r.status_code == 200 and r.json()["profile_id"] == str(pid) and r.json()["golden"] == {"city": "Ufa"}
        r = await client.get(f"/v1/profiles/{pid}", params={"events": "1"})
        assert r.status_code == 200 and len(r.json()["recent_events"]) == 1
        assert (await client.get(f"/v1/profiles/{uuid.uuid4()}")).status_code == 404
        assert (await client.get("/v1/profiles/not-a-uuid")).status_code == 400
        assert (await client.get("/v1/profiles", params={"kind": "email"})).status_code == 400
        assert (await client.get("/v1/profiles", params={"kind": "phone", "value": "abc"})).status_code == 400
