"""How far to trust the matcher's scores on this data: the score histogram and, per threshold, how many
pairs it would suggest and how many of them are expected to be right.

A Fellegi-Sunter score is a posterior probability, so among the pairs scored at or above a threshold the
expected number of true matches is the sum of their scores and the expected precision their mean. That
holds only as far as the model fits the data, which is why the report also says where the parameters came
from: m estimated by EM on this data and validated (auto-merge allowed), or the configured defaults (the
scores are then a conservative guess, and suggestions are for an operator to decide).

    run = match(records, config, threshold=REPORT_FLOOR)  ->  calibration_report(run, config)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from cdp_hub.resolver.fuzzy.match import MatchRun
from cdp_hub.resolver.fuzzy.model import MatcherConfig

__all__ = ["REPORT_FLOOR", "REPORT_THRESHOLDS", "Calibration", "ThresholdRow", "calibration_report"]

# Pairs scored below this are left out of a report run (the mass of obvious non-matches).
REPORT_FLOOR = 0.01
REPORT_THRESHOLDS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.99999)
_BINS: tuple[float, ...] = (REPORT_FLOOR, 0.1, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999, 0.99999, 1.0)


@dataclass(frozen=True, slots=True)
class ThresholdRow:
    """Pairs at or above ``threshold``, how many are expected to be one person, the expected precision."""

    threshold: float
    pairs: int
    expected_true: float
    expected_precision: float

    def as_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "pairs": self.pairs, "expected_true": round(self.expected_true, 1),
                "expected_false": round(self.pairs - self.expected_true, 1),
                "expected_precision": round(self.expected_precision, 5)}


@dataclass(slots=True)
class Calibration:
    """The report: parameters' provenance, score histogram (``[low, high)`` bins), threshold table."""

    records: int
    candidate_pairs: int
    m_source: str
    u_source: str
    validated: bool
    pair_prior: float
    suggest_threshold: float
    auto_merge_threshold: float | None
    histogram: list[tuple[float, float, int]] = field(default_factory=list)
    thresholds: list[ThresholdRow] = field(default_factory=list)

    @property
    def auto_merge(self) -> str:
        """Whether auto-merge would run, and why not."""
        if self.auto_merge_threshold is None:
            return "off (no auto_merge_threshold set)"
        if not self.validated:
            return "refused: m was not estimated on this data and validated"
        return f"on at {self.auto_merge_threshold:g}"

    def as_json(self) -> dict[str, Any]:
        return {
            "records": self.records, "candidate_pairs": self.candidate_pairs, "m_source": self.m_source,
            "u_source": self.u_source, "validated": self.validated, "pair_prior": self.pair_prior,
            "suggest_threshold": self.suggest_threshold, "auto_merge_threshold": self.auto_merge_threshold,
            "auto_merge": self.auto_merge,
            "histogram": [{"from": lo, "to": hi, "pairs": n} for lo, hi, n in self.histogram],
            "thresholds": [row.as_json() for row in self.thresholds],
        }

    def lines(self) -> list[str]:
        """The report as text for a terminal."""
        out = [
            f"{self.records:,} profiles, {self.candidate_pairs:,} candidate pairs; u from {self.u_source}, "
            f"m from {self.m_source}; P(two random profiles are one person) = {self.pair_prior:.2e}",
            f"auto-merge: {self.auto_merge}",
            "",
            f"score histogram (pairs scored >= {REPORT_FLOOR:g})",
        ]
        widest = max((n for _, _, n in self.histogram), default=0)
        for lo, hi, n in self.histogram:
            bar = "#" * (round(40 * n / widest) if widest else 0)
            out.append(f"  [{lo:<7g}, {hi:<7g}{']' if hi == 1.0 else ')'} {n:>8,}  {bar}")
        out += ["", "threshold   pairs    expected right   expected wrong   expected precision"]
        for row in self.thresholds:
            mark = "  <- suggest" if row.threshold == self.suggest_threshold else ""
            if self.auto_merge_threshold is not None and row.threshold == self.auto_merge_threshold:
                mark += "  <- auto-merge"
            out.append(f"  {row.threshold:<9g} {row.pairs:>7,}  {row.expected_true:>15,.1f}  "
                       f"{row.pairs - row.expected_true:>15,.1f}  {row.expected_precision:>18.4f}{mark}")
        return out


def calibration_report(run: MatchRun, config: MatcherConfig,
                       thresholds: tuple[float, ...] = REPORT_THRESHOLDS) -> Calibration:
    """The report of one run; ``run`` should hold the pairs down to :data:`REPORT_FLOOR` (or lower)."""
    scores = sorted((p.score for p in run.pairs), reverse=True)
    wanted = sorted({*thresholds, config.suggest_threshold,
                     *(() if config.auto_merge_threshold is None else (config.auto_merge_threshold,))})
    rows = []
    for t in wanted:
        chosen = [s for s in scores if s >= t]
        total = sum(chosen)
        rows.append(ThresholdRow(t, len(chosen), total, total / len(chosen) if chosen else 1.0))
    histogram = []
    for lo, hi in itertools.pairwise(_BINS):
        n = sum(1 for s in scores if lo <= s < hi or (hi == 1.0 and s == 1.0))
        histogram.append((lo, hi, n))
    params = run.parameters
    return Calibration(
        records=run.records, candidate_pairs=run.candidate_pairs, m_source=params.m_source,
        u_source=params.u_source, validated=params.validated, pair_prior=params.pair_prior,
        suggest_threshold=config.suggest_threshold, auto_merge_threshold=config.auto_merge_threshold,
        histogram=histogram, thresholds=rows,
    )
