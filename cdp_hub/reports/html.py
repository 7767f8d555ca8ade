"""The scenario report as one static HTML file: per scenario a funnel chart and an uplift chart, then the table.

    Report (reports/scenarios.py) ─▶ per scenario:
        funnel   sent → delivered → opened → clicked → converted (horizontal bars, every variant together)
        uplift   each variant's conversion uplift over control in percentage points, with its 95% interval
                 (a dot and a bar; the zero line is "no effect"); skipped when the scenario has no control
        table    the report's rows for the scenario
    ─▶ one HTML file, the charts inline as SVG (matplotlib, Agg backend): no server, no script, no network;
       it opens from a mail attachment or a shared drive.

matplotlib is the ``reports`` extra (``pip install 'cdp-hub[reports]'``); only this module imports it, when a
report is written. Every text from the data (scenario, variant and channel names come from events) is escaped
in the HTML; in the SVG, matplotlib draws text as paths.
"""

from __future__ import annotations

import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cdp_hub.errors import ConfigurationError
from cdp_hub.reports.scenarios import Report, ScenarioReport

__all__ = ["render_html", "write_html"]

FUNNEL_STEPS = ("sent", "delivered", "opened", "clicked", "converted")
_COLOURS = ("#2f6db5", "#e07b39", "#3a9d5d", "#9b59b6", "#c0392b", "#7f8c8d")

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; } .charts figure { margin: 0; }
table { border-collapse: collapse; font-size: 0.85em; margin-top: 0.8em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #eee; text-align: right; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
.meta { color: #666; font-size: 0.9em; } .up { color: #1e7b3c; } .down { color: #b03a2e; }
"""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never a window, never a display
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        raise ConfigurationError("the HTML report needs matplotlib: pip install 'cdp-hub[reports]'") from None
    return plt


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # inline: without the XML declaration and doctype


def funnel_chart(scenario: ScenarioReport) -> str:
    """Horizontal bars per funnel step, one bar per variant (its messages; converted: its recipients)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    variants = scenario.variants
    height = 0.8 / max(1, len(variants))
    for i, arm in enumerate(variants):
        values = [getattr(arm.figures, step) for step in FUNNEL_STEPS]
        ys = [len(FUNNEL_STEPS) - 1 - s + (i - (len(variants) - 1) / 2) * height for s in range(len(FUNNEL_STEPS))]
        bars = ax.barh(ys, values, height=height * 0.95, color=_COLOURS[i % len(_COLOURS)], label=arm.figures.variant)
        ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=3, fontsize=7)
    ax.set_yticks(range(len(FUNNEL_STEPS)), list(reversed(FUNNEL_STEPS)))
    ax.set_title("Funnel", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(x=0.15)
    if len(variants) > 1:
        ax.legend(fontsize=7, frameon=False, loc="lower right")
    out = _svg(fig)
    plt.close(fig)
    return out


def uplift_chart(scenario: ScenarioReport) -> str | None:
    """Each variant's conversion uplift over control (percentage points) with its 95% interval."""
    arms = [a for a in scenario.variants if a.uplift is not None]
    if not arms:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 0.6 + 0.55 * len(arms)))
    for i, arm in enumerate(arms):
        up = arm.uplift
        assert up is not None
        colour = "#1e7b3c" if up.low > 0 else "#b03a2e" if up.high < 0 else "#555555"
        ax.plot([up.low * 100, up.high * 100], [i, i], color=colour, linewidth=3, solid_capstyle="butt")
        ax.plot([up.estimate * 100], [i], "o", color=colour)
        ax.annotate(f"{up.estimate * 100:+.2f} pp", (up.estimate * 100, i), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=7)
    ax.axvline(0, color="#999999", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(arms)), [a.figures.variant for a in arms])
    ax.set_ylim(-0.6, len(arms) - 0.4)
    ax.set_xlabel("conversion uplift over control, percentage points (95% CI)", fontsize=8)
    ax.set_title("Uplift over control", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    out = _svg(fig)
    plt.close(fig)
    return out


def _table(scenario: ScenarioReport) -> str:
    head = ("variant", "channel", "sent", "delivered", "opened", "clicked", "reached", "converted", "rate",
            "revenue", "rev./recipient", "uplift (95% CI)", "revenue uplift (95% CI)")
    rows = []
    for arm in scenario.rows:
        d = arm.as_dict()
        up, rev = arm.uplift, arm.revenue_uplift
        css = "" if up is None else " class='up'" if up.low > 0 else " class='down'" if up.high < 0 else ""
        cells = [d["variant"], "all" if d["channel"] == "*" else d["channel"] or "-",
                 f"{d['sent']:,}", f"{d['delivered']:,}", f"{d['opened']:,}", f"{d['clicked']:,}",
                 f"{d['recipients']:,}", f"{d['converted']:,}",
                 "-" if d["conversion_rate"] is None else f"{d['conversion_rate'] * 100:.2f}%",
                 f"{d['revenue']:,.2f}",
                 "-" if d["revenue_per_recipient"] is None else f"{d['revenue_per_recipient']:,.2f}",
                 "-" if up is None else f"{up.estimate * 100:+.2f} pp [{up.low * 100:+.2f}, {up.high * 100:+.2f}]",
                 "-" if rev is None else f"{rev.estimate:+,.2f} [{rev.low:+,.2f}, {rev.high:+,.2f}]"]
        rows.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def render_html(report: Report, *, title: str = "Scenario report") -> str:
    """The whole report as one HTML document."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    days = report.window.total_seconds() / 86400
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>Messages from {html.escape(report.since.strftime('%Y-%m-%d %H:%M'))} to "
        f"{html.escape(report.until.strftime('%Y-%m-%d %H:%M'))} UTC; a conversion is "
        f"{html.escape(', '.join(report.conversion_events))} within {days:g} days after a message was delivered "
        "or opened (control group: after the message it did not get). Uplift: conversion rate minus the "
        f"control group's. Generated {generated}.</p>",
    ]
    if not report.scenarios:
        parts.append("<p>No messages or control decisions in this period.</p>")
    for scenario in report.scenarios:
        parts.append(f"<h2>{html.escape(scenario.scenario)}</h2><div class='charts'>")
        parts.append(f"<figure>{funnel_chart(scenario)}</figure>")
        uplift = uplift_chart(scenario)
        if uplift is not None:
            parts.append(f"<figure>{uplift}</figure>")
        elif scenario.control is None:
            parts.append("<p class='meta'>No control group: no uplift to show.</p>")
        parts.append("</div>")
        parts.append(_table(scenario))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: Report, path: Path, *, title: str = "Scenario report") -> Path:
    """Write the report to ``path`` (one file, charts included) and return it."""
    path.write_text(render_html(report, title=title), encoding="utf-8")
    return path
