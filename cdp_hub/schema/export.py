"""JSON Schema of the canonical event, edge validation, and the compatibility check.

The catalogue of every published schema (``cdp-hub schema export``) is :mod:`cdp_hub.catalogue`; a test
fails when the committed files and the models disagree. ``cdp-hub schema check`` classifies the difference:

- **additive**: new optional fields, new event types, new definitions, relaxed constraints. Same version.
- **breaking**: a field or event type removed, a field newly required, a type or enum narrowed. It needs a
  new schema version (``cdp.event/2``), because consumers of ``cdp.event/1`` would reject or misread data.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson

from cdp_hub.errors import SchemaViolation

__all__ = [
    "SchemaDiff",
    "compare_schemas",
    "edge_validator",
    "event_json_schema",
    "validate_at_edge",
]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def event_json_schema() -> dict[str, Any]:
    """``cdp.event/1`` with each event type's payload schema attached through ``if``/``then``."""
    from cdp_hub.schema.events import Event
    from cdp_hub.schema.payloads import EVENT_TYPES

    schema = Event.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    schema["properties"]["type"]["enum"] = sorted(EVENT_TYPES)
    rules = []
    for name in sorted(EVENT_TYPES):
        model = EVENT_TYPES[name]
        sub = model.model_json_schema(ref_template="#/$defs/{model}")
        for k, v in sub.pop("$defs", {}).items():
            defs.setdefault(k, v)
        defs.setdefault(model.__name__, sub)
        rules.append({
            "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
            "then": {"properties": {"properties": {"$ref": f"#/$defs/{model.__name__}"}}},
        })
    # Only catalogue events (about a product, not a person) may come without an identity.
    from cdp_hub.schema.payloads import CATALOGUE_EVENT_TYPES

    rules.append({
        "if": {"properties": {"type": {"enum": sorted(CATALOGUE_EVENT_TYPES)}}, "required": ["type"]},
        "else": {"required": ["identities"], "properties": {"identities": {"minItems": 1}}},
    })
    schema["allOf"] = rules
    # event_id is filled in from the source record when missing; at the edge it is optional.
    schema["required"] = [r for r in schema.get("required", []) if r != "event_id"]
    schema["$schema"] = SCHEMA_DIALECT
    schema["$id"] = "https://cdp-hub.dev/schemas/cdp.event.v1.json"
    schema["title"] = "cdp.event/1"
    return schema


def dumps(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


# -- compatibility -------------------------------------------------------------------------------------


@dataclass
class SchemaDiff:
    additive: list[str] = field(default_factory=list)
    breaking: list[str] = field(default_factory=list)
    version_bumped: bool = False

    @property
    def acceptable(self) -> bool:
        """Additive changes keep the version; a breaking change is acceptable only with a new version."""
        return not self.breaking or self.version_bumped

    @property
    def kind(self) -> str:
        if self.breaking:
            return "breaking"
        if self.additive:
            return "additive"
        return "identical"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return dict(root.get("$defs", {}).get(ref.split("/")[-1], {}))
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    if "type" in schema:
        t = schema["type"]
        return set(t) if isinstance(t, list) else {t}
    out: set[str] = set()
    for alt in schema.get("anyOf", []) + schema.get("oneOf", []):
        out |= _types(alt)
    return out


def _walk(old: dict[str, Any], new: dict[str, Any], old_root: dict[str, Any], new_root: dict[str, Any],
          path: str, diff: SchemaDiff, depth: int = 0) -> None:
    if depth > 12:
        return
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    ot, nt = _types(old), _types(new)
    if ot and nt and not ot <= nt:
        diff.breaking.append(f"{path}: type narrowed from {sorted(ot)} to {sorted(nt)}")
    elif ot and nt and nt > ot:
        diff.additive.append(f"{path}: type widened to {sorted(nt)}")
    if "enum" in old or "enum" in new:
        oe, ne = set(map(str, old.get("enum", []))), set(map(str, new.get("enum", [])))
        if "enum" in new and (oe - ne or "enum" not in old):
            diff.breaking.append(f"{path}: enum values removed: {sorted(oe - ne)}" if oe - ne
                                 else f"{path}: now restricted to {sorted(ne)}")
        if ne - oe and "enum" in old:
            diff.additive.append(f"{path}: enum values added: {sorted(ne - oe)}")
    oprops, nprops = old.get("properties", {}), new.get("properties", {})
    oreq, nreq = set(old.get("required", [])), set(new.get("required", []))
    for name in sorted(set(oprops) - set(nprops)):
        diff.breaking.append(f"{path}.{name}: field removed")
    for name in sorted(set(nprops) - set(oprops)):
        (diff.breaking if name in nreq else diff.additive).append(
            f"{path}.{name}: field added{' (required)' if name in nreq else ''}")
    for name in sorted(nreq - oreq):
        if name in oprops:
            diff.breaking.append(f"{path}.{name}: field is now required")
    for name in sorted(oreq - nreq):
        diff.additive.append(f"{path}.{name}: field is now optional")
    if old.get("additionalProperties", True) is not False and new.get("additionalProperties", True) is False:
        diff.breaking.append(f"{path}: extra fields are now forbidden")
    for name in sorted(set(oprops) & set(nprops)):
        _walk(oprops[name], nprops[name], old_root, new_root, f"{path}.{name}", diff, depth + 1)
    if "items" in old and "items" in new:
        _walk(old["items"], new["items"], old_root, new_root, f"{path}[]", diff, depth + 1)


def compare_schemas(old: dict[str, Any], new: dict[str, Any]) -> SchemaDiff:
    """Classify the change from ``old`` to ``new`` (both exported ``cdp.event`` style schemas)."""
    diff = SchemaDiff()
    _walk(old, new, old, new, "$", diff)
    old_types = set(old.get("properties", {}).get("type", {}).get("enum", []))
    new_types = set(new.get("properties", {}).get("type", {}).get("enum", []))
    # Payload schemas are compared per event type.
    def payloads(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for rule in schema.get("allOf", []):
            name = rule["if"]["properties"]["type"].get("const")
            if name is not None:  # the other rules are not per type (identities of non-catalogue events)
                out[name] = rule["then"]["properties"]["properties"]
        return out
    op, np_ = payloads(old), payloads(new)
    for name in sorted(set(op) & set(np_)):
        _walk(op[name], np_[name], old, new, f"properties<{name}>", diff)
    for name in sorted(old_types - new_types):
        diff.breaking.append(f"event type removed: {name}")
    diff.version_bumped = old.get("title") != new.get("title")
    return diff


# -- validation at the edges ----------------------------------------------------------------------------

_EDGE: jsonschema.Draft202012Validator | None = None


def edge_validator() -> jsonschema.Draft202012Validator:
    global _EDGE
    if _EDGE is None:
        _EDGE = jsonschema.Draft202012Validator(event_json_schema(),
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return _EDGE


def _errors(data: Any) -> Iterator[jsonschema.ValidationError]:
    yield from edge_validator().iter_errors(data)


def deepest_error(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """Of an ``anyOf``/``oneOf`` failure, the sub-error that got furthest into the document."""
    if not err.context:
        return err
    return max((deepest_error(sub) for sub in err.context), key=lambda e: len(list(e.absolute_path)))


def validate_at_edge(data: Any, *, record: str | None = None) -> None:
    """Validate raw JSON from outside with jsonschema; the error names the JSON path and the value."""
    errors = sorted(_errors(data), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    # The deepest error (under an `if/then`, an `anyOf`) is the informative one.
    best = max((deepest_error(e) for e in errors), key=lambda e: len(list(e.absolute_path)))
    value = copy.copy(best.instance)
    rid = record or (data.get("source_record_id") if isinstance(data, dict) else None)
    source = data.get("source") if isinstance(data, dict) else None
    raise SchemaViolation(
        # jsonschema's message quotes the whole offending value: an error never carries more than an excerpt.
        f"{best.json_path}: {best.message[:300]}",
        field=best.json_path,
        value=value,
        record_id=None if rid is None else str(rid)[:256],
        source=source if isinstance(source, str) else None,
    )
