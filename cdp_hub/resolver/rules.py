"""Identity rules and survivorship rules: what may link profiles, and which trait value wins.

The rules are data (a pydantic model loaded from TOML, YAML or JSON), so an operator can change them and
check the effect first with ``cdp-hub identity dry-run RULES``::

    max_merge_size = 10                 # a merge pulling more profiles together is held as a conflict
    max_profiles_per_value = 5          # a value that would link more profiles than this gets blocked

    [kinds.crm_id]                      # kinds not listed keep their defaults
    priority = 100
    max_per_profile = 1                 # two different crm_ids never merge automatically

    [blocked]
    email = ["test@test.ru"]
    phone = ["+70000000000"]

    [traits.first_name]
    strategy = "source_priority"
    sources = ["crm", "loyalty"]
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cdp_hub.errors import ConfigurationError
from cdp_hub.schema.identities import DEFAULT_OPTIONS, NormalizationOptions, normalize_identity

__all__ = [
    "DEFAULT_KIND_PRIORITY",
    "IdentityRules",
    "KindRule",
    "Strategy",
    "TraitRule",
    "load_rules",
]

Strategy = Literal["most_recent", "source_priority", "most_frequent", "first_non_empty"]

# Stronger identifiers first: when a merge is refused, the event stays with the profile its strongest
# identifier points to.
DEFAULT_KIND_PRIORITY: dict[str, int] = {
    "crm_id": 100,
    "erp_customer_id": 90,
    "ecom_customer_id": 80,
    "loyalty_card": 70,
    "email": 60,
    "phone": 50,
    "push_token": 30,
    "device_id": 20,
    "anonymous_id": 10,
}


class KindRule(BaseModel):
    """How one identity kind behaves in resolution."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(0, description="higher wins when a merge is refused and the event must pick a profile")
    max_per_profile: int | None = Field(
        None, ge=1, description="at most this many values of the kind per profile; more is a conflict"
    )
    links: bool = Field(True, description="false: the kind is stored but never links or merges profiles")


class TraitRule(BaseModel):
    """Survivorship of one trait."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = "most_recent"
    sources: list[str] = Field(default_factory=list, description="source priority, best first")


def _default_kinds() -> dict[str, KindRule]:
    kinds = {kind: KindRule(priority=prio) for kind, prio in DEFAULT_KIND_PRIORITY.items()}
    kinds["crm_id"] = KindRule(priority=100, max_per_profile=1)
    return kinds


class IdentityRules(BaseModel):
    """The whole rule set. Unknown keys are an error, so a misspelt rule never silently does nothing."""

    model_config = ConfigDict(extra="forbid")

    kinds: dict[str, KindRule] = Field(default_factory=_default_kinds)
    blocked: dict[str, list[str]] = Field(
        default_factory=lambda: {"email": ["test@test.ru", "test@test.com", "noemail@noemail.com"],
                                 "phone": ["+70000000000", "+79999999999"]},
        description="values (normalized on load) that never link profiles, by kind",
    )
    max_merge_size: int = Field(20, ge=2, description="most profiles one merge may pull together")
    max_profiles_per_value: int | None = Field(
        10, ge=2, description="a value seen on more profiles than this is blocked from then on"
    )
    default_strategy: Strategy = "most_recent"
    traits: dict[str, TraitRule] = Field(default_factory=dict)

    @field_validator("kinds", mode="after")
    @classmethod
    def _over_defaults(cls, kinds: dict[str, KindRule]) -> dict[str, KindRule]:
        # A file that configures one kind keeps the defaults of the others (a kind given replaces its default
        # as a whole: `[kinds.crm_id] priority = 100` has no per-profile limit).
        return {**_default_kinds(), **kinds}

    def kind_rule(self, kind: str) -> KindRule:
        return self.kinds.get(kind) or KindRule(priority=DEFAULT_KIND_PRIORITY.get(kind, 0))

    def priority(self, kind: str) -> int:
        return self.kind_rule(kind).priority

    def trait_rule(self, trait: str) -> TraitRule:
        return self.traits.get(trait) or TraitRule(strategy=self.default_strategy)

    def limited_kinds(self) -> dict[str, int]:
        return {k: r.max_per_profile for k, r in self.kinds.items() if r.max_per_profile is not None}

    def blocked_set(self, options: NormalizationOptions = DEFAULT_OPTIONS) -> frozenset[tuple[str, str]]:
        """The configured blocked values, normalized the way events' identities are."""
        out: set[tuple[str, str]] = set()
        for kind, values in self.blocked.items():
            for value in values:
                try:
                    out.add(normalize_identity(kind, value, options))
                except ValueError:
                    out.add((kind, value))
        return frozenset(out)


def load_rules(path: str | os.PathLike[str] | None = None) -> IdentityRules:
    """Rules from a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file; the defaults when ``path`` is None.

    Without a path, ``$CDP_HUB_IDENTITY_RULES`` names the file when set.
    """
    path = path or os.environ.get("CDP_HUB_IDENTITY_RULES")
    if not path:
        return IdentityRules()
    file = Path(path)
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"identity rules file not found: {file}") from None
    data: Any
    try:
        if file.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif file.suffix == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text.decode("utf-8"))
    except Exception as exc:  # every parser has its own error type; all mean "fix the file"
        raise ConfigurationError(f"identity rules file {file} is not valid: {exc}") from None
    try:
        return IdentityRules.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors(include_input=False)
        )
        raise ConfigurationError(f"identity rules file {file}: {problems}") from None
