"""Data files: YAML documents validated against a pydantic model's JSON Schema (scenarios, segments).

A file holds one document or a list of them. Errors name the file, the JSON path and the offending value;
built-ins ship as package data, and a deployment's files come after them, so the same ``id`` replaces a
built-in.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, Generic, TypeVar

import jsonschema
import yaml
from pydantic import BaseModel

from cdp_hub.errors import ConfigurationError
from cdp_hub.schema.export import SCHEMA_DIALECT, deepest_error

__all__ = ["DataFiles"]


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
