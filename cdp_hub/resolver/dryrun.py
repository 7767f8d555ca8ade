"""Dry run of identity rules: replay the stored history under new rules, in memory, and compare.

    events (stored, in time order) ─▶ GraphFragment(new rules), from an empty graph
        ─▶ partition of identities into would-be profiles
    identities table ─▶ partition into today's profiles
        ─▶ merges (one would-be profile spans several of today's) and splits (one of today's would be cut)

Nothing is written. Memory grows with the number of distinct identities (one dict entry each).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cdp_hub.resolver.graph import BatchItem, GraphFragment
from cdp_hub.resolver.rules import BlockList, IdentityRules
from cdp_hub.schema.events import Event, Identity
from cdp_hub.store import EventRepository, ProfileRepository, Store
from cdp_hub.store.profiles import Key

__all__ = ["DryRunReport", "dry_run"]

_FETCH = 5000


@dataclass
class DryRunReport:
    """What the new rules would change, compared with the graph as it is."""

    events: int = 0
    unresolvable: int = 0
    identities: int = 0
    profiles_now: int = 0
    profiles_after: int = 0
    merges: int = 0
    profiles_merged: int = 0
    splits: int = 0
    conflicts: Counter[str] = field(default_factory=Counter)
    merge_examples: list[dict[str, Any]] = field(default_factory=list)
    split_examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events, "unresolvable_events": self.unresolvable, "identities": self.identities,
            "profiles_now": self.profiles_now, "profiles_after": self.profiles_after,
            "merges": self.merges, "profiles_merged": self.profiles_merged, "splits": self.splits,
            "conflicts": dict(self.conflicts), "merge_examples": self.merge_examples,
            "split_examples": self.split_examples,
        }

    def render(self) -> str:
        lines = [
            f"Replayed {self.events} stored events ({self.unresolvable} without a usable identity under the "
            f"new rules) over {self.identities} identities.",
            f"Profiles: {self.profiles_now} now -> {self.profiles_after} under the new rules.",
            f"Merges: {self.merges} (pulling together {self.profiles_merged} of today's profiles).",
            f"Splits: {self.splits} of today's profiles would be cut apart.",
            "Conflicts the new rules would hold: "
            + (", ".join(f"{k}={v}" for k, v in sorted(self.conflicts.items())) or "none"),
        ]
        for ex in self.merge_examples:
            lines.append(f"  merge: profiles {', '.join(ex['profiles'])} via {', '.join(ex['identities'][:6])}")
        for ex in self.split_examples:
            lines.append(f"  split: profile {ex['profile']} into {ex['parts']} parts: "
                         + " | ".join(", ".join(p[:4]) for p in ex['groups'][:4]))
        return "\n".join(lines)


async def dry_run(store: Store, rules: IdentityRules, *, examples: int = 10) -> DryRunReport:
    """Replay every stored event under ``rules`` and report the merges and splits against today's graph."""
    report = DryRunReport()
    profiles = ProfileRepository(store)
    configured = rules.blocked_set()
    blocked = BlockList(configured.values | frozenset(await profiles.blocked_identities()),
                        patterns=configured.patterns)
    frag = GraphFragment(rules, datetime.now(UTC))
    async with aclosing(EventRepository(store).replay(prefetch=_FETCH)) as stored:
        async for row in stored:
            report.events += 1
            keys: list[Key] = []
            for ident in row.identities:
                key = (ident["kind"], ident["value"])
                if key in blocked or not rules.kind_rule(key[0]).links:
                    continue
                keys.append(key)
            if not keys:
                report.unresolvable += 1
                continue
            keys.sort(key=lambda k: -rules.priority(k[0]))
            # Only what the replay reads: id, time, source (model_construct skips validation of stored data).
            event = Event.model_construct(event_id=row.event_id, occurred_at=row.occurred_at,
                                          source=row.source, type="customer.updated",
                                          identities=[Identity.model_construct(kind=k, value=v) for k, v in keys])
            frag.apply(BatchItem(event, keys))
            frag.result.profile_of.clear()  # not needed here; keeps memory to the graph itself
            frag.seen_keys.clear()
    for conflict in frag.result.conflicts:
        report.conflicts[conflict.rule] += 1

    now = await profiles.all_identities()
    after = {key: frag.canon(pid) for key, pid in frag.owner.items()}
    report.identities = len(set(now) | set(after))
    report.profiles_now = await profiles.count_live()
    report.profiles_after = len(set(after.values()))

    groups_after: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)  # would-be profile -> today's profiles
    keys_after: dict[uuid.UUID, list[Key]] = defaultdict(list)
    for key, new_pid in after.items():
        if key in now:
            groups_after[new_pid].add(now[key])
        keys_after[new_pid].append(key)
    for new_pid, olds in groups_after.items():
        if len(olds) > 1:
            report.merges += 1
            report.profiles_merged += len(olds)
            if len(report.merge_examples) < examples:
                report.merge_examples.append({
                    "profiles": sorted(str(p) for p in olds),
                    "identities": sorted(f"{k}:{v}" for k, v in keys_after[new_pid]),
                })
    parts: dict[uuid.UUID, dict[uuid.UUID, list[str]]] = defaultdict(lambda: defaultdict(list))
    for key, old_pid in now.items():
        # An identity the new rules would not link at all is a part of its own.
        part = after.get(key) or uuid.uuid5(uuid.NAMESPACE_OID, f"{key}")
        parts[old_pid][part].append(f"{key[0]}:{key[1]}")
    for old_pid, by_new in parts.items():
        if len(by_new) > 1:
            report.splits += 1
            if len(report.split_examples) < examples:
                report.split_examples.append({
                    "profile": str(old_pid), "parts": len(by_new),
                    "groups": [sorted(v) for v in by_new.values()],
                })
    return report
