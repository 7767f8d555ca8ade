"""The layout's promises, checked on the source: no import cycles, stages that never see the hub, every SQL
statement with the owner of its table, and Redis reached only through the hot-state module.

docs/architecture.md describes the same layout; these tests keep it true.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cdp_hub"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, *, type_only: bool) -> Iterator[str]:
    """The ``cdp_hub`` modules ``module`` imports, at module level and inside functions; imports under
    ``if TYPE_CHECKING:`` only when ``type_only``."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def walk(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node) and not type_only:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if (target := _resolve(alias.name)) and target != module:
                        yield target
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    if node.level > 1:
                        parts = parts[:-(node.level - 1)]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                for alias in node.names:
                    target = _resolve(f"{base}.{alias.name}") or _resolve(base)
                    if target and target != module:
                        yield target
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from walk([child])

    yield from walk(ast.parse(path.read_text()).body)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_among_cdp_hub_modules() -> None:
    # Imports inside functions count (a lazy import hides a circle, it does not remove it); imports for type
    # annotations only do not.
    edges = {m: set(_imports(m, type_only=False)) for m in MODULES}
    assert _cycles(edges) == [], "modules that import each other in a circle"


def test_the_cycle_check_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


STAGE_MODULES = ["cdp_hub.resolver.stage", "cdp_hub.triggers.stage", "cdp_hub.delivery.stage",
                 "cdp_hub.dlq.stage"]


def test_stages_never_import_the_hub() -> None:
    """Neither a stage nor anything it imports (type-only imports included) reaches ``cdp_hub.hub``: a stage
    gets what it uses in its constructor, from ``cdp_hub.pipeline.build``."""
    edges = {m: set(_imports(m, type_only=True)) for m in MODULES}
    for stage in STAGE_MODULES:
        seen: dict[str, str | None] = {stage: None}
        todo = [stage]
        while todo:
            current = todo.pop()
            for target in edges[current]:
                if target not in seen:
                    seen[target] = current
                    todo.append(target)
        if "cdp_hub.hub" in seen:
            chain = ["cdp_hub.hub"]
            while (prev := seen[chain[-1]]) is not None:
                chain.append(prev)
            pytest.fail(f"{stage} reaches the hub: {' -> '.join(reversed(chain))}")


# -- SQL: every statement in the store, every table written by its owner only -----------------------------

MIGRATIONS = PACKAGE / "store" / "migrations"
TABLES = sorted({t for f in MIGRATIONS.glob("*.sql")
                 for t in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \(", f.read_text())})
_ANY_TABLE = "|".join(TABLES)
SQL = re.compile(rf"\b(FROM|INTO|UPDATE|JOIN|TABLE|COPY|TRUNCATE)\s+(?:ONLY\s+)?({_ANY_TABLE})\b")

OWNERS = {
    "cdp_hub/store/profiles/": {"profiles", "identities", "profile_traits", "merges", "identity_conflicts",
                                "blocked_identities", "profile_splits", "merge_suggestions", "shared_identities", "matcher_runs",
                                "matcher_profiles", "matcher_keys", "matcher_terms"},
    "cdp_hub/store/events.py": {"events", "event_ids"},
    "cdp_hub/store/messages.py": {"messages", "suppressions"},
    "cdp_hub/store/timers.py": {"scheduled_triggers"},
    "cdp_hub/store/journeys.py": {"journey_positions"},
    "cdp_hub/store/segments/": {"segments", "segment_members", "segment_runs", "segment_changes"},
    "cdp_hub/store/jobs.py": {"scheduler_runs", "scheduler_emitted", "job_runs"},
    "cdp_hub/store/deadletters.py": {"dead_letters"},
    "cdp_hub/store/connector_state.py": {"connector_state"},
    "cdp_hub/store/consents.py": {"consents"},
    "cdp_hub/store/products.py": {"products", "product_changes"},
    "cdp_hub/store/recommendations.py": {"order_lines", "product_pairs", "product_popularity"},
    "cdp_hub/store/sightings.py": {"edge_sightings"},
    "cdp_hub/store/campaigns.py": {"campaign_runs", "campaign_audience"},
}
"""Table group owners, as in docs/architecture.md."""

SHARED = {
    ("events", "cdp_hub/store/profiles/bulk.py"): "the bulk import moves staged events in its own transaction",
    ("event_ids", "cdp_hub/store/profiles/bulk.py"): "the bulk import dedupes staged events by id alone",
    ("events", "cdp_hub/store/segments/compiler.py"): "segment conditions aggregate events",
    ("profiles", "cdp_hub/store/segments/compiler.py"): "segment conditions read golden records",
    ("scheduler_emitted", "cdp_hub/store/profiles/repository.py"): "birthday candidates skip those greeted",
    ("events", "cdp_hub/store/products.py"): "a catalogue change is told to recent viewers of the product",
    ("events", "cdp_hub/store/recommendations.py"): "order lines and a customer's activity come from events",
    ("profiles", "cdp_hub/store/recommendations.py"): "the customer's region is a golden-record trait",
    ("products", "cdp_hub/store/recommendations.py"): "recommendations join the current catalogue",
    ("events", "cdp_hub/store/consents.py"): "an imported consent statement goes to the profile of its record's event",
    ("segment_members", "cdp_hub/store/campaigns.py"): "a campaign's audience is snapshotted from segment members",
    ("profiles", "cdp_hub/store/campaigns.py"): "the audience snapshot leaves out merged-away profiles",
    ("events", "cdp_hub/store/attribution.py"): "attribution reads receipts, decisions, assignments and orders",
}
"""The only statements on a table outside its owner, each with its reason."""


def _sql_strings(path: Path) -> Iterator[str]:
    """String literals of ``path`` that are not docstrings (a docstring may name a table in prose)."""
    tree = ast.parse(path.read_text())
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.value


def _owner(table: str) -> str:
    return next(owner for owner, tables in OWNERS.items() if table in tables)


def test_every_table_has_one_owner() -> None:
    owned = [t for tables in OWNERS.values() for t in tables]
    assert len(owned) == len(set(owned))
    assert set(owned) == set(TABLES)


def test_sql_lives_with_the_owner_of_its_table() -> None:
    used: set[tuple[str, str]] = set()
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("cdp_hub/store/migrations"):
            continue
        for text in _sql_strings(path):
            for _, table in SQL.findall(text):
                if rel.startswith(_owner(table)):
                    continue
                used.add((table, rel))
                if (table, rel) not in SHARED:
                    wrong.append(f"{rel}: SQL on {table}, owned by {_owner(table)}")
    assert wrong == [], "call the owner's repository instead"
    assert set(SHARED) <= used, f"no longer shared, drop from SHARED: {sorted(set(SHARED) - used)}"


def test_the_sql_check_sees_a_statement() -> None:
    assert SQL.findall("SELECT golden FROM profiles WHERE profile_id = $1") == [("FROM", "profiles")]
    assert SQL.findall("INSERT INTO messages (message_id) VALUES ($1)") == [("INTO", "messages")]
    assert SQL.findall("the profiles of a batch") == []


# -- Redis: only the hot-state module talks to it ------------------------------------------------------------


def test_only_hotstate_talks_to_redis() -> None:
    offenders = []
    for module, path in MODULES.items():
        if module == "cdp_hub.hotstate":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "redis":
                offenders.append(f"{module}:{node.lineno}: .redis")
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n == "redis" or n.startswith("redis.") for n in names):
                    offenders.append(f"{module}:{node.lineno}: imports redis")
    assert offenders == [], "use a HotState method (one key scheme, docs/operations.md)"
