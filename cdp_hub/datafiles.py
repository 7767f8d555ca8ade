"""Data files: YAML documents validated against a pydantic model's JSON Schema (scenarios, segments).

A file holds one document or a list of them. Errors name the file, the JSON path and the offending value;
built-ins ship as package data, and a deployment's files come after them, so the same ``id`` replaces a
built-in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Generic, TypeVar

import jsonschema
import yaml
from pydantic import BaseModel

from cdp_hub.errors import ConfigurationError
from cdp_hub.schema.export import SCHEMA_DIALECT, deepest_error

__all__ = ["DataFiles", "LocatedDocument", "located_documents"]


M = TypeVar("M", bound=BaseModel)


class DataFiles(Generic[M]):
    """How one kind of data file (``what``: "scenario", "segment") is validated and loaded."""

    def __init__(self, model: type[M], *, what: str, schema_name: str, package: str, folder: str) -> None:
        self.model = model
        self.what = what
        self.schema_name = schema_name
        self.package = package
        self.folder = folder
        self._validator: jsonschema.Draft202012Validator | None = None

    def json_schema(self) -> dict[str, Any]:
        schema = self.model.model_json_schema()
        schema["$schema"] = SCHEMA_DIALECT
        schema["$id"] = f"https://cdp-hub.dev/schemas/{self.schema_name}"
        return schema

    def parse(self, data: Any, *, origin: str) -> M:
        """Validate one document; errors name the file, the JSON path and the offending value."""
        if self._validator is None:
            self._validator = jsonschema.Draft202012Validator(self.json_schema())
        errors = sorted(self._validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            # For "one of these shapes" errors (optional fields, alternatives), the branch that got furthest
            # into the document says most.
            errors = [deepest_error(e) for e in errors]
            lines = [f"{origin}: {e.json_path}: {e.message}" for e in errors[:10]]
            raise ConfigurationError(f"invalid {self.what}:\n  " + "\n  ".join(lines))
        try:
            return self.model.model_validate(data)
        except ValueError as exc:
            raise ConfigurationError(f"invalid {self.what} {origin}: {exc}") from None

    def builtin_files(self) -> list[tuple[str, str]]:
        folder = resources.files(self.package) / self.folder
        return sorted((f"builtin:{f.name}", f.read_text(encoding="utf-8"))
                      for f in folder.iterdir() if f.name.endswith((".yaml", ".yml")))

    def load(self, paths: Iterable[Path] = (), *, builtin: bool = True) -> list[M]:
        """Built-ins plus every ``*.yaml`` in ``paths`` (files or folders); a later ``id`` replaces an
        earlier one."""
        docs = self.builtin_files() if builtin else []
        for path in paths:
            if not path.exists():
                raise ConfigurationError(f"{self.what}s: {path} does not exist")
            files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
            docs.extend((str(f), f.read_text(encoding="utf-8")) for f in files)
        by_id: dict[str, M] = {}
        for origin, text in docs:
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigurationError(f"{origin}: not valid YAML: {exc}") from None
            many = isinstance(data, list)
            for i, doc in enumerate(data if many else [data]):
                item = self.parse(doc, origin=f"{origin}[{i}]" if many else origin)
                by_id[item.id] = item  # type: ignore[attr-defined]
        return list(by_id.values())


@dataclass(frozen=True)
class LocatedDocument:
    """One document of a data file with the line of each JSON path (for checks that name file and line):
    ``prefix`` is its index in a list file, empty for a file of one document."""

    origin: str
    data: Any
    lines: Mapping[tuple[str | int, ...], int]
    prefix: tuple[int, ...]

    def line_of(self, path: tuple[str | int, ...]) -> int | None:
        """The line of ``path`` inside this document, or of its nearest ancestor the file spells out."""
        full = (*self.prefix, *path)
        for cut in range(len(full), -1, -1):
            line = self.lines.get(full[:cut])
            if line is not None:
                return line
        return None


def located_documents(paths: Iterable[Path], *, what: str,
                      texts: Iterable[tuple[str, str]] = ()) -> list[LocatedDocument]:
    """Every document of ``texts`` (``(origin, YAML text)``, e.g. the built-ins) and of the ``*.yaml`` files in
    ``paths`` (files or folders), with the line of each JSON path; ``what`` names the kind in errors."""
    sources = list(texts)
    for path in paths:
        if not path.exists():
            raise ConfigurationError(f"{what}: {path} does not exist")
        files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
        sources.extend((str(f), f.read_text(encoding="utf-8")) for f in files)
    docs: list[LocatedDocument] = []
    for origin, text in sources:
        try:
            data = yaml.safe_load(text)
            node = yaml.compose(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{origin}: not valid YAML: {exc}") from None
        lines = _lines(node) if node is not None else {}
        if isinstance(data, list):
            docs.extend(LocatedDocument(origin, d, lines, (i,)) for i, d in enumerate(data))
        else:
            docs.append(LocatedDocument(origin, data, lines, ()))
    return docs


def _lines(node: yaml.Node, path: tuple[str | int, ...] = ()) -> dict[tuple[str | int, ...], int]:
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            out.update(_lines(value, (*path, str(key.value))))
            out[(*path, str(key.value))] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.update(_lines(item, (*path, i)))
    return out
