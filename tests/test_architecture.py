"""The layout's promises, checked on the source: no import cycles, stages that never see the hub, every SQL
statement with the owner of its table, and Redis reached only through the hot-state module.

docs/architecture.md describes the same layout; these tests keep it true.
"""

from __future__ import annotations

import ast
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
