"""What an incremental fuzzy-matching run keeps between runs, so that its cost follows the changed records.

A full run prepares every record (folding, transliteration, skeletons) and derives every blocking key. An
incremental run needs the pairs that involve a changed record, and those pairs come only from the changed
records' *neighbourhood*: the members of the exact blocks they are in and their neighbours in each sorted
pass. :class:`MatchIndex` keeps, per record, the prepared values and the pass keys, plus the blocks, the
sorted orders and the term counts, so an incremental run prepares only what changed::

    MatchIndex.build(records, config)           prepare everyone once (what a full run does anyway)
    match_incremental(index, changed_records)   ─▶ index.update: prepare the changed records, move their keys
                                                ─▶ index.neighbourhood: exact blocks + sorted windows
                                                ─▶ the matcher's own blocking, comparison and scoring on
                                                   that neighbourhood, with the whole set's term counts

Why the result equals a full run's pairs that touch a changed record: an exact block holding a changed
record is in the neighbourhood whole when it is small enough to pair all-to-all; a block over
``max_block_size`` is scanned by a full run with a window in name order, and a sorted pass with a window in
key order, and the window around a changed record is a contiguous run of that order whose every record is in
the neighbourhood, so nothing else can slip in between (the big block is marked, so the matcher scans its
part with the window too, however few of its records are at hand).
Records keep their order (an *ordinal*: the position in the full run, new ones after), which is how the
full run breaks ties between equal keys. Term frequencies come from counts over every record, and the
estimation threshold sees every record too.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from cdp_hub.resolver.fuzzy.match import (
    MatchRun,
    ModelParameters,
    TermCounts,
    _match_prepared,
    _pass_keys,
    _prepare,
    _Prepared,
    _term_column,
)
from cdp_hub.resolver.fuzzy.model import MatcherConfig, PersonRecord

__all__ = ["INDEX_LAYOUT", "MatchIndex", "key_text", "lookup_keys", "match_incremental", "prepared_rows",
           "rows_prepared", "term_counts_of", "term_kinds"]

# The layout of a stored index (prepared values, key encoding). Part of the stored index's name: an index
# written by another version of the preparation is not read, the next run is a full one.
INDEX_LAYOUT = 1


def key_text(key: Any) -> str:
    """A blocking key as one string whose byte order is the key's order: a single key as it is; a tuple's
    parts each with U+0001 escaped (as U+0001 U+0002) and ended by U+0001 U+0001, so a part that is a prefix
    of another sorts first, as in the tuple."""
    if isinstance(key, tuple):
        return "".join(part.replace("\x01", "\x01\x02") + "\x01\x01" for part in key)
    return str(key)


def prepared_rows(prep: _Prepared) -> list[list[str | None]]:
    """Each record's prepared values: the value columns, then the skeleton columns, in the matcher's order."""
    columns = [*prep.values.values(), *prep.skeletons.values()]
    return [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in prep.ids]


def rows_prepared(ids: Sequence[str], rows: Sequence[Sequence[str | None]], config: MatcherConfig) -> _Prepared:
    """The inverse of :func:`prepared_rows`: records as the matcher takes them, from stored rows."""
    layout = _prepare([], config)
    names = [*layout.values, *layout.skeletons]
    columns: list[list[str | None]] = [[] for _ in names]
    for row in rows:
        if len(row) != len(names):
            raise ValueError(f"a stored prepared row has {len(row)} values, the matcher {len(names)}")
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    width = len(layout.values)
    return _Prepared(list(ids), dict(zip(layout.values, columns[:width], strict=True)),
                     dict(zip(layout.skeletons, columns[width:], strict=True)), {})


def term_kinds(config: MatcherConfig) -> dict[str, int]:
    """The stored kind of each term-frequency field's counts: ``-1 - comparison index`` (kind 0 counts the
    records)."""
    return {c.field: -1 - f for f, c in enumerate(config.comparisons) if c.term_frequency}


def lookup_keys(prep: _Prepared, config: MatcherConfig) -> list[list[tuple[int, str, str, Any]]]:
    """Each record's stored keys ``(pass, key text, name order text, key)``, one per blocking pass it takes
    part in: the name order (surname and given name skeletons) is the order a block too big to pair all-to-all
    is scanned in, ``""`` in a sorted pass."""
    out: list[list[tuple[int, str, str, Any]]] = [[] for _ in prep.ids]
    names = [key_text((s or "", g or "")) for s, g in zip(prep.skeletons["surname"], prep.skeletons["given_name"],
                                                           strict=True)]
    for p, (bp, keys) in enumerate(zip(config.blocking, _pass_keys(prep, config), strict=True)):
        sorted_pass = bp.method == "sorted_neighbourhood"
        for row, key, name in zip(out, keys, names, strict=True):
            if key is not None:
                row.append((p, key_text(key), "" if sorted_pass else name, key))
    return out


def term_counts_of(prep: _Prepared, config: MatcherConfig) -> Counter[tuple[int, str]]:
    """What ``prep``'s records add to the stored counts: ``(kind, value)`` per term-frequency value,
    ``(kind, "")`` per record with any value of the kind, ``(0, "")`` per record."""
    counts: Counter[tuple[int, str]] = Counter()
    counts[(0, "")] = len(prep.ids)
    for name, kind in term_kinds(config).items():
        values = [v for v in _term_column(prep, name) if v]
        counts.update((kind, v) for v in values)
        counts[(kind, "")] += len(values)
    return counts


class MatchIndex:
    """Every record's prepared values and blocking keys, indexed the way blocking looks them up.

    Build it from the records of a full run (same order), keep it, and hand it to
    :func:`match_incremental` with the records created or changed since; it is updated in place.
    """

    def __init__(self, config: MatcherConfig) -> None:
        self.config = config
        self._ordinal: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        self._next = 0
        self._value_fields: list[str] = []
        self._skeleton_fields: list[str] = []
        self._rows: dict[int, tuple[str | None, ...]] = {}  # ordinal -> values, then skeletons
        self._keys: dict[int, tuple[Any, ...]] = {}  # ordinal -> one key per blocking pass
        # Exact passes: key -> ordinals (ascending); sorted passes: (key, ordinal), ascending.
        self._blocks: list[dict[Any, list[int]]] = [{} for _ in config.blocking]
        self._sorted: list[list[tuple[Any, int]]] = [[] for _ in config.blocking]
        self._tf_fields = [c.field for c in config.comparisons if c.term_frequency]
        self._tf: dict[str, Counter[str]] = {f: Counter() for f in self._tf_fields}
        self.unreadable: dict[str, int] = {}  # of the records the last update prepared

    @classmethod
    def build(cls, records: Sequence[PersonRecord], config: MatcherConfig) -> MatchIndex:
        """The index of ``records`` (in the order a full run gets them)."""
        index = cls(config)
        index.update(records)
        return index

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._ordinal

    def update(self, records: Sequence[PersonRecord]) -> list[int]:
        """Add new records (after the others) or replace changed ones (in their place); their ordinals.
        Only these records are prepared."""
        if len({r.id for r in records}) != len(records):
            raise ValueError("record ids must be unique")
        prep = _prepare(records, self.config)
        self.unreadable = prep.unreadable
        if not self._value_fields:
            self._value_fields, self._skeleton_fields = list(prep.values), list(prep.skeletons)
        columns = [prep.values[f] for f in self._value_fields] + [prep.skeletons[f] for f in self._skeleton_fields]
        rows = list(zip(*columns, strict=True)) if columns else [() for _ in records]
        keys = list(zip(*_pass_keys(prep, self.config), strict=True)) if self.config.blocking else [
            () for _ in records]
        ordinals: list[int] = []
        if not self._rows:  # a first build: append in order and sort each pass once
            for record, row, key in zip(records, rows, keys, strict=True):
                ordinal = self._ordinal[record.id] = self._next
                self._ids[ordinal], self._rows[ordinal], self._keys[ordinal] = record.id, row, key
                self._next += 1
                ordinals.append(ordinal)
                for p, bp in enumerate(self.config.blocking):
                    if key[p] is None:
                        continue
                    if bp.method == "sorted_neighbourhood":
                        self._sorted[p].append((key[p], ordinal))
                    else:
                        self._blocks[p].setdefault(key[p], []).append(ordinal)
                for name in self._tf_fields:
                    value = self._tf_value(row, name)
                    if value:
                        self._tf[name][value] += 1
            for order in self._sorted:
                order.sort()
            return ordinals
        for record, row, key in zip(records, rows, keys, strict=True):
            known = self._ordinal.get(record.id)
            if known is None:
                ordinal = self._ordinal[record.id] = self._next
                self._ids[ordinal] = record.id
                self._next += 1
            else:
                ordinal = known
                self._unlink(ordinal)
            self._rows[ordinal], self._keys[ordinal] = row, key
            self._link(ordinal)
            ordinals.append(ordinal)
        return ordinals

    def remove(self, record_ids: Iterable[str]) -> None:
        """Forget records (merged away, deleted); unknown ids are ignored."""
        for record_id in record_ids:
            ordinal = self._ordinal.pop(record_id, None)
            if ordinal is not None:
                self._unlink(ordinal)
                del self._rows[ordinal], self._keys[ordinal], self._ids[ordinal]

    def _link(self, ordinal: int) -> None:
        for p, (bp, key) in enumerate(zip(self.config.blocking, self._keys[ordinal], strict=True)):
            if key is None:
                continue
            if bp.method == "sorted_neighbourhood":
                bisect.insort(self._sorted[p], (key, ordinal))
            else:
                bisect.insort(self._blocks[p].setdefault(key, []), ordinal)
        row = self._rows[ordinal]
        for name in self._tf_fields:
            value = self._tf_value(row, name)
            if value:
                self._tf[name][value] += 1

    def _unlink(self, ordinal: int) -> None:
        for p, (bp, key) in enumerate(zip(self.config.blocking, self._keys[ordinal], strict=True)):
            if key is None:
                continue
            if bp.method == "sorted_neighbourhood":
                order = self._sorted[p]
                del order[bisect.bisect_left(order, (key, ordinal))]
            else:
                members = self._blocks[p][key]
                members.remove(ordinal)
                if not members:
                    del self._blocks[p][key]
        row = self._rows[ordinal]
        for name in self._tf_fields:
            value = self._tf_value(row, name)
            if value:
                counts = self._tf[name]
                counts[value] -= 1
                if not counts[value]:
                    del counts[value]

    def _tf_value(self, row: tuple[str | None, ...], name: str) -> str | None:
        # The same choice as the matcher's term frequencies: the skeleton of a name, else the value.
        if name in self._skeleton_fields:
            return row[len(self._value_fields) + self._skeleton_fields.index(name)]
        return row[self._value_fields.index(name)]

    def neighbourhood(self, ordinals: Iterable[int]) -> tuple[list[int], set[tuple[int, Any]]]:
        """The records a full run could pair with any of ``ordinals`` (and those themselves), in order; and the
        ``(pass, key)`` of the exact blocks among them too big to pair all-to-all (of which only the
        window over the names around each changed record is in the neighbourhood)."""
        out: set[int] = set()
        windowed: set[tuple[int, Any]] = set()
        by_name: dict[tuple[int, Any], list[tuple[str, str, int]]] = {}  # big blocks in name order, once
        surname = len(self._value_fields) + self._skeleton_fields.index("surname")
        given = len(self._value_fields) + self._skeleton_fields.index("given_name")
        passes = list(enumerate(self.config.blocking))
        for ordinal in ordinals:
            out.add(ordinal)
            for p, bp in passes:
                key = self._keys[ordinal][p]
                if key is None:
                    continue
                if bp.method == "sorted_neighbourhood":
                    order = self._sorted[p]
                    pos = bisect.bisect_left(order, (key, ordinal))
                    out.update(o for _, o in order[max(pos - bp.window + 1, 0) : pos + bp.window])
                    continue
                members = self._blocks[p][key]
                if len(members) <= bp.max_block_size:
                    out.update(members)  # paired all-to-all
                    continue
                # Too big: the full run scans it with a window in name order (ties by ordinal); the window
                # around this record is a contiguous run of that order.
                windowed.add((p, key))
                named = by_name.get((p, key))
                if named is None:
                    rows = self._rows
                    named = by_name[(p, key)] = sorted(
                        (rows[o][surname] or "", rows[o][given] or "", o) for o in members)
                row = self._rows[ordinal]
                pos = bisect.bisect_left(named, (row[surname] or "", row[given] or "", ordinal))
                out.update(o for _, _, o in named[max(pos - bp.window + 1, 0) : pos + bp.window])
        return sorted(out), windowed

    def prepared(self, ordinals: Sequence[int]) -> _Prepared:
        """The prepared records of ``ordinals``, as the matcher takes them."""
        rows = [self._rows[o] for o in ordinals]
        width = len(self._value_fields)
        columns: list[list[str | None]] = [list(col) for col in zip(*rows, strict=True)] if rows else [
            [] for _ in range(width + len(self._skeleton_fields))]
        return _Prepared(
            [self._ids[o] for o in ordinals],
            dict(zip(self._value_fields, columns[:width], strict=True)),
            dict(zip(self._skeleton_fields, columns[width:], strict=True)),
            {},
        )

    def term_counts(self) -> TermCounts:
        """Per term-frequency field: how many records hold each value, and how many hold one."""
        return {name: (counts, counts.total()) for name, counts in self._tf.items()}


def match_incremental(index: MatchIndex, records: Sequence[PersonRecord], *, parameters: ModelParameters,
                      threshold: float | None = None, removed: Iterable[str] = ()) -> MatchRun:
    """Score the pairs that involve ``records`` (created or changed since the index was last updated)
    against every record of ``index``, with a previous full run's ``parameters``; the same pairs and scores
    a full run over the updated records would give for them. ``removed``: ids to forget first (merged away).

    Only ``records`` are prepared; the comparison reads their neighbours' prepared values from the index.
    """
    started = time.perf_counter()
    config = index.config
    index.remove(removed)
    changed = index.update(records)
    universe, windowed = index.neighbourhood(changed)
    position = {o: k for k, o in enumerate(universe)}
    prep = index.prepared(universe)
    cut = config.suggest_threshold if threshold is None else threshold
    run = _match_prepared(prep, config, cut=cut, changed={position[o] for o in changed}, parameters=parameters,
                          started=started, population=len(index), term_counts=index.term_counts(),
                          windowed=windowed)
    run.neighbourhood = len(universe)
    run.unreadable = index.unreadable
    return run

