"""The scenario report: per scenario and campaign, each variant's funnel, conversion, revenue and uplift.

    AttributionRepository.figures (set-wise SQL over events)  ─▶ ArmFigures per (scenario, variant, channel)
        ─▶ per scenario: the control row, each variant over all its channels (``*``) and per channel
        ─▶ rates, revenue per recipient, uplift over control (reports/stats.py: two-proportion z-interval for
           conversion, Welch interval for revenue per recipient)
        ─▶ table (text), CSV and JSON rows; the HTML report draws the same (reports/html.py)

``cdp-hub report scenarios --since 30d`` prints it; the ``attribution`` job (jobs/kinds.py) puts the same
figures into Prometheus gauges (:func:`publish_metrics`). docs/reports.md explains every column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cdp_hub.durations import parse_duration
from cdp_hub.errors import ConfigurationError
from cdp_hub.metrics import Metrics
from cdp_hub.reports.stats import Interval, conversion_uplift, revenue_uplift
from cdp_hub.store.attribution import ArmFigures, AttributionRepository
from cdp_hub.store.db import Store

__all__ = ["ALL_CHANNELS", "Arm", "Report", "ScenarioReport", "build_report", "parse_since", "publish_metrics",
           "scenario_report"]

ALL_CHANNELS = "*"
CONTROL = "control"
CSV_COLUMNS = ("scenario", "variant", "channel", "sent", "delivered", "opened", "clicked", "recipients",
               "converted", "conversion_rate", "revenue", "revenue_per_recipient", "uplift_pp", "uplift_low_pp",
               "uplift_high_pp", "uplift_p_value", "revenue_uplift", "revenue_uplift_low", "revenue_uplift_high")


@dataclass(frozen=True)
class Arm:
    """One row of the report: a variant on a channel (or over all, ``*``), or the control group."""

    figures: ArmFigures
    uplift: Interval | None = None
    """Conversion rate minus the control group's (a fraction; x100 for percentage points)."""
    revenue_uplift: Interval | None = None
    """Revenue per recipient minus the control group's (currency units)."""

    @property
    def conversion_rate(self) -> float | None:
        f = self.figures
        return f.converted / f.recipients if f.recipients else None

    @property
    def revenue_per_recipient(self) -> float | None:
        f = self.figures
        return float(f.revenue) / f.recipients if f.recipients else None

    def as_dict(self) -> dict[str, Any]:
        f = self.figures
        rate, per = self.conversion_rate, self.revenue_per_recipient
        up, rev = self.uplift, self.revenue_uplift
        return {
            "scenario": f.scenario, "variant": f.variant, "channel": f.channel, "sent": f.sent,
            "delivered": f.delivered, "opened": f.opened, "clicked": f.clicked, "recipients": f.recipients,
            "converted": f.converted, "conversion_rate": _round(rate, 6), "revenue": float(f.revenue),
            "revenue_per_recipient": _round(per, 2),
            "uplift_pp": _round(up.estimate * 100, 3) if up else None,
            "uplift_low_pp": _round(up.low * 100, 3) if up else None,
            "uplift_high_pp": _round(up.high * 100, 3) if up else None,
            "uplift_p_value": _round(up.p_value, 4) if up else None,
            "revenue_uplift": _round(rev.estimate, 2) if rev else None,
            "revenue_uplift_low": _round(rev.low, 2) if rev else None,
            "revenue_uplift_high": _round(rev.high, 2) if rev else None,
        }


@dataclass(frozen=True)
class ScenarioReport:
    """One scenario or campaign: its control group (if any) and its variants (``none`` outside an experiment),
    each over all channels, and by channel."""

    scenario: str
    control: Arm | None
    variants: list[Arm] = field(default_factory=list)
    """Each variant over all its channels (channel ``*``)."""
    by_channel: list[Arm] = field(default_factory=list)

    @property
    def rows(self) -> list[Arm]:
        """Every row in display order: per variant, its total then its channels; the control last."""
        out: list[Arm] = []
        for arm in self.variants:
            out.append(arm)
            channels = [c for c in self.by_channel if c.figures.variant == arm.figures.variant]
            if len(channels) > 1:
                out.extend(channels)
        if self.control is not None:
            out.append(self.control)
        return out

    @property
    def funnel(self) -> dict[str, int]:
        """sent → delivered → opened → clicked → converted over every variant (the control sends nothing)."""
        keys = ("sent", "delivered", "opened", "clicked", "converted")
        return {k: sum(int(getattr(a.figures, k)) for a in self.variants) for k in keys}


@dataclass(frozen=True)
class Report:
    since: datetime
    until: datetime
    window: timedelta
    conversion_events: tuple[str, ...]
    scenarios: list[ScenarioReport]

    def rows(self) -> list[dict[str, Any]]:
        return [arm.as_dict() for s in self.scenarios for arm in s.rows]

    def as_json(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(),
                "attribution_window_seconds": int(self.window.total_seconds()),
                "conversion_events": list(self.conversion_events), "rows": self.rows()}

    def as_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows():
            writer.writerow({k: _csv_cell(row[k]) for k in CSV_COLUMNS})
        return out.getvalue()

    def as_table(self) -> str:
        head = ("scenario", "variant", "channel", "sent", "deliv.", "opened", "clicked", "reached", "conv.",
                "rate", "revenue", "uplift (95% CI)")
        lines: list[tuple[str, ...]] = [head]
        for s in self.scenarios:
            for arm in s.rows:
                d = arm.as_dict()
                rate = "-" if d["conversion_rate"] is None else f"{d['conversion_rate'] * 100:.2f}%"
                up = arm.uplift
                uplift = "-" if up is None else (f"{up.estimate * 100:+.2f} pp "
                                                  f"[{up.low * 100:+.2f}, {up.high * 100:+.2f}]")
                channel = "all" if d["channel"] == ALL_CHANNELS else d["channel"] or "-"
                lines.append((d["scenario"], d["variant"], channel, str(d["sent"]),
                              str(d["delivered"]), str(d["opened"]), str(d["clicked"]), str(d["recipients"]),
                              str(d["converted"]), rate, f"{d['revenue']:.2f}", uplift))
        if len(lines) == 1:
            return "no messages or control decisions in this period"
        widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                         for line in lines)


def build_report(figures: Iterable[ArmFigures], *, since: datetime, until: datetime, window: timedelta,
                 conversion_events: Sequence[str], confidence: float = 0.95) -> Report:
    """Group the store's figures by scenario and compare every variant row with the scenario's control."""
    by_scenario: dict[str, list[ArmFigures]] = {}
    for f in figures:
        by_scenario.setdefault(f.scenario, []).append(f)
    scenarios = []
    for name in sorted(by_scenario):
        rows = by_scenario[name]
        control_figures = next((f for f in rows if f.variant == CONTROL), None)

        def arm(f: ArmFigures, control: ArmFigures | None = control_figures) -> Arm:
            if control is None:
                return Arm(f)
            return Arm(f, conversion_uplift(f.converted, f.recipients, control.converted, control.recipients,
                                            confidence=confidence),
                       revenue_uplift(f.recipients, float(f.revenue), float(f.revenue_squares),
                                      control.recipients, float(control.revenue), float(control.revenue_squares),
                                      confidence=confidence))

        variants = [arm(f) for f in rows if f.variant != CONTROL and f.channel == ALL_CHANNELS]
        by_channel = [arm(f) for f in rows if f.variant != CONTROL and f.channel != ALL_CHANNELS]
        scenarios.append(ScenarioReport(name, Arm(control_figures) if control_figures else None, variants,
                                        by_channel))
    return Report(since, until, window, tuple(conversion_events), scenarios)


async def scenario_report(store: Store, *, since: datetime, until: datetime, window: timedelta,
                          conversion_events: Sequence[str], scenarios: Sequence[str] = ()) -> Report:
    """The report of ``[since, until)`` from the warehouse (``scenarios``: only these ids, if given)."""
    figures = await AttributionRepository(store).figures(since, until, window=window,
                                                         conversion_events=conversion_events)
    if scenarios:
        wanted = set(scenarios)
        figures = [f for f in figures if f.scenario in wanted]
    return build_report(figures, since=since, until=until, window=window, conversion_events=conversion_events)


def publish_metrics(report: Report, metrics: Metrics, *, known: Mapping[str, Iterable[str]],
                    now: float) -> int:
    """Set the attribution gauges from ``report`` for the scenarios and campaigns of the configuration only
    (``known``: scenario id -> its variant names; ``campaign:<id>`` for campaigns), so a label value never
    comes from data. Returns the number of rows published."""
    published = 0
    for s in report.scenarios:
        variants = known.get(s.scenario)
        if variants is None:
            continue
        allowed = {*variants, CONTROL, "none"}
        for arm in [*s.variants, *([s.control] if s.control else [])]:
            f = arm.figures
            if f.variant not in allowed:
                continue
            channel = "all" if f.channel in (ALL_CHANNELS, "") else f.channel
            metrics.attributed_recipients.labels(f.scenario, f.variant, channel).set(f.recipients)
            metrics.attributed_conversions.labels(f.scenario, f.variant, channel).set(f.converted)
            metrics.attributed_revenue.labels(f.scenario, f.variant, channel).set(float(f.revenue))
            if arm.uplift is not None:
                for bound, value in (("estimate", arm.uplift.estimate), ("low", arm.uplift.low),
                                     ("high", arm.uplift.high)):
                    metrics.attributed_uplift.labels(f.scenario, f.variant, bound).set(value * 100)
            published += 1
    metrics.attribution_last_run.set(now)
    return published


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``/``--until``: a duration back from ``now`` (``30d``, ``12h``) or an ISO date or date-time
    (UTC unless it says otherwise)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"{text!r} is neither a duration (30d, 12h) nor an ISO date (2026-05-01)") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _csv_cell(value: Any) -> Any:
    """A cell a spreadsheet will not run: text starting with = + - @ gets a leading quote (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value
