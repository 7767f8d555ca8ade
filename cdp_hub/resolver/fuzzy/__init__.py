"""Fuzzy (probabilistic) person matching: the same person in records that share no identifier.

The deterministic identity graph links records through shared identifiers. This module finds the rest:
name variants and transliteration (``Иванов`` / ``Ivanov``), typos, swapped given name and surname,
with birth date and address as evidence, in the Fellegi-Sunter framework::

    records ─▶ blocking (several passes: phonetic names, birth date, postcode, sorted neighbourhood)
            ─▶ comparison vectors (exact / similar / different per field, Jaro-Winkler, edit distance)
            ─▶ m/u probabilities (u from random pairs, m and the prior by EM; or configured)
            ─▶ ScoredPair(a, b, score=P(match), weight=log2 Bayes factor, evidence per field)
            ─▶ cluster(pairs, threshold)              connected components
            ─▶ suggest_merges(store, config)          merge_suggestions table, auto-merge candidates

Public API::

    find_matches(records, config) -> list[ScoredPair]
    match(records, config, threshold=None) -> MatchRun     (pairs plus blocking/EM statistics)
    cluster(pairs, threshold) -> list[list[str]]
    await suggest_merges(store, config, incremental=False) -> SuggestResult
    MatchIndex.build(records, config); match_incremental(index, changed_records, parameters=...) -> MatchRun
                                                           (cdp_hub.resolver.fuzzy.index: changed records only)
    await list_suggestions(store, status="open") -> list[Suggestion]
    await set_suggestion_status(store, a, b, "rejected", decided_by="alice") -> bool
    await merge_auto_suggestions(store, result.auto, config) -> AutoMergeResult

See docs/fuzzy-matching.md for the method, a configuration example and the CLI.
"""

from __future__ import annotations

from cdp_hub.resolver.fuzzy.calibration import Calibration, calibration_report
from cdp_hub.resolver.fuzzy.match import MatchRun, ModelParameters, cluster, find_matches, match
from cdp_hub.resolver.fuzzy.model import (
    BlockingPass,
    Comparison,
    FieldEvidence,
    MatcherConfig,
    PersonRecord,
    ScoredPair,
    default_config,
    load_matcher_config,
)
from cdp_hub.resolver.fuzzy.store import (
    AutoMergeResult,
    Suggestion,
    SuggestResult,
    list_suggestions,
    merge_auto_suggestions,
    profile_record,
    set_suggestion_status,
    suggest_merges,
)
from cdp_hub.resolver.fuzzy.text import fold, name_skeleton, soundex, transliterate

__all__ = [
    "AutoMergeResult",
    "BlockingPass",
    "Calibration",
    "Comparison",
    "FieldEvidence",
    "MatchRun",
    "MatcherConfig",
    "ModelParameters",
    "PersonRecord",
    "ScoredPair",
    "SuggestResult",
    "Suggestion",
    "calibration_report",
    "cluster",
    "default_config",
    "find_matches",
    "fold",
    "list_suggestions",
    "load_matcher_config",
    "match",
    "merge_auto_suggestions",
    "name_skeleton",
    "profile_record",
    "set_suggestion_status",
    "soundex",
    "suggest_merges",
    "transliterate",
]
