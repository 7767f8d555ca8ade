"""Fuzzy matching over the store: golden records in, scored merge suggestions out.

    profiles (merged_into IS NULL, golden jsonb) ─┐
    identities (latest phone, e-mail per profile) ─┴─▶ PersonRecord ─▶ match() ─▶ merge_suggestions
                                                                                    (upsert, set-wise)
        pairs with score >= auto_merge_threshold ─▶ status 'auto' ─▶ SuggestResult.auto

Re-running is idempotent: a pair keeps one row (``profile_a < profile_b``); an open or auto row gets the
new score and evidence, a decided row (``merged``, ``rejected``) keeps its decision and is never
offered for auto-merging again. Suggestions whose profile has since been merged away become ``stale``.

:func:`merge_auto_suggestions` executes the ``auto`` pairs through the resolver's merge API
(:mod:`cdp_hub.resolver.merge`): oldest profile survives, audit row in ``merges``, ``profile.merged`` event.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from cdp_hub.resolver.fuzzy.calibration import REPORT_FLOOR, Calibration, calibration_report
from cdp_hub.resolver.fuzzy.index import (
    INDEX_LAYOUT,
    lookup_keys,
    prepared_rows,
    rows_prepared,
    term_counts_of,
    term_kinds,
)
from cdp_hub.resolver.fuzzy.match import (
    MatchRun,
    ModelParameters,
    TermCounts,
    _match_prepared,
    _prepare,
    _Prepared,
    _term_column,
    cluster,
)
from cdp_hub.resolver.fuzzy.model import MatcherConfig, PersonRecord, ScoredPair
from cdp_hub.store import ProfileRepository, Store
from cdp_hub.store.profiles import Suggestion

if TYPE_CHECKING:
    from cdp_hub.resolver.rules import IdentityRules
    from cdp_hub.schema.events import Event

__all__ = [
    "GOLDEN_FIELDS",
    "IDENTITY_FIELDS",
    "SUGGESTION_STATUSES",
    "AutoMergeResult",
    "SuggestResult",
    "Suggestion",
    "list_suggestions",
    "merge_auto_suggestions",
    "profile_record",
    "set_suggestion_status",
    "suggest_merges",
]

log = logging.getLogger(__name__)

SUGGESTION_STATUSES = ("open", "auto", "merged", "rejected", "stale")
# Golden-record trait -> PersonRecord field.
GOLDEN_FIELDS: Mapping[str, str] = {
    "first_name": "given_name",
    "last_name": "surname",
    "middle_name": "middle_name",
    "birth_date": "birth_date",
    "gender": "gender",
    "street_number": "street_number",
    "address": "address",
    "address2": "address2",
    "city": "city",
    "postal_code": "postcode",
    "region": "region",
    "country": "country",
    "national_id": "national_id",
}
# Identity kind -> PersonRecord field (the most recently seen value of the kind).
IDENTITY_FIELDS: Mapping[str, str] = {"phone": "phone", "email": "email"}
_PATRONYMIC_ENDINGS = ("ovich", "evich", "ich", "ovna", "evna", "ichna", "ична", "овна", "евна", "ович", "евич", "ич")

_UPSERT_CHUNK = 10_000  # pairs per statement: bounded statement size, still set-wise


@dataclass(slots=True)
class SuggestResult:
    """What :func:`suggest_merges` did.

    ``auto`` holds the pairs at or above ``auto_merge_threshold`` whose suggestion is (still) in status
    ``auto``: the ones to merge automatically. Pairs an operator rejected are never in it, and it is empty
    unless a threshold is set and the run's parameters were estimated on the data and validated.
    """

    profiles: int
    candidate_pairs: int
    suggestions: int
    inserted: int
    updated: int
    stale: int
    auto: list[ScoredPair] = field(default_factory=list)
    matcher: str = ""
    seconds: float = 0.0
    run: MatchRun | None = None
    calibration: Calibration | None = None  # with ``report=True``
    compared: int | None = None  # incremental: the changed profiles compared against the rest (None: a full run)


def _split_full_name(full: str) -> tuple[str | None, str | None, str | None]:
    """(given, surname, middle) from a full name: ``Иванов Иван Иванович`` or ``Ivan Ivanov``."""
    tokens = full.split()
    if len(tokens) == 3 and tokens[2].lower().endswith(_PATRONYMIC_ENDINGS):
        return tokens[1], tokens[0], tokens[2]  # Russian order: surname, given name, patronymic
    if len(tokens) >= 2:
        return tokens[0], tokens[-1], " ".join(tokens[1:-1]) or None
    return (tokens[0], None, None) if tokens else (None, None, None)


def profile_record(profile_id: str, golden: Mapping[str, Any], identities: Mapping[str, str]) -> PersonRecord:
    """The :class:`PersonRecord` of a profile: golden traits (``GOLDEN_FIELDS``) plus latest identities."""
    values: dict[str, Any] = {}
    for trait, name in GOLDEN_FIELDS.items():
        value = golden.get(trait)
        if value is not None and not isinstance(value, dict | list) and str(value).strip():
            values[name] = str(value)
    full = golden.get("full_name")
    if isinstance(full, str) and full.strip() and not (values.get("given_name") or values.get("surname")):
        given, surname, middle = _split_full_name(full)
        values.update({k: v for k, v in (("given_name", given), ("surname", surname),
                                         ("middle_name", middle)) if v and k not in values})
    for kind, name in IDENTITY_FIELDS.items():
        if identities.get(kind):
            values[name] = identities[kind]
    return PersonRecord(id=profile_id, **values)


def matcher_fingerprint(config: MatcherConfig) -> str:
    """A short stable hash of the configuration, stored with each suggestion."""
    return "fs-" + hashlib.sha256(orjson.dumps(config.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


async def load_records(store: Store, profiles: Sequence[uuid.UUID] | None = None) -> list[PersonRecord]:
    """Every live profile (``merged_into IS NULL``), or those of ``profiles``, as :class:`PersonRecord`, by id."""
    repo = ProfileRepository(store)
    goldens = await repo.live_goldens(profiles)
    idents: dict[str, dict[str, str]] = {}
    for profile_id, kind, value in await repo.latest_identities(list(IDENTITY_FIELDS), profiles):
        idents.setdefault(str(profile_id), {})[kind] = value
    out = []
    for profile_id, golden in goldens:
        pid = str(profile_id)
        out.append(profile_record(pid, golden, idents.get(pid, {})))
    return out


def _parameters_json(params: ModelParameters) -> dict[str, Any]:
    return {"m": params.m, "u": params.u, "prior": params.prior, "m_source": params.m_source,
            "u_source": params.u_source, "em_iterations": params.em_iterations, "pair_prior": params.pair_prior,
            "m_configured": list(params.m_configured)}


def _parameters_from_json(data: Mapping[str, Any]) -> ModelParameters:
    return ModelParameters(m=data["m"], u=data["u"], prior=data["prior"], m_source=data["m_source"],
                           u_source=data["u_source"], em_iterations=data.get("em_iterations", 0),
                           pair_prior=data["pair_prior"], m_configured=tuple(data.get("m_configured", ())))


async def suggest_merges(store: Store, config: MatcherConfig, *, threshold: float | None = None,
                         report: bool = False, incremental: bool = False) -> SuggestResult:
    """Score every pair of live profiles that blocking proposes; store those at or above ``threshold``
    (default ``config.suggest_threshold``) in ``merge_suggestions``; return the ones to auto-merge.

    A full run also rewrites the matcher's index (``matcher_profiles``, ``matcher_keys``, ``matcher_terms``);
    ``incremental=True`` after a previous run compares only the profiles changed since, with their
    neighbourhood read from that index, and gives the pairs a full run would give for them.

    Pairs at or above ``config.auto_merge_threshold`` are stored with status ``auto``; executing those
    merges is the caller's decision (``cdp-hub identity suggest --auto-merge``).
    """
    t0 = time.perf_counter()
    started_at = datetime.now(UTC)
    repo = ProfileRepository(store)
    fingerprint = matcher_fingerprint(config)
    # Incremental: only the profiles changed since the last run of this configuration are compared (against
    # every profile), with that run's parameters; the first run, or one without a previous, is a full run.
    previous = await repo.last_matcher_run(fingerprint) if incremental else None
    index_name = f"{fingerprint}/{INDEX_LAYOUT}"
    cut = config.suggest_threshold if threshold is None else threshold
    # A calibration report needs the scores below the threshold too; only those at or above it are stored.
    floor = min(cut, REPORT_FLOOR) if report else cut
    changed_ids: set[str] | None = None
    if previous is not None and await repo.matcher_population(index_name):
        since, stored = previous
        changed_uuids = await repo.changed_since(since, list(IDENTITY_FIELDS))
        changed_ids = {str(p) for p in changed_uuids}
        run = await _incremental_run(store, config, index_name, sorted(changed_uuids), _parameters_from_json(stored),
                                     floor)
        profiles = run.records
    else:
        if previous is not None:  # a run before the index existed: compare the changed ones against everyone
            since, stored = previous
            changed_ids = {str(p) for p in await repo.changed_since(since, list(IDENTITY_FIELDS))}
        records = await load_records(store)
        started = time.perf_counter()
        prep = _prepare(records, config)
        changed_idx = None if changed_ids is None else {k for k, r in enumerate(records) if r.id in changed_ids}
        run = _match_prepared(prep, config, cut=floor, changed=changed_idx,
                              parameters=None if previous is None else _parameters_from_json(previous[1]),
                              started=started)
        profiles = len(records)
        # What the next incremental run reads instead of preparing every profile again.
        await _write_index(store, config, index_name, prep)
    calibration = calibration_report(run, config) if report else None
    pairs = [p for p in run.pairs if p.score >= cut]
    # Auto-merge needs an operator's threshold and parameters estimated on this data that passed their checks;
    # with the configured defaults the scores are a guess, good enough to suggest, not to merge.
    auto_cut = config.auto_merge_threshold if run.parameters.validated else None
    if config.auto_merge_threshold is not None and auto_cut is None:
        log.warning("fuzzy matching: auto_merge_threshold is set but m was not estimated on this data (%s); "
                    "storing suggestions only", run.parameters.m_source)
    statuses = ["auto" if auto_cut is not None and p.score >= auto_cut else "open" for p in pairs]
    inserted = updated = stale = 0
    auto: list[ScoredPair] = []
    async with store.pool.acquire() as conn, conn.transaction():
        for start in range(0, len(pairs), _UPSERT_CHUNK):
            chunk = pairs[start : start + _UPSERT_CHUNK]
            new, changed = await ProfileRepository.upsert_suggestions(
                conn,
                [uuid.UUID(p.a) for p in chunk], [uuid.UUID(p.b) for p in chunk],
                [p.score for p in chunk], [p.weight for p in chunk],
                [orjson.dumps(p.evidence_json()).decode() for p in chunk],
                statuses[start : start + _UPSERT_CHUNK], fingerprint,
            )
            inserted += new
            updated += changed
        stale = await ProfileRepository.mark_stale_suggestions(conn)
        wanted = [p for p, st in zip(pairs, statuses, strict=True) if st == "auto"]
        if wanted:
            rows = await ProfileRepository.auto_suggestions(conn, [uuid.UUID(p.a) for p in wanted],
                                                            [uuid.UUID(p.b) for p in wanted])
            still_auto = {(str(a), str(b)) for a, b in rows}
            auto = [p for p in wanted if (p.a, p.b) in still_auto]
    await repo.record_matcher_run(fingerprint, started_at, incremental=changed_ids is not None,
                                  profiles=profiles,
                                  compared=profiles if changed_ids is None else len(changed_ids),
                                  parameters=_parameters_json(run.parameters))
    result = SuggestResult(
        profiles=profiles, candidate_pairs=run.candidate_pairs, suggestions=len(pairs), inserted=inserted,
        updated=updated, stale=stale, auto=auto, matcher=fingerprint, seconds=time.perf_counter() - t0, run=run,
        calibration=calibration, compared=None if changed_ids is None else len(changed_ids),
    )
    log.info("fuzzy matching: %d profiles, %d candidate pairs, %d suggestions (%d new), %d auto",
             result.profiles, result.candidate_pairs, result.suggestions, inserted, len(auto))
    return result


async def _write_index(store: Store, config: MatcherConfig, index_name: str, prep: _Prepared) -> None:
    """Replace the stored index with the prepared values, keys and term counts of a full run's records."""
    uuids = [uuid.UUID(rid) for rid in prep.ids]
    keys = [(kind, key, name, pid) for pid, found in zip(uuids, lookup_keys(prep, config), strict=True)
            for kind, key, name, _ in found]
    terms = [(kind, key, n) for (kind, key), n in term_counts_of(prep, config).items()]
    async with store.pool.acquire() as conn, conn.transaction():
        await ProfileRepository.replace_matcher_index(
            conn, index_name, list(zip(uuids, prepared_rows(prep), strict=True)), keys, terms)


async def _incremental_run(store: Store, config: MatcherConfig, index_name: str, changed: Sequence[uuid.UUID],
                           parameters: ModelParameters, cut: float) -> MatchRun:
    """Compare the ``changed`` profiles with their neighbourhood, read from the stored index.

    Profiles no longer live leave the index; the changed ones are prepared and their rows replaced (and the
    term counts moved by what left and came); then the neighbourhood (the exact blocks of the changed keys that
    are small enough to pair all-to-all, the ``window - 1`` on each side of a changed profile in a bigger
    block's name order, and in each sorted pass's key order) is read with its prepared values, in profile id
    order as a full run reads them, and the matcher runs on it with the whole index's term counts and size
    (see :mod:`cdp_hub.resolver.fuzzy.index` for why that gives the full run's pairs)."""
    started = time.perf_counter()
    repo = ProfileRepository(store)
    records = await load_records(store, changed)
    prep = _prepare(records, config)
    uuids = [uuid.UUID(r.id) for r in records]
    found = lookup_keys(prep, config)
    async with store.pool.acquire() as conn, conn.transaction():
        left = await ProfileRepository.prune_matcher_index(conn, index_name)
        left += await ProfileRepository.update_matcher_index(
            conn, index_name, list(zip(uuids, prepared_rows(prep), strict=True)),
            [(kind, key, name, pid) for pid, keys in zip(uuids, found, strict=True) for kind, key, name, _ in keys])
        deltas = term_counts_of(prep, config)
        deltas.subtract(term_counts_of(rows_prepared([str(p) for p, _ in left], [row for _, row in left], config),
                                       config))
        await ProfileRepository.add_matcher_terms(conn, index_name,
                                                  [(kind, key, n) for (kind, key), n in deltas.items() if n])
    t_update = time.perf_counter()
    exact: dict[tuple[int, str], Any] = {}  # (pass, key text) -> the key as the matcher has it
    windows: list[tuple[int, str, uuid.UUID, int]] = []
    for pid, keys in zip(uuids, found, strict=True):
        for kind, key, _, raw in keys:
            bp = config.blocking[kind]
            if bp.method == "sorted_neighbourhood":
                windows.append((kind, key, pid, bp.window - 1))
            else:
                exact[(kind, key)] = raw
    neighbourhood = set(uuids)
    windowed: set[tuple[int, Any]] = set()
    if exact:
        # A block small enough is paired all-to-all: read it whole. A bigger one is scanned with a window in
        # name order: read the rows next to each changed profile within it, and have the matcher window it too.
        sizes = await repo.matcher_block_sizes(index_name, [k for k, _ in exact], [v for _, v in exact],
                                               [config.blocking[k].max_block_size + 1 for k, _ in exact])
        big = {block for block, n in sizes.items() if n > config.blocking[block[0]].max_block_size}
        small = [block for block in exact if block not in big]
        if small:
            neighbourhood |= await repo.matcher_blocks(index_name, [k for k, _ in small], [v for _, v in small])
        inside = [(kind, key, name, pid, config.blocking[kind].window - 1)
                  for pid, keys in zip(uuids, found, strict=True) for kind, key, name, _ in keys if (kind, key) in big]
        if inside:
            neighbourhood |= await repo.matcher_block_windows(index_name,
                                                              *(list(col) for col in zip(*inside, strict=True)))
        windowed = {(kind, exact[(kind, key)]) for kind, key in big}
    if windows:
        neighbourhood |= await repo.matcher_windows(index_name, *(list(col) for col in zip(*windows, strict=True)))
    rows = await repo.matcher_prepared(index_name, sorted(neighbourhood))
    universe = rows_prepared([str(pid) for pid, _ in rows], [row for _, row in rows], config)
    kinds = term_kinds(config)
    wanted = {(0, "")} | {(kind, "") for kind in kinds.values()}
    wanted |= {(kinds[name], v) for name in kinds for v in _term_column(universe, name) if v}
    counts = await repo.matcher_term_counts(index_name, [k for k, _ in wanted], [v for _, v in wanted])
    term_counts: TermCounts = {
        name: (Counter({v: n for (k, v), n in counts.items() if k == kind and v}), counts.get((kind, ""), 0))
        for name, kind in kinds.items()}
    changed_ids = {r.id for r in records}
    t_read = time.perf_counter()
    run = _match_prepared(universe, config, cut=cut,
                          changed={k for k, rid in enumerate(universe.ids) if rid in changed_ids},
                          parameters=parameters, started=t_read, population=counts.get((0, ""), 0),
                          term_counts=term_counts, windowed=windowed)
    # Where an incremental run's time goes: the changed profiles read, prepared and written to the index; the
    # neighbourhood, its prepared values and the term counts read; then the matcher's own stages.
    run.seconds = {"index_update": t_update - started, "neighbourhood": t_read - t_update,
                   **run.seconds, "total": time.perf_counter() - started}
    run.neighbourhood = len(universe.ids)
    run.unreadable = prep.unreadable
    return run


async def list_suggestions(store: Store, *, status: str | None = "open", limit: int = 100) -> list[Suggestion]:
    """Stored suggestions, best first; ``status=None`` lists every status."""
    if status is not None and status not in SUGGESTION_STATUSES:
        raise ValueError(f"unknown status {status!r}; use one of {SUGGESTION_STATUSES}")
    return await ProfileRepository(store).suggestions(status, limit)


async def set_suggestion_status(
    store: Store, profile_a: uuid.UUID | str, profile_b: uuid.UUID | str, status: str, *, decided_by: str
) -> bool:
    """Record a decision on a suggestion (``rejected``, ``merged``, or back to ``open``); the pair may be
    given in either order. ``False`` when there is no such suggestion."""
    if status not in SUGGESTION_STATUSES:
        raise ValueError(f"unknown status {status!r}; use one of {SUGGESTION_STATUSES}")
    a, b = sorted((str(profile_a), str(profile_b)))
    return await ProfileRepository(store).decide_suggestion(uuid.UUID(a), uuid.UUID(b), status, decided_by)


@dataclass(slots=True)
class AutoMergeResult:
    """What :func:`merge_auto_suggestions` did. ``events`` are the ``profile.merged`` events to publish
    (``publish_profile_event``) when no ``publish`` callback was given."""

    merged: int = 0           # pairs merged now
    already_one: int = 0      # pairs that an earlier merge of this run (or someone else) already joined
    refused: list[tuple[ScoredPair, str]] = field(default_factory=list)  # the identity rules said no
    held: list[list[str]] = field(default_factory=list)  # clusters over auto_merge_max_cluster, left 'auto'
    events: list[Event] = field(default_factory=list)


async def merge_auto_suggestions(
    store: Store,
    pairs: Sequence[ScoredPair],
    config: MatcherConfig,
    *,
    rules: IdentityRules | None = None,
    publish: Callable[[Event], Awaitable[None]] | None = None,
) -> AutoMergeResult:
    """Merge the pairs :func:`suggest_merges` returned in ``auto``, through the resolver's merge API
    (:func:`cdp_hub.resolver.merge.merge_profiles`: the oldest profile survives, with an audit row).

    Pairs are grouped into clusters first; a cluster of more than ``config.auto_merge_max_cluster``
    profiles is not merged (a chain of fuzzy pairs that long needs a human) and stays ``auto``. A merge the
    identity rules refuse (two different ``crm_id`` values, an operator's earlier split) is marked
    ``rejected`` with ``decided_by = 'identity rules'``. Merged pairs become ``merged``, decided by ``auto``.
    """
    from cdp_hub.resolver.merge import MergeRefused, merge_profiles

    result = AutoMergeResult()
    result.held = [g for g in cluster(pairs, 0.0) if len(g) > config.auto_merge_max_cluster]
    too_big = {pid for group in result.held for pid in group}
    for pair in sorted(pairs, key=lambda p: (-p.score, p.a, p.b)):
        if pair.a in too_big:
            continue
        reason = f"fuzzy match: score {pair.score:.6f}, weight {pair.weight:.1f}"
        try:
            outcome = await merge_profiles(store, [uuid.UUID(pair.a), uuid.UUID(pair.b)], reason=reason, rules=rules)
        except MergeRefused as exc:
            result.refused.append((pair, str(exc)))
            await set_suggestion_status(store, pair.a, pair.b, "rejected", decided_by="identity rules")
            continue
        await set_suggestion_status(store, pair.a, pair.b, "merged", decided_by="auto")
        if outcome is None:
            result.already_one += 1
            continue
        result.merged += 1
        if publish is not None:
            await publish(outcome.event)
        else:
            result.events.append(outcome.event)
    if result.held:
        log.warning("fuzzy auto-merge: %d cluster(s) larger than %d profiles left for an operator",
                    len(result.held), config.auto_merge_max_cluster)
    return result
