"""Attribution and the scenario report: the set-wise SQL on a constructed history gives the hand-computed
figures, the statistics match worked examples, and the report comes out as a table, CSV, JSON and HTML."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdp_hub.cli import main
from cdp_hub.metrics import Metrics
from cdp_hub.reports.html import render_html
from cdp_hub.reports.scenarios import build_report, parse_since, publish_metrics, scenario_report
from cdp_hub.reports.stats import conversion_uplift, revenue_uplift, student_t_quantile
from cdp_hub.store import Store
from cdp_hub.store.attribution import ArmFigures
from cdp_hub.store.events import EventRepository

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
SCENARIO = "cart_reminder"


# -- the statistics -------------------------------------------------------------------------------------------


def test_student_t_quantiles_match_the_tables() -> None:
    # Printed t tables: t(0.975; 1) = 12.706, t(0.975; 10) = 2.228, t(0.975; 30) = 2.042, t(0.95; 5) = 2.015.
    assert student_t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert student_t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)
    assert student_t_quantile(0.975, 30) == pytest.approx(2.042, abs=1e-3)
    assert student_t_quantile(0.95, 5) == pytest.approx(2.015, abs=1e-3)
    assert student_t_quantile(0.975, 1e7) == pytest.approx(1.95996, abs=1e-4)


def test_conversion_uplift_matches_the_hand_computed_example() -> None:
    """Variant: 4 of 10 converted (p1 = 0.4); control: 1 of 10 (p0 = 0.1).

    uplift = 0.4 - 0.1 = 0.3
    se = sqrt(0.4·0.6/10 + 0.1·0.9/10) = sqrt(0.024 + 0.009) = sqrt(0.033) = 0.181659
    95%: z = 1.959964, half width = 1.959964 · 0.181659 = 0.356045 -> [-0.056045, 0.656045]
    pooled p = 5/20 = 0.25, se0 = sqrt(0.25·0.75·(1/10 + 1/10)) = 0.193649, z = 0.3/0.193649 = 1.549193,
    p-value = 2·(1 - Φ(1.549193)) = 0.121335
    """
    up = conversion_uplift(4, 10, 1, 10)
    assert up is not None
    assert up.estimate == pytest.approx(0.3)
    assert up.low == pytest.approx(-0.056045, abs=1e-6)
    assert up.high == pytest.approx(0.656045, abs=1e-6)
    assert up.p_value == pytest.approx(0.121335, abs=1e-6)
    assert not up.significant
    assert conversion_uplift(0, 0, 1, 10) is None
    big = conversion_uplift(400, 1000, 100, 1000)  # the same rates on 100x the people: significant
    assert big is not None and big.significant and big.low > 0


def test_revenue_uplift_matches_the_hand_computed_welch_example() -> None:
    """Revenue per recipient, variant: 1000, 2000, 500, 1500 and six zeros; control: 1000 and nine zeros.

    variant: n = 10, Σx = 5000, Σx² = 7,500,000, mean 500, s² = (7.5e6 - 5000²/10)/9 = 555,555.56
    control: n = 10, Σx = 1000, Σx² = 1,000,000, mean 100, s² = (1e6 - 1000²/10)/9 = 100,000
    diff = 400; s²/n: 55,555.556 and 10,000; se = sqrt(65,555.556) = 256.0382
    Welch–Satterthwaite ν = 65,555.556² / (55,555.556²/9 + 10,000²/9) = 12.1383; t(0.975; 12.1383) = 2.17606
    95%: 400 ± 2.17606 · 256.0382 = 400 ± 557.155 -> [-157.155, 957.155]
    """
    up = revenue_uplift(10, 5000, 7_500_000, 10, 1000, 1_000_000)
    assert up is not None
    assert up.estimate == pytest.approx(400)
    assert up.low == pytest.approx(-157.155, abs=1e-3)
    assert up.high == pytest.approx(957.155, abs=1e-3)
    assert revenue_uplift(1, 10, 100, 10, 0, 0) is None


# -- the SQL on a constructed history ---------------------------------------------------------------------------


class History:
    """Events as the resolver stores them (one row per event, its body the canonical JSON)."""

    def __init__(self) -> None:
        self.rows: list[tuple[uuid.UUID, datetime, uuid.UUID, str, str, str, datetime, str]] = []

    def add(self, profile: uuid.UUID, etype: str, at: datetime, properties: dict[str, Any]) -> None:
        event_id = uuid.uuid4()
        body = {"event_id": str(event_id), "type": etype, "source": "test", "occurred_at": at.isoformat(),
                "identities": [{"kind": "crm_id", "value": str(profile)}], "properties": properties,
                "profile_id": str(profile)}
        self.rows.append((event_id, at, profile, etype, "test", str(event_id), at, orjson.dumps(body).decode()))

    def message(self, profile: uuid.UUID, *stages: str, channel: str = "email", at: datetime = T0,
                scenario: str = SCENARIO) -> None:
        message_id = str(uuid.uuid4())
        for i, stage in enumerate(("sent", *stages)):
            self.add(profile, f"message.{stage}", at + timedelta(minutes=i),
                     {"message_id": message_id, "channel": channel, "scenario": scenario})

    def assigned(self, profile: uuid.UUID, variant: str, *, key: uuid.UUID | None = None,
                 at: datetime = T0 - timedelta(minutes=1)) -> None:
        self.add(profile, "experiment.assigned", at, {"experiment": "exp1", "scenario": SCENARIO,
                                                      "variant": variant, "profile_key": str(key or profile)})

    def control(self, profile: uuid.UUID, at: datetime = T0) -> None:
        self.assigned(profile, "control")
        self.add(profile, "message.decided", at, {"scenario": SCENARIO, "decision": "control",
                                                  "reason": "control group", "channel": "email"})

    def order(self, profile: uuid.UUID, at: datetime, total: Any, *, etype: str = "order.paid",
              order_id: str | None = None) -> None:
        self.add(profile, etype, at, {"order_id": order_id or uuid.uuid4().hex, "total": total, "currency": "RUB"})

    async def store_in(self, store: Store) -> None:
        async with store.pool.acquire() as conn:
            await EventRepository.insert_resolved(conn, *map(list, zip(*self.rows, strict=True)))


def constructed_history() -> History:
    """Scenario cart_reminder, experiment exp1: variant ``a`` on e-mail, a control group.

    Variant a, 12 messages sent to 12 profiles (v0..v11):
        v0..v9 delivered (10 recipients); of them v0..v5 opened, v0..v2 clicked; v10, v11 failed (sent only)
        v0 pays 1000 two days after, v1 2000 (placed and paid: one order, counted once), v2 500, v3 1500
        v4 pays 3000 eight days after (outside the 7-day window): not a conversion
        v5 paid 700 an hour *before* the message: not a conversion
        v10 (never delivered) pays 900: not a recipient, not counted
        v6 pays with a hostile total ("1e400; DROP TABLE events"): a conversion worth 0
    -> sent 12, delivered 10, opened 6, clicked 3, recipients 10, converted 5 (v0, v1, v2, v3, v6),
       revenue 5000, Σ revenue² = 1000² + 2000² + 500² + 1500² = 7,500,000
    Control, 10 profiles (c0..c9) decided control at T0; c0 pays 1000 after three days:
    -> recipients 10, converted 1, revenue 1000, Σ revenue² = 1,000,000
    Uplift: 5/10 - 1/10 = 0.4; se = sqrt(0.5·0.5/10 + 0.1·0.9/10) = sqrt(0.034) = 0.184391;
       95%: 0.4 ± 1.959964·0.184391 = 0.4 ± 0.361399 -> [0.038601, 0.761399] (significant)
    Revenue per recipient: 500 - 100 = 400 with the Welch interval [-157.155, 957.155] (worked out in
    test_revenue_uplift_matches_the_hand_computed_welch_example: the same sums).
    Merge: v0 also carries a merged-away profile's assignment to variant b (an older event, another
    profile_key): v0's own assignment, a, wins.
    """
    h = History()
    variant = [uuid.uuid4() for _ in range(12)]
    control = [uuid.uuid4() for _ in range(10)]
    for i, p in enumerate(variant):
        h.assigned(p, "a")
        stages = ("delivered", "opened", "clicked") if i < 3 else ("delivered", "opened") if i < 6 else \
            ("delivered",) if i < 10 else ()
        h.message(p, *stages)
    h.assigned(variant[0], "b", key=uuid.uuid4(), at=T0 - timedelta(days=3))
    h.order(variant[0], T0 + timedelta(days=2), "1000.00")
    h.order(variant[1], T0 + timedelta(days=1), "2000", etype="order.placed", order_id="o-1")
    h.order(variant[1], T0 + timedelta(days=1, hours=1), "2000", order_id="o-1")
    h.order(variant[2], T0 + timedelta(hours=5), 500)
    h.order(variant[3], T0 + timedelta(days=6), "1500.0")
    h.order(variant[4], T0 + timedelta(days=8), "3000")
    h.order(variant[5], T0 - timedelta(hours=1), "700")
    h.order(variant[10], T0 + timedelta(days=1), "900")
    h.order(variant[6], T0 + timedelta(days=1), "1e400; DROP TABLE events")
    for p in control:
        h.control(p)
    h.order(control[0], T0 + timedelta(days=3), "1000")
    h.order(uuid.uuid4(), T0 + timedelta(days=1), "5000")  # somebody who got nothing
    return h


async def test_the_attribution_sql_gives_the_hand_computed_figures(store: Store) -> None:
    await constructed_history().store_in(store)
    report = await scenario_report(store, since=T0 - timedelta(days=1), until=T0 + timedelta(days=30),
                                   window=WEEK, conversion_events=["order.paid", "order.placed"])
    [scenario] = report.scenarios
    assert scenario.scenario == SCENARIO
    [a] = scenario.variants
    f = a.figures
    assert (f.variant, f.channel) == ("a", "*")
    assert (f.sent, f.delivered, f.opened, f.clicked) == (12, 10, 6, 3)
    assert (f.recipients, f.converted, f.orders) == (10, 5, 5)
    assert (f.revenue, f.revenue_squares) == (5000, 7_500_000)
    assert scenario.control is not None
    c = scenario.control.figures
    assert (c.recipients, c.converted, c.revenue, c.revenue_squares, c.sent) == (10, 1, 1000, 1_000_000, 0)
    assert a.conversion_rate == pytest.approx(0.5)
    assert a.uplift is not None
    assert a.uplift.estimate == pytest.approx(0.4)
    assert a.uplift.low == pytest.approx(0.038601, abs=1e-6)
    assert a.uplift.high == pytest.approx(0.761399, abs=1e-6)
    assert a.uplift.significant
    assert a.revenue_uplift is not None
    assert (a.revenue_uplift.low, a.revenue_uplift.high) == (pytest.approx(-157.155, abs=1e-3),
                                                             pytest.approx(957.155, abs=1e-3))
    assert scenario.funnel == {"sent": 12, "delivered": 10, "opened": 6, "clicked": 3, "converted": 5}

    # Only order.paid: v1's order still counts (it was paid), the placed event alone adds nothing.
    paid_only = await scenario_report(store, since=T0 - timedelta(days=1), until=T0 + timedelta(days=30),
                                      window=WEEK, conversion_events=["order.paid"])
    assert paid_only.scenarios[0].variants[0].figures.converted == 5
    # A 1-day window: only v1 (1 day) and v2 (5 hours) and v6 (1 day, worth 0) converted in time.
    short = await scenario_report(store, since=T0 - timedelta(days=1), until=T0 + timedelta(days=30),
                                  window=timedelta(days=1, hours=2), conversion_events=["order.paid"])
    assert short.scenarios[0].variants[0].figures.converted == 3
    assert short.scenarios[0].control is not None and short.scenarios[0].control.figures.converted == 0
    # A period before anything happened: nothing.
    empty = await scenario_report(store, since=T0 - timedelta(days=30), until=T0 - timedelta(days=2),
                                  window=WEEK, conversion_events=["order.paid"])
    assert empty.scenarios == []
    assert "no messages" in empty.as_table()


async def test_channels_get_their_own_rows_and_a_profile_counts_once_over_all(store: Store) -> None:
    h = History()
    both = uuid.uuid4()
    h.message(both, "delivered", channel="email")
    h.message(both, "delivered", channel="sms", at=T0 + timedelta(hours=1))
    h.message(uuid.uuid4(), "delivered", channel="sms")
    h.order(both, T0 + timedelta(days=1), "100")
    await h.store_in(store)
    report = await scenario_report(store, since=T0 - timedelta(days=1), until=T0 + timedelta(days=30),
                                   window=WEEK, conversion_events=["order.paid"])
    [scenario] = report.scenarios
    [total] = scenario.variants
    assert (total.figures.variant, total.figures.recipients, total.figures.converted) == ("none", 2, 1)
    assert total.figures.revenue == 100  # one order, though it follows two messages
    by_channel = {a.figures.channel: (a.figures.sent, a.figures.recipients, a.figures.converted)
                  for a in scenario.by_channel}
    assert by_channel == {"email": (1, 1, 1), "sms": (2, 2, 1)}
    assert scenario.control is None and total.uplift is None


# -- output -------------------------------------------------------------------------------------------------------


def _figures(scenario: str, variant: str, channel: str, recipients: int, converted: int,
             revenue: int = 0) -> ArmFigures:
    return ArmFigures(scenario, variant, channel, recipients + 2, recipients, recipients // 2, recipients // 4,
                      recipients, converted, converted, revenue, revenue * revenue)  # type: ignore[arg-type]


HOSTILE = "<script>alert(1)</script>"


def _report() -> Any:
    figures = [_figures("welcome", "a", "*", 1000, 80, 40_000), _figures("welcome", "b", "*", 1000, 120, 60_000),
               _figures("welcome", "a", "email", 1000, 80, 40_000),
               _figures("welcome", "control", "", 500, 20, 9_000), _figures(HOSTILE, "none", "*", 10, 1, 100),
               _figures("=HYPERLINK(\"x\")", "none", "*", 5, 0)]
    return build_report(figures, since=T0, until=T0 + WEEK, window=WEEK, conversion_events=["order.paid"])


def test_the_report_as_table_csv_and_json() -> None:
    report = _report()
    table = report.as_table()
    assert "welcome" in table and "control" in table
    assert "+4.00 pp" in table  # b: 12% against 4% ... a: 8% - 4% = +4.00 pp
    rows = {(r["scenario"], r["variant"], r["channel"]): r for r in report.rows()}
    b = rows[("welcome", "b", "*")]
    assert b["conversion_rate"] == 0.12 and b["uplift_pp"] == 8.0
    assert b["uplift_low_pp"] < 8.0 < b["uplift_high_pp"]
    assert rows[("welcome", "control", "")]["uplift_pp"] is None
    csv_text = report.as_csv()
    assert csv_text.splitlines()[0].startswith("scenario,variant,channel,sent")
    assert "'=HYPERLINK" in csv_text  # no formula for a spreadsheet to run
    assert json.loads(json.dumps(report.as_json()))["attribution_window_seconds"] == 7 * 86400


def test_the_html_report_has_charts_and_escapes_names(tmp_path: Path) -> None:
    page = render_html(_report(), title="May <report>")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 3 + 1  # a funnel for each of the three scenarios, an uplift for welcome only
    assert HOSTILE not in page and "&lt;script&gt;" in page
    assert "May &lt;report&gt;" in page
    assert "No control group" in page
    assert "<script" not in page and "src=" not in page  # nothing runs, nothing is fetched: one file


def test_the_attribution_gauges_carry_configured_labels_only() -> None:
    metrics = Metrics()
    published = publish_metrics(_report(), metrics, known={"welcome": ["a", "b"]}, now=1.0)
    assert published == 3  # a, b and the control group; the hostile scenario is not configured
    value = metrics.registry.get_sample_value
    assert value("cdp_attribution_conversions", {"scenario": "welcome", "variant": "b", "channel": "all"}) == 120
    assert value("cdp_attribution_uplift", {"scenario": "welcome", "variant": "b", "bound": "estimate"}) == \
        pytest.approx(8.0)
    assert value("cdp_attribution_recipients", {"scenario": HOSTILE, "variant": "none", "channel": "all"}) is None


def test_since_takes_a_duration_or_a_date() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert parse_since("30d", now) == now - timedelta(days=30)
    assert parse_since("2026-05-01", now) == datetime(2026, 5, 1, tzinfo=UTC)
    with pytest.raises(Exception, match="neither a duration"):
        parse_since("last tuesday", now)


async def test_the_report_command_prints_json_csv_and_writes_html(store: Store, pg_dsn: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    await constructed_history().store_in(store)
    monkeypatch.setenv("CDP_HUB_POSTGRES_DSN", pg_dsn)  # the environment wins over the file
    config = tmp_path / "cdp-hub.toml"
    config.write_text('conversion_events = ["order.paid", "order.placed"]\n')
    since = (T0 - timedelta(days=1)).date().isoformat()
    until = (T0 + timedelta(days=30)).date().isoformat()
    args = ["--config", str(config), "report", "scenarios", "--since", since, "--until", until]
    assert await _main([*args, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {(r["variant"], r["converted"]) for r in rows} == {("a", 5), ("control", 1)}
    assert await _main([*args, "--csv"]) == 0
    assert capsys.readouterr().out.count("\n") == 3
    html_file = tmp_path / "report.html"
    assert await _main([*args, "--html", str(html_file)]) == 0
    page = html_file.read_text()
    assert page.count("<svg") == 2 and "cart_reminder" in page


async def _main(argv: list[str]) -> int:
    """The CLI in a thread: it runs its own event loop (asyncio.run), which a test's loop cannot host."""
    import asyncio

    return await asyncio.to_thread(main, argv)


async def test_the_attribution_job_sets_the_gauges_of_configured_scenarios(store: Store, pg_dsn: str,
                                                                            redis_url: str, tmp_path: Path) -> None:
    from cdp_hub.hub import Hub
    from cdp_hub.jobs.kinds import check_options, run_job_kind
    from cdp_hub.pipeline.embedded import settle_nothing
    from tests.conftest import _drop_keys, _test_hotstate, hub_settings

    await constructed_history().store_in(store)
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "cart.yaml").write_text(
        "id: cart_reminder\ntrigger: {event: cart.updated}\nchannel: email\ntemplate: abandoned_cart\n"
        "experiment: {id: exp1, control: 0.1, variants: [{name: a, weight: 1}]}\n")
    hub = Hub(hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, scenarios_dir=scenarios),
              metrics=Metrics(), hotstate=_test_hotstate(redis_url))
    await hub.start()
    try:
        check_options("attribution", "attribution", {"since": "2026-05-01"}, connectors={})
        summary = await run_job_kind(hub, "attribution", {"since": "2026-05-01"}, settle_nothing)
    finally:
        await _drop_keys(hub.hotstate)
        await hub.stop()
    assert summary["rows"] == 2  # variant a over all channels, and the control group
    value = hub.metrics.registry.get_sample_value
    labels = {"scenario": "cart_reminder", "variant": "a", "channel": "all"}
    assert value("cdp_attribution_recipients", labels) == 10
    assert value("cdp_attribution_conversions", labels) == 5
    assert value("cdp_attribution_revenue", labels) == 5000
    assert value("cdp_attribution_uplift", {"scenario": "cart_reminder", "variant": "a", "bound": "estimate"}) == \
        pytest.approx(40.0)


def test_the_settings_and_jobs_of_the_reports_guide_are_accepted() -> None:
    import re
    import tomllib

    from cdp_hub.config import Settings
    from cdp_hub.jobs.kinds import check_options

    text = (Path(__file__).resolve().parent.parent / "docs" / "reports.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    merged: dict[str, Any] = {}
    for block in blocks:
        merged.update(tomllib.loads(block))
    settings = Settings(**merged)
    assert settings.conversion_events == ["order.paid", "order.placed"]
    job = settings.jobs["attribution"]
    assert job.kind == "attribution"
    check_options("attribution", job.kind, job.options, connectors={})
    # The command lines of the guide parse.
    from cdp_hub.cli import Call, parse

    lines = re.findall(r"^cdp-hub (report scenarios[^#>\n]*)", text, re.M)
    assert lines
    for line in lines:
        call = parse(line.split())
        assert isinstance(call, Call) and call.handler.__name__ == "cmd_scenarios", line
