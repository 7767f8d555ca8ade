"""Identity rules and survivorship rules: what may link profiles, and which trait value wins.

The rules are data (a pydantic model loaded from TOML, YAML or JSON), so an operator can change them and
check the effect first with ``cdp-hub identity dry-run RULES``::

    max_merge_size = 10                 # a merge pulling more profiles together is held as a conflict
    max_profiles_per_value = 5          # a value that would link more profiles than this gets blocked
    own_phones = ["8 (495) 111-22-33"]  # the retailer's own numbers (stores, call centre): never a customer's

    [kinds.crm_id]                      # kinds not listed keep their defaults
    priority = 100
    max_per_profile = 1                 # two different crm_ids never merge automatically (the default
                                        # for every system's own customer key: crm_id, ecom_customer_id,
                                        # erp_customer_id, loyalty_card)

    [blocked]                           # added to the built-in junk list (replace_builtin = true replaces it)
    email = ["test@test.ru"]
    phone = ["+70000000000"]

    [traits.first_name]
    strategy = "source_priority"
    sources = ["crm", "loyalty"]
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Container
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cdp_hub.errors import ConfigurationError
from cdp_hub.schema.identities import DEFAULT_OPTIONS, NormalizationOptions, normalize_identity

__all__ = [
    "ACCOUNT_KINDS",
    "BUILTIN_BLOCKED",
    "DEFAULT_KIND_PRIORITY",
    "BlockList",
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


# Every system's own customer key: a person has one account per system, so a profile holds one value of
# each (two values mean two people, or one person with two accounts, which only the source system can say:
# `properties.merged_identities`). Phones and e-mails link many.
ACCOUNT_KINDS: tuple[str, ...] = ("crm_id", "ecom_customer_id", "erp_customer_id", "loyalty_card")

# The usual placeholders typed when a form insists (values as typed; normalized on load). A rules file's
# `[blocked]` adds to this list; `replace_builtin = true` replaces it. Patterns beyond single values are in
# BlockList (repeated and sequential digits, placeholder local parts).
BUILTIN_BLOCKED: dict[str, list[str]] = {
    "email": ["test@test.ru", "test@test.com", "noemail@noemail.com", "email@email.ru", "email@email.com",
              "no@no.ru", "none@none.ru", "noreply@noreply.ru", "a@a.ru", "1@1.ru", "net@net.ru",
              "nomail@nomail.ru", "123@123.ru", "x@x.ru"],
    "phone": ["+70000000000", "+79999999999", "+71111111111", "+79000000000", "+79111111111", "+71234567890",
              "+79012345678", "+79876543210"],
}

# Local parts people type instead of an address ("noemail@mail.ru"): never a person's own mailbox.
_PLACEHOLDER_LOCAL = frozenset({
    "test", "tests", "testtest", "noemail", "nomail", "no-email", "no_email", "no.email", "no", "none", "net",
    "nety", "null", "nil", "empty", "email", "e-mail", "noreply", "no-reply", "no_reply", "donotreply",
    "do-not-reply", "unknown", "nobody", "xxx", "asdf", "qwerty", "123", "1234", "12345", "123456",
})
# Domains that are not mail providers (a real provider such as mail.ru is never matched).
_PLACEHOLDER_DOMAIN = re.compile(r"^(?:test|email|noemail|nomail|none|123)\.(?:ru|com|net|org)$|\.invalid$")
# A national number typed as a run: 123-456-78-90, 987-654-32-10, 012-345-67-89.
_SEQUENTIAL = frozenset({"1234567890", "0123456789", "9876543210"})


def _junk_phone(value: str) -> bool:
    """A number nobody owns: the subscriber part (last seven digits) one repeated digit (900 000-00-00), or
    the whole national number a run up or down."""
    if len(value) < 8:
        return False
    subscriber = value[-7:]
    return subscriber.isdigit() and (len(set(subscriber)) == 1 or value[-10:] in _SEQUENTIAL)


class BlockList(Container[tuple[str, str]]):
    """The values that never link: explicit ``(kind, value)`` pairs (normalized) and, unless replaced,
    the built-in patterns: a phone whose last seven digits (the subscriber number) are one repeated digit
    or a sequence, an e-mail with a placeholder local part (``test@``, ``noemail@``, ``no@``, ``none@``,
    ``noreply@``) or a placeholder domain (``email.ru``, ``test.com``). ``key in block_list`` is the test."""

    __slots__ = ("patterns", "values")

    def __init__(self, values: frozenset[tuple[str, str]], *, patterns: bool = True) -> None:
        self.values = values
        self.patterns = patterns

    def __contains__(self, key: object) -> bool:
        if key in self.values:
            return True
        if not self.patterns or not isinstance(key, tuple):
            return False
        kind, value = key
        if kind == "phone":
            return _junk_phone(value)
        if kind == "email":
            local, _, domain = value.partition("@")
            return local in _PLACEHOLDER_LOCAL or _PLACEHOLDER_DOMAIN.search(domain) is not None
        return False

    def reason(self, key: tuple[str, str]) -> str:
        """Why ``key`` is blocked, for operators (a value given in the rules, or a built-in pattern)."""
        return "listed in the identity rules" if key in self.values else "a placeholder (built-in junk pattern)"


def _default_kinds() -> dict[str, KindRule]:
    kinds = {kind: KindRule(priority=prio) for kind, prio in DEFAULT_KIND_PRIORITY.items()}
    for kind in ACCOUNT_KINDS:
        kinds[kind] = KindRule(priority=DEFAULT_KIND_PRIORITY[kind], max_per_profile=1)
    return kinds


class IdentityRules(BaseModel):
    """The whole rule set. Unknown keys are an error, so a misspelt rule never silently does nothing."""

    model_config = ConfigDict(extra="forbid")

    kinds: dict[str, KindRule] = Field(default_factory=_default_kinds)
    blocked: dict[str, list[str]] = Field(
        default_factory=dict,
        description="values (normalized on load) that never link profiles, by kind; added to the built-in list",
    )
    replace_builtin: bool = Field(
        False, description="true: `blocked` replaces the built-in junk values and patterns instead of adding to them"
    )
    own_phones: list[str] = Field(
        default_factory=list,
        description="the retailer's own numbers (stores, head office, call centre): typed at the till, never "
                    "a customer's; blocked like the junk list",
    )
    max_merge_size: int = Field(20, ge=2, description="most profiles one merge may pull together")
    max_profiles_per_value: int | None = Field(
        10, ge=2, description="a value seen on more profiles than this is blocked from then on"
    )
    household_max_profiles: int = Field(
        4, ge=2, description="a shared value held by at most this many profiles (a family's phone) still links a "
                             "record to the one holder whose first name agrees; held by more, it links nothing"
    )
    household_rule: bool = Field(
        True, description="false: a phone or e-mail links whatever the first names and birth dates say"
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

    def blocked_set(self, options: NormalizationOptions = DEFAULT_OPTIONS) -> BlockList:
        """The values that never link: the built-in junk list and patterns (unless ``replace_builtin``), the
        configured ``blocked`` values and ``own_phones``, normalized the way events' identities are."""
        out: set[tuple[str, str]] = set()
        lists = [self.blocked, {"phone": self.own_phones}]
        if not self.replace_builtin:
            lists.insert(0, BUILTIN_BLOCKED)
        for blocked in lists:
            for kind, values in blocked.items():
                for value in values:
                    try:
                        out.add(normalize_identity(kind, value, options))
                    except ValueError:
                        out.add((kind, value))
        return BlockList(frozenset(out), patterns=not self.replace_builtin)


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
