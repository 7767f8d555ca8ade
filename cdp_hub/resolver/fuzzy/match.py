"""The fuzzy matching engine: blocking, comparison vectors, Fellegi-Sunter scoring with EM, clustering.

    records --prepare--> folded fields (transliterated, skeletons, digits)
            --block-->   candidate pairs (union of the passes)
            --compare--> one level per field and pair (exact / partial... / different / missing)
            --estimate-> u from random pairs, m and the prior by EM over the candidates' patterns
            --score-->   log2 Bayes factor -> posterior probability -> ScoredPair with evidence
    pairs --cluster-->   connected components of the pairs at or above a threshold

Pure Python plus rapidfuzz (C++ string metrics); no pandas, no numpy.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from rapidfuzz.distance import OSA, JaroWinkler
from rapidfuzz.fuzz import token_sort_ratio

from cdp_hub.resolver.fuzzy.model import (
    BlockingPass,
    Comparison,
    FieldEvidence,
    MatcherConfig,
    PersonRecord,
    ScoredPair,
    parse_blocking_key,
)
from cdp_hub.resolver.fuzzy.text import fold, given_name_key, name_skeleton, soundex

__all__ = ["MatchRun", "ModelParameters", "cluster", "find_matches", "match"]

log = logging.getLogger(__name__)

MISSING = -1
_NAME_FIELDS = ("given_name", "surname", "middle_name")
_COMPACT_FIELDS = ("street_number", "postcode", "national_id")
_DATE_FORMATS = (
    re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
    re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$"),
)
_DMY = re.compile(r"^(\d{1,2})[./-](\d{1,2})[./-](\d{4})$")


@dataclass(slots=True)
class ModelParameters:
    """The probabilities a run scored with: ``m[field][level]``, ``u[field][level]``, the share of candidate
    pairs that are matches (``prior``, what EM estimates) and the probability that two records drawn at random
    are one person (``pair_prior``, what the score starts from)."""

    m: dict[str, list[float]]
    u: dict[str, list[float]]
    prior: float
    m_source: str  # "em", "config", or "config (EM rejected: why)"
    u_source: str  # "config" or "random pairs"
    em_iterations: int = 0
    pair_prior: float = 0.0
    m_configured: tuple[str, ...] = ()  # fields whose m no blocking pass could teach (configured m kept)

    @property
    def validated(self) -> bool:
        """m was estimated on this data and passed the plausibility checks: what auto-merge requires."""
        return self.m_source == "em"


@dataclass(slots=True)
class MatchRun:
    """Everything one matching run produced: the pairs at or above the threshold, and how it went."""

    pairs: list[ScoredPair]
    records: int
    candidate_pairs: int
    pairs_per_pass: list[int]
    parameters: ModelParameters
    seconds: dict[str, float] = field(default_factory=dict)
    unreadable: dict[str, int] = field(default_factory=dict)  # field -> values given but not usable
    neighbourhood: int | None = None  # incremental with an index: the records compared with the changed ones


# -- preparation -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=65536)  # birth dates repeat: about 20,000 distinct ones in a customer base
def normalize_birth_date(value: date | str | None) -> str | None:
    """``YYYYMMDD`` for a date or a date string in a common notation; ``None`` when unreadable."""
    if value is None:
        return None
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    text = value.strip()
    for pattern in _DATE_FORMATS:
        m = pattern.match(text)
        if m:
            y, mo, d = m.groups()
            break
    else:
        m = _DMY.match(text)
        if not m:
            return None
        d, mo, y = m.groups()
    return f"{int(y):04d}{int(mo):02d}{int(d):02d}"


def _prepare_value(name: str, raw: object) -> str | None:
    if raw is None:
        return None
    if name == "birth_date":
        return normalize_birth_date(raw)
    text = str(raw)
    if name == "phone":
        digits = "".join(ch for ch in text if ch.isdigit())
        return digits or None
    if name == "email":
        email = text.strip().lower()
        return email or None
    folded = fold(text)
    if name in _COMPACT_FIELDS:
        folded = folded.replace(" ", "")
    return folded or None


@dataclass(slots=True)
class _Prepared:
    ids: list[str]
    values: dict[str, list[str | None]]
    skeletons: dict[str, list[str | None]]
    unreadable: dict[str, int]


def _prepare(records: Sequence[PersonRecord], config: MatcherConfig) -> _Prepared:
    """Fold every field a comparison or a blocking key uses; count values that could not be read."""
    wanted = {c.field for c in config.comparisons} | {"given_name", "surname"}
    wanted |= {parse_blocking_key(k)[1] for bp in config.blocking for k in bp.keys} - {"names"}
    values: dict[str, list[str | None]] = {}
    skeletons: dict[str, list[str | None]] = {}
    unreadable: dict[str, int] = {}
    for name in sorted(wanted):
        raw = [getattr(r, name) for r in records]
        col = [_prepare_value(name, v) for v in raw]
        values[name] = col
        # A value given but unusable (a birth date "31.02.85x", a name of punctuation) counts as missing.
        bad = sum(1 for v, c in zip(raw, col, strict=True) if c is None and v is not None and str(v).strip())
        if bad:
            unreadable[name] = bad
        if name == "given_name":
            # Full and short forms meet (Александр / Саша / Sasha): one key per given name; a short form
            # two full names share (Слава) keeps its plain skeleton.
            skeletons[name] = [(given_name_key(v) or name_skeleton(v)) if v else None for v in col]
        elif name in _NAME_FIELDS:
            skeletons[name] = [name_skeleton(v) if v else None for v in col]
    return _Prepared([r.id for r in records], values, skeletons, unreadable)


# -- blocking ----------------------------------------------------------------------------------------


def _key_column(prep: _Prepared, key: str) -> list[str | None]:
    """A blocking key's value for every record; each distinct input is derived once (names repeat a lot)."""
    fn, arg = parse_blocking_key(key)

    def derive(tokens: list[str]) -> str | None:
        if not tokens:
            return None
        if fn == "soundex":
            return " ".join(sorted(soundex(t) for tok in tokens for t in tok.split()))
        if fn.startswith("prefix"):
            n = int(fn[-1])
            return " ".join(t[:n] for t in tokens)
        if fn == "reverse":
            return " ".join(t[::-1] for t in tokens)
        if fn == "year":
            return tokens[0][:4]
        if fn == "month_day":
            return tokens[0][4:8]
        return " ".join(tokens)

    if arg == "names":
        memo: dict[tuple[str | None, str | None], str | None] = {}
        out: list[str | None] = []
        for pair in zip(prep.skeletons["given_name"], prep.skeletons["surname"], strict=True):
            found = memo.get(pair, _UNSEEN)
            if found is _UNSEEN:
                found = memo[pair] = derive(sorted(t for part in pair if part for t in part.split()))
            out.append(found)
        return out
    col = prep.skeletons.get(arg) if fn.startswith("prefix") or fn == "soundex" else None
    source = col if col is not None else prep.values[arg]
    if fn == "exact":
        return list(source)  # the prepared value itself ("" never occurs: empty values are None)
    by_value: dict[str | None, str | None] = {None: None}
    result: list[str | None] = []
    for v in source:
        found = by_value.get(v, _UNSEEN)
        if found is _UNSEEN:
            found = by_value[v] = derive([v] if v else [])
        result.append(found)
    return result


_UNSEEN: Any = object()


def _pass_keys(prep: _Prepared, config: MatcherConfig) -> list[list[Any]]:
    """Each blocking pass's key for every record (``None``: the record takes no part in the pass). One key
    column is its own key; several are a tuple (sortable, hashable, no string building)."""
    columns_of: dict[str, list[str | None]] = {}  # a key several passes use is derived once
    out: list[list[Any]] = []
    for bp in config.blocking:
        columns = [columns_of[k] if k in columns_of else columns_of.setdefault(k, _key_column(prep, k))
                   for k in bp.keys]
        out.append(columns[0] if len(columns) == 1 else [
            parts if all(parts) else None for parts in zip(*columns, strict=True)])
    return out


def _block(prep: _Prepared, config: MatcherConfig, changed: set[int] | None = None,
           windowed: set[tuple[int, Any]] | None = None) -> tuple[set[int], list[int], list[set[int]]]:
    """Candidate pairs as ``i * n + j`` (``i < j``), how many each pass added, and each pass's own pairs
    (what the estimation of m learns from, pass by pass). With ``changed`` (record indexes), only pairs with
    at least one changed record: an incremental run compares what changed against everything (or against
    the neighbourhood :class:`~cdp_hub.resolver.fuzzy.index.MatchIndex` picked, which gives the same pairs).
    ``windowed``: ``(pass index, key)`` of exact blocks to scan with the window over the names whatever their
    size here (a neighbourhood holds only part of a block that is too big in the whole set)."""
    n = len(prep.ids)
    pairs: set[int] = set()
    per_pass: list[int] = []
    pass_pairs: list[set[int]] = []
    current: set[int] = set()
    surnames, given_names = prep.skeletons["surname"], prep.skeletons["given_name"]

    def name_order(i: int) -> tuple[str, str]:  # for the few blocks too big to pair all-to-all
        return surnames[i] or "", given_names[i] or ""

    def add_window(members: list[int], window: int) -> None:
        if changed is not None:
            for pos, i in enumerate(members):
                if i in changed:  # its neighbours on both sides
                    for j in members[max(pos - window + 1, 0) : pos + window]:
                        if j != i:
                            current.add(i * n + j if i < j else j * n + i)
            return
        for pos, i in enumerate(members):
            for j in members[pos + 1 : pos + window]:
                current.add(i * n + j if i < j else j * n + i)

    for p, (bp, keys) in enumerate(zip(config.blocking, _pass_keys(prep, config), strict=True)):
        before = len(pairs)
        current = set()
        if bp.method == "sorted_neighbourhood":
            keyed = sorted((k, i) for i, k in enumerate(keys) if k is not None)
            add_window([i for _, i in keyed], bp.window)
        else:
            if changed is not None:
                # Incremental: only the blocks a changed record is in.
                wanted = {keys[i] for i in changed} - {None}
                members_of = (i for i, k in enumerate(keys) if k in wanted)
            else:
                members_of = (i for i, k in enumerate(keys) if k is not None)
            blocks: dict[Any, list[int]] = {}
            for i in members_of:
                blocks.setdefault(keys[i], []).append(i)
            for key, members in blocks.items():
                if len(members) < 2:
                    continue
                if len(members) > bp.max_block_size or (windowed is not None and (p, key) in windowed):
                    add_window(sorted(members, key=name_order), bp.window)
                    continue
                if changed is not None:
                    for i in members:
                        if i in changed:
                            current.update(i * n + j if i < j else j * n + i for j in members if j != i)
                    continue
                for x, i in enumerate(members):
                    for j in members[x + 1 :]:
                        current.add(i * n + j)
        pairs |= current
        pass_pairs.append(current)
        per_pass.append(len(pairs) - before)
    return pairs, per_pass, pass_pairs


# -- comparison --------------------------------------------------------------------------------------

Comparator = Callable[[str, str, str | None, str | None], tuple[int, float | None]]


def _comparator(comp: Comparison) -> Comparator:
    """A function ``(a, b, skeleton_a, skeleton_b) -> (level, similarity)`` for present values."""
    levels = comp.levels
    different = len(levels) + 1

    def by_similarity(sim: float) -> int:
        for idx, t in enumerate(levels):
            if sim >= t:
                return idx + 1
        return different

    def by_distance(dist: int) -> int:
        for idx, t in enumerate(levels):
            if dist <= t:
                return idx + 1
        return different

    if comp.method == "exact":
        return lambda a, b, sa, sb: (0, None) if a == b else (1, None)

    if comp.method == "name":
        top = levels[0] if levels else 1.0

        def name(a: str, b: str, sa: str | None, sb: str | None) -> tuple[int, float | None]:
            # sa/sb: transliteration-neutral skeletons (None for a field that has none, e.g. a city).
            if a == b or (sa is not None and sa == sb):
                return 0, 1.0
            sim = JaroWinkler.normalized_similarity(a, b)
            if sim < top and sa is not None and sb is not None:
                sim = max(sim, JaroWinkler.normalized_similarity(sa, sb))
            return by_similarity(sim), sim
        return name

    if comp.method == "jaro_winkler":
        def jaro(a: str, b: str, sa: str | None, sb: str | None) -> tuple[int, float | None]:
            if a == b:
                return 0, 1.0
            sim = JaroWinkler.normalized_similarity(a, b)
            return by_similarity(sim), sim
        return jaro

    if comp.method == "token":
        top = levels[0] if levels else 1.0

        def token(a: str, b: str, sa: str | None, sb: str | None) -> tuple[int, float | None]:
            if a == b:
                return 0, 1.0
            if a.replace(" ", "") == b.replace(" ", ""):
                return by_similarity(1.0), 1.0  # "pridham street" / "pridhamstreet": not exact, but close
            sim = JaroWinkler.normalized_similarity(a, b)
            if sim < top:  # words in another order ("12 lenina st" / "st lenina 12") only matter below the top
                sim = max(sim, token_sort_ratio(a, b) / 100.0)
            return by_similarity(sim), sim
        return token

    if comp.method == "date":
        def dates(a: str, b: str, sa: str | None, sb: str | None) -> tuple[int, float | None]:
            if a == b:
                return 0, None
            dist = OSA.distance(a, b)
            if dist > 1 and a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]:
                dist = 1  # day and month swapped
            return by_distance(dist), None
        return dates

    if comp.method == "email":
        def emails(a: str, b: str, sa: str | None, sb: str | None) -> tuple[int, float | None]:
            if a == b:
                return 0, None
            if email_digits_conflict(a, b, both=False):
                return different, None  # ivanova.s1970@ / ivanova.s1960@ / ivanova.s@: no typo
            return by_distance(OSA.distance(a, b)), None
        return emails

    def edit(a: str, b: str, sa: str | None, sb: str | None) -> tuple[int, float | None]:
        if a == b:
            return 0, None
        return by_distance(OSA.distance(a, b)), None
    return edit


_DIGITS = re.compile(r"\d+")


def email_digits_conflict(a: str, b: str, *, both: bool = True) -> bool:
    """Both local parts are the same letters and their digits differ: what two people of the same name look
    like (``petrova.a1971@`` / ``petrova.a1970@``; the digits are usually a birth year). With ``both`` each
    must have digits (``petrova.a@`` / ``petrova.a2@`` is then no conflict, only no typo)."""
    local_a, local_b = a.partition("@")[0], b.partition("@")[0]
    digits_a, digits_b = "".join(_DIGITS.findall(local_a)), "".join(_DIGITS.findall(local_b))
    if digits_a == digits_b or (both and not (digits_a and digits_b)):
        return False
    return _DIGITS.sub("", local_a) == _DIGITS.sub("", local_b)


class _Comparer:
    """Comparison vectors for pairs of prepared records, with the given-name/surname swap check."""

    def __init__(self, prep: _Prepared, config: MatcherConfig) -> None:
        self.prep = prep
        self.config = config
        self.comparisons = config.comparisons
        self.funcs = [_comparator(c) for c in self.comparisons]
        self.columns = [prep.values[c.field] for c in self.comparisons]
        self.skel = [prep.skeletons.get(c.field) for c in self.comparisons]
        names = [i for i, c in enumerate(self.comparisons) if c.field in ("given_name", "surname")]
        self.swap = config.swap_names and len(names) == 2
        if self.swap:
            gi = next(i for i in names if self.comparisons[i].field == "given_name")
            si = next(i for i in names if self.comparisons[i].field == "surname")
            self.gi, self.si = gi, si
        # A field present in fewer than two records never compares: leave it out of the loop.
        self.active = [
            (f, self.funcs[f], col, self.skel[f])
            for f, col in enumerate(self.columns)
            if sum(1 for v in col if v is not None) >= 2
        ]
        self.width = len(self.comparisons)

    def vector(self, i: int, j: int) -> tuple[tuple[int, ...], list[float | None], bool]:
        levels: list[int] = [MISSING] * self.width
        sims: list[float | None] = [None] * self.width
        for f, func, col, skel in self.active:
            a, b = col[i], col[j]
            if a is None or b is None:
                continue
            levels[f], sims[f] = func(a, b, skel[i] if skel else None, skel[j] if skel else None)
        swapped = False
        if self.swap and levels[self.gi] != 0 and levels[self.si] != 0:
            swapped = self._try_swap(i, j, levels, sims)
        return tuple(levels), sims, swapped

    def _try_swap(self, i: int, j: int, levels: list[int], sims: list[float | None]) -> bool:
        """Compare given name with surname crosswise; keep it when both names then agree better."""
        gi, si = self.gi, self.si
        g, s = self.columns[gi], self.columns[si]
        gk, sk = self.skel[gi], self.skel[si]
        assert gk is not None and sk is not None
        if g[i] is None or s[i] is None or g[j] is None or s[j] is None:
            return False
        lg, simg = self.funcs[gi](g[i], s[j], gk[i], sk[j])  # type: ignore[arg-type]
        ls, sims_ = self.funcs[si](s[i], g[j], sk[i], gk[j])  # type: ignore[arg-type]
        if lg + ls < levels[gi] + levels[si] and max(lg, ls) <= 1:
            levels[gi], levels[si] = lg, ls
            sims[gi], sims[si] = simg, sims_
            return True
        return False


# -- parameter estimation ----------------------------------------------------------------------------


def _normalized(counts: list[float]) -> list[float]:
    total = sum(counts)
    return [c / total for c in counts]


def _estimate_u(comparer: _Comparer, n: int, config: MatcherConfig) -> dict[str, list[float]]:
    """u probabilities from random pairs (every pair, when there are fewer than ``u_sample_pairs``):
    nearly all random pairs are non-matches."""
    rng = random.Random(config.seed)
    counts = [[0.5] * (len(c.levels) + 2) for c in config.comparisons]  # +0.5: no zero probabilities
    if n * (n - 1) // 2 <= config.u_sample_pairs:
        sample: Iterable[tuple[int, int]] = itertools.combinations(range(n), 2)
    else:
        sample = ((rng.randrange(n), rng.randrange(n)) for _ in range(config.u_sample_pairs))
    for i, j in sample:
        if i == j:
            continue
        vec, _, _ = comparer.vector(i, j)
        for f, lvl in enumerate(vec):
            if lvl != MISSING:
                counts[f][lvl] += 1
    return {c.field: _normalized(cnt) for c, cnt in zip(config.comparisons, counts, strict=True)}


def _em(
    patterns: Counter[tuple[int, ...]],
    config: MatcherConfig,
    m: dict[str, list[float]],
    u: dict[str, list[float]],
    prior: float,
) -> tuple[dict[str, list[float]], float, int]:
    """Expectation-maximisation of m and the prior over the candidates' comparison patterns, u fixed.

    Works on pattern counts (a few hundred distinct vectors), not on pairs, so it costs nothing.
    """
    fields: list[str] = [c.field for c in config.comparisons]
    items = list(patterns.items())
    m_cur = {f: list(v) for f, v in m.items()}
    iterations = 0
    for iterations in range(1, config.em_iterations + 1):  # noqa: B007 - the count is reported
        lm = [[math.log(p) for p in m_cur[f]] for f in fields]
        lu = [[math.log(p) for p in u[f]] for f in fields]
        sums = [[0.01] * len(m_cur[f]) for f in fields]
        total_match = 0.0
        total = 0
        for vec, count in items:
            s = 0.0
            for f, lvl in enumerate(vec):
                if lvl != MISSING:
                    s += lm[f][lvl] - lu[f][lvl]
            logit = s + math.log(prior / (1 - prior))
            g = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
            w = g * count
            total_match += w
            total += count
            for f, lvl in enumerate(vec):
                if lvl != MISSING:
                    sums[f][lvl] += w
        new_prior = min(max(total_match / total, 1e-6), 1 - 1e-6)
        new_m = {f: _normalized(sums[k]) for k, f in enumerate(fields)}
        delta = max(abs(a - b) for f in fields for a, b in zip(new_m[f], m_cur[f], strict=True))
        m_cur, prior = new_m, new_prior
        if delta < 1e-5:
            break
    return m_cur, prior, iterations


# -- public API --------------------------------------------------------------------------------------


# A match agrees on these more often than not, whatever the data; EM estimates that deny it are wrong.
_CORE_FIELDS = ("given_name", "surname", "birth_date")
_MIN_PASS_PAIRS = 50  # fewer pairs than this in a pass teach nothing reliable


def _em_problem(m: dict[str, list[float]], prior: float, config: MatcherConfig) -> str | None:
    """Why an EM estimate is implausible, or ``None`` when it is fine."""
    if prior > config.em_max_prior:
        return f"{prior:.0%} of candidate pairs in the match class, more than em_max_prior {config.em_max_prior:g}"
    for c in config.comparisons:
        if c.field in _CORE_FIELDS and c.field in m and m[c.field][0] <= m[c.field][-1]:
            return f"matches would disagree on {c.field} more often than agree"
    return None


def _pass_fields(bp: BlockingPass, config: MatcherConfig) -> set[int]:
    """Indexes of the comparisons whose fields a blocking pass selects on."""
    fields: set[str] = set()
    for key in bp.keys:
        arg = parse_blocking_key(key)[1]
        fields |= {"given_name", "surname"} if arg == "names" else {arg}
    return {f for f, c in enumerate(config.comparisons) if c.field in fields}


def _em_by_pass(
    pass_patterns: Sequence[Counter[tuple[int, ...]]],
    config: MatcherConfig,
    m: dict[str, list[float]],
    u: dict[str, list[float]],
    pair_prior: float,
    all_pairs: int,
) -> tuple[dict[str, list[float]], int, str | None]:
    """m of each field by EM, pass by pass, the way Splink trains: the pairs of one blocking pass agree on
    the pass's own fields by construction, so those fields are masked and the pass teaches the m of the
    others. Each field's m is the average over the passes that taught it, weighted by their expected
    matches. A pass whose estimate fails the plausibility checks is left out; the whole estimate is rejected
    (``problem``) when no pass passes or a core field (given name, surname, birth date) is learnt by none."""
    learnt: dict[str, list[tuple[float, list[float]]]] = {}
    iterations = 0
    problems: list[str] = []
    for patterns in pass_patterns:
        total = sum(patterns.values())
        if total < _MIN_PASS_PAIRS:
            continue
        start = min(max(pair_prior * all_pairs / total, 1e-4), 0.5)
        em_m, em_prior, its = _em(patterns, config, m, u, start)
        iterations = max(iterations, its)
        seen = {f for vec in patterns for f, lvl in enumerate(vec) if lvl != MISSING}
        # One pass may legitimately be nearly all matches (same birth date in a set where birth dates are
        # rare), so only the shape of m is checked here; the share of matches is checked on the whole.
        problem = _em_problem({c.field: em_m[c.field] for f, c in enumerate(config.comparisons) if f in seen},
                              0.0, config)
        if problem is not None:
            problems.append(problem)
            continue
        matches = em_prior * total
        for f, c in enumerate(config.comparisons):
            if f in seen:
                learnt.setdefault(c.field, []).append((matches, em_m[c.field]))
    if not learnt:
        return {}, iterations, problems[0] if problems else "no blocking pass had enough pairs to learn from"
    estimated: dict[str, list[float]] = {}
    for name, found in learnt.items():
        weight = sum(w for w, _ in found) or 1.0
        estimated[name] = _normalized([sum(w * probs[k] for w, probs in found) / weight + 1e-6
                                       for k in range(len(found[0][1]))])
    lacking = [f for f in _CORE_FIELDS if f in m and f not in estimated]
    if lacking:
        return {}, iterations, f"no blocking pass could estimate m for {', '.join(lacking)}"
    return estimated, iterations, None


def _pair_prior(patterns: Counter[tuple[int, ...]], config: MatcherConfig, m: dict[str, list[float]],
                u: dict[str, list[float]], start: float, all_pairs: int) -> float:
    """P(two random records are one person), by the fixed point ``prior = E[matches] / all pairs`` with the
    expected matches summed over the candidate pairs (pairs blocking never proposed count as non-matches)."""
    fields = [c.field for c in config.comparisons]
    weights = {vec: sum(math.log2(m[fields[f]][lvl] / u[fields[f]][lvl]) for f, lvl in enumerate(vec)
                        if lvl != MISSING) for vec in patterns}
    prior = start
    for _ in range(50):
        logit = math.log2(prior / (1 - prior))
        expected = sum(count / (1.0 + 2.0 ** -(weights[vec] + logit)) if weights[vec] + logit > -1000 else 0.0
                       for vec, count in patterns.items())
        new = min(max(expected / all_pairs, 1e-12), 0.5)
        if abs(new - prior) <= 1e-3 * prior:
            return new
        prior = new
    return prior


def _parameters(
    comparer: _Comparer, patterns: Counter[tuple[int, ...]], n: int, config: MatcherConfig,
    pass_patterns: Sequence[Counter[tuple[int, ...]]] = (),
) -> ModelParameters:
    """m, u and the priors: configured, or estimated when there are enough records (or nothing configured).

    The score starts from the probability that two random records are one person. Without an estimate it is
    ``duplicate_rate`` spread over the pairs (``duplicate_rate * n`` matching pairs among ``n(n-1)/2``); EM
    estimates the share of matches among the candidates, which blocking concentrates, and that share times
    candidates over all pairs gives it back for a random pair.
    """
    comps = config.comparisons
    enough = n >= config.min_records_for_estimation
    estimate_u = [config.estimate_u and (enough or c.u is None) for c in comps]
    u: dict[str, list[float]] = {c.field: list(c.u) for c in comps if c.u is not None}
    if any(estimate_u) and n >= 2:
        sampled = _estimate_u(comparer, n, config)
        u.update({c.field: sampled[c.field] for c, est in zip(comps, estimate_u, strict=True) if est})
    for c in comps:  # one record: nothing to sample; every level equally likely
        u.setdefault(c.field, [1.0 / (len(c.levels) + 2)] * (len(c.levels) + 2))
    u_source = "random pairs" if all(estimate_u) else "config" if not any(estimate_u) else "config + random pairs"
    # EM starts from the configured m, or from "agreement is likely for a match" where none is given.
    m: dict[str, list[float]] = {
        c.field: list(c.m) if c.m is not None else _normalized([2.0 ** -(3 * k) for k in range(len(c.levels) + 2)])
        for c in comps
    }
    all_pairs = max(n * (n - 1) // 2, 1)
    candidates = max(sum(patterns.values()), 1)
    # A small batch is still drawn from a large customer base: two of its records are no likelier to be one
    # person than two of min_records_for_estimation's, so the prior never rises above that population's.
    population = max(n, config.min_records_for_estimation)
    pair_prior = min(2 * config.duplicate_rate / (population - 1), 0.5)
    m_source, iterations = "config", 0
    m_configured: tuple[str, ...] = tuple(c.field for c in comps)
    if config.estimate_m and (enough or any(c.m is None for c in comps)) and patterns:
        estimated, iterations, problem = _em_by_pass(pass_patterns or [patterns], config, m, u, pair_prior,
                                                     all_pairs)
        if problem is None:
            fitted = {**m, **estimated}
            fitted_prior = _pair_prior(patterns, config, fitted, u, pair_prior, all_pairs)
            share = fitted_prior * all_pairs / candidates
            if share > config.em_max_prior:
                problem = (f"{share:.0%} of candidate pairs in the match class, more than em_max_prior "
                           f"{config.em_max_prior:g}")
            else:
                m, pair_prior = fitted, fitted_prior
                m_source, m_configured = "em", tuple(c.field for c in comps if c.field not in estimated)
        if problem is not None:
            # Typical when the candidates hold (almost) no duplicates: EM then splits them along some
            # other structure. The configured m and prior are the safe answer, and nothing is auto-merged.
            log.warning("fuzzy matching: EM estimate rejected (%s); using the configured m and prior, "
                        "suggestions only", problem)
            m_source = f"config (EM rejected: {problem})"
    prior = min(pair_prior * all_pairs / candidates, 1.0)  # the share of candidate pairs that are matches
    return ModelParameters(m=m, u=u, prior=prior, m_source=m_source, u_source=u_source, em_iterations=iterations,
                           pair_prior=pair_prior, m_configured=m_configured)


def match(records: Sequence[PersonRecord], config: MatcherConfig, *, threshold: float | None = None,
          changed: Iterable[str] | None = None, parameters: ModelParameters | None = None) -> MatchRun:
    """Block, compare, estimate, score: every candidate pair with ``score >= threshold`` (default: the
    config's ``suggest_threshold``), best first, with per-field evidence.

    Incremental: with ``changed`` (ids of records created or changed since the last run) only pairs with at
    least one changed record are compared; pass the last full run's ``parameters`` so the few pairs need not
    estimate them again (without, they are estimated from the changed records' pairs alone). This still
    prepares every record; :func:`cdp_hub.resolver.fuzzy.index.match_incremental` prepares only the changed
    ones and their block neighbours."""
    t0 = time.perf_counter()
    cut = config.suggest_threshold if threshold is None else threshold
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        dupes = sorted(k for k, v in Counter(ids).items() if v > 1)[:5]
        raise ValueError(f"record ids must be unique; repeated: {dupes}")
    prep = _prepare(records, config)
    changed_idx: set[int] | None = None
    if changed is not None:
        index = {rid: k for k, rid in enumerate(ids)}
        changed_idx = {index[rid] for rid in changed if rid in index}
    return _match_prepared(prep, config, cut=cut, changed=changed_idx, parameters=parameters, started=t0)


TermCounts = dict[str, tuple[Counter[str], int]]  # comparison field -> (value -> records with it, records with one)


def _match_prepared(prep: _Prepared, config: MatcherConfig, *, cut: float, changed: set[int] | None,
                    parameters: ModelParameters | None, started: float, population: int | None = None,
                    term_counts: TermCounts | None = None, windowed: set[tuple[int, Any]] | None = None) -> MatchRun:
    """:func:`match` after preparation. ``prep`` may be a part of the records (an incremental run's
    neighbourhood); then ``population`` is the number of all records, ``term_counts`` their values' counts
    and ``windowed`` the blocks too big in the whole set, so that term frequencies, the estimation threshold
    and the blocking are those of the whole."""
    n = len(prep.ids)
    t_prep = time.perf_counter()
    candidates, per_pass, pass_pairs = _block(prep, config, changed, windowed)
    t_block = time.perf_counter()

    comparer = _Comparer(prep, config)
    vectors: list[tuple[int, int, tuple[int, ...], list[float | None], bool]] = []
    patterns: Counter[tuple[int, ...]] = Counter()
    vector_of: dict[int, tuple[int, ...]] = {}
    for key in candidates:
        i, j = divmod(key, n)
        vec, sims, swapped = comparer.vector(i, j)
        vectors.append((i, j, vec, sims, swapped))
        patterns[vec] += 1
        vector_of[key] = vec
    # Per pass: its pairs' patterns with the fields its keys select on masked (they agree by construction).
    pass_patterns: list[Counter[tuple[int, ...]]] = []
    for bp, members in zip(config.blocking, pass_pairs if parameters is None else [], strict=False):
        masked = _pass_fields(bp, config)
        counted: Counter[tuple[int, ...]] = Counter()
        for key in members:
            vec = vector_of[key]
            counted[tuple(MISSING if f in masked else lvl for f, lvl in enumerate(vec))] += 1
        pass_patterns.append(counted)
    del vector_of
    t_compare = time.perf_counter()

    params = parameters if parameters is not None else _parameters(comparer, patterns, n, config, pass_patterns)
    t_estimate = time.perf_counter()

    # Term frequencies only make sense next to a u estimated from the same data (u = average of tf).
    records = n if population is None else population
    estimated = records >= config.min_records_for_estimation and config.estimate_u
    tf = _term_frequencies(prep, config, term_counts) if estimated else []
    pairs = _score(vectors, prep.ids, config, params, cut, tf, _NegativeRules(prep, config))
    t_score = time.perf_counter()
    return MatchRun(
        pairs=pairs, records=records, candidate_pairs=len(candidates), pairs_per_pass=per_pass, parameters=params,
        unreadable=prep.unreadable,
        seconds={"prepare": t_prep - started, "block": t_block - t_prep, "compare": t_compare - t_block,
                 "estimate": t_estimate - t_compare, "score": t_score - t_estimate, "total": t_score - started},
    )


_TermFrequency = tuple[int, list[str | None], dict[str, float]]


def _term_column(prep: _Prepared, field_name: str) -> list[str | None]:
    """The values a term frequency counts: the skeletons of a name, else the prepared values."""
    return prep.skeletons.get(field_name) or prep.values[field_name]


def _term_frequencies(prep: _Prepared, config: MatcherConfig,
                      counts_of: TermCounts | None = None) -> list[_TermFrequency]:
    """For each comparison with ``term_frequency``: (its index, the compared values, value -> share).
    ``counts_of``: the counts over all records, when ``prep`` holds only some of them."""
    out: list[_TermFrequency] = []
    for f, comp in enumerate(config.comparisons):
        if not comp.term_frequency:
            continue
        col = _term_column(prep, comp.field)
        if counts_of is None:
            counts = Counter(v for v in col if v)
            total = sum(counts.values())
        else:
            everywhere, total = counts_of[comp.field]
            counts = Counter({v: everywhere[v] for v in set(col) if v})
        if total:
            out.append((f, col, {v: c / total for v, c in counts.items()}))
    return out


def _score(
    vectors: list[tuple[int, int, tuple[int, ...], list[float | None], bool]],
    ids: list[str],
    config: MatcherConfig,
    params: ModelParameters,
    cut: float,
    term_frequencies: Sequence[_TermFrequency] = (),
    negative: _NegativeRules | None = None,
) -> list[ScoredPair]:
    comps = config.comparisons
    weights = [[math.log2(mp / up) for mp, up in zip(params.m[c.field], params.u[c.field], strict=True)]
               for c in comps]
    # Term frequency: an exact agreement on value v weighs log2(m / tf(v)) instead of log2(m / u), so a
    # shared rare surname counts for more than a shared "Ivanov" (u is the average of tf over values).
    tf_adjust = [(f, col, table, params.u[comps[f].field][0]) for f, col, table in term_frequencies]
    level_names = [c.level_names() for c in comps]
    pair_prior = params.pair_prior or params.prior
    prior_logit = math.log2(pair_prior / (1 - pair_prior))
    # The weight a pair needs for score >= cut; compare weights, not probabilities, in the loop.
    if cut <= 0.0:
        min_weight = -math.inf
    elif cut >= 1.0:
        min_weight = math.inf
    else:
        min_weight = math.log2(cut / (1 - cut)) - prior_logit
    cache: dict[tuple[int, ...], float] = {}
    out: list[ScoredPair] = []
    for i, j, vec, sims, swapped in vectors:
        w = cache.get(vec)
        if w is None:
            w = sum(weights[f][lvl] for f, lvl in enumerate(vec) if lvl != MISSING)
            cache[vec] = w
        adjusted: dict[int, float] = {}
        for f, col, table, u_exact in tf_adjust:
            value = col[i]
            if vec[f] == 0 and value:
                adjusted[f] = math.log2(u_exact / table.get(value, u_exact))
                w += adjusted[f]
        relabelled: dict[int, str] = {}
        if negative is not None:
            for f, label, new_weight in negative.apply(i, j, vec, swapped):
                delta = new_weight - (weights[f][vec[f]] + adjusted.get(f, 0.0))
                adjusted[f] = adjusted.get(f, 0.0) + delta
                relabelled[f] = label
                w += delta
        if w < min_weight:
            continue
        evidence: dict[str, FieldEvidence] = {
            comps[f].field: FieldEvidence(relabelled.get(f, level_names[f][lvl]),
                                          weights[f][lvl] + adjusted.get(f, 0.0), sims[f])
            for f, lvl in enumerate(vec) if lvl != MISSING
        }
        score = 1.0 / (1.0 + 2.0 ** -(w + prior_logit)) if w + prior_logit > -1000 else 0.0
        a, b = ids[i], ids[j]
        if b < a:
            a, b = b, a
        out.append(ScoredPair(a, b, score, w, evidence, swapped))
    out.sort(key=lambda p: (-p.weight, p.a, p.b))
    return out


class _NegativeRules:
    """:class:`NegativeEvidence` for one run: which field of a pair gets which label and weight instead."""

    def __init__(self, prep: _Prepared, config: MatcherConfig) -> None:
        rules = config.negative_evidence
        index = {c.field: f for f, c in enumerate(config.comparisons)}
        different = {f: len(c.levels) + 1 for f, c in enumerate(config.comparisons)}
        self.email = index.get("email")
        self.emails = prep.values.get("email", [])
        self.email_weight = rules.email_other_digits
        self.contacts = [index[k] for k in ("phone", "email") if k in index] if rules.shared_contact else []
        # Fields whose disagreement marks two people: given name (not swapped: a swap already agrees), birth date.
        self.people_fields = [(index[k], different[index[k]]) for k in ("given_name", "birth_date") if k in index]
        self.email_different = different[self.email] if self.email is not None else -2

    def apply(self, i: int, j: int, vec: tuple[int, ...], swapped: bool) -> list[tuple[int, str, float]]:
        out: list[tuple[int, str, float]] = []
        e = self.email
        if e is not None and vec[e] == self.email_different and self.email_weight < 0:
            a, b = self.emails[i], self.emails[j]
            if a and b and email_digits_conflict(a, b):
                out.append((e, "other_digits", self.email_weight))
        if self.contacts and any(vec[f] == lvl for f, lvl in self.people_fields) and not swapped:
            out.extend((f, "shared_contact", 0.0) for f in self.contacts if vec[f] == 0)
        return out


def find_matches(records: Sequence[PersonRecord], config: MatcherConfig) -> list[ScoredPair]:
    """Pairs of records that are probably the same person (``score >= config.suggest_threshold``)."""
    return match(records, config).pairs


def cluster(pairs: Iterable[ScoredPair], threshold: float) -> list[list[str]]:
    """Connected components of the pairs with ``score >= threshold`` (union-find), each sorted, largest
    first; records in no such pair are not listed."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for p in pairs:
        if p.score < threshold:
            continue
        parent.setdefault(p.a, p.a)
        parent.setdefault(p.b, p.b)
        ra, rb = find(p.a), find(p.b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            parent[rb] = ra
    groups: dict[str, list[str]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
