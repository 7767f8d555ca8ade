"""Data model and configuration of the fuzzy person matcher (see :mod:`cdp_hub.resolver.fuzzy`).

    PersonRecord  one person as a source or a golden record describes them (no shared identifier needed)
    MatcherConfig blocking passes, comparisons with Fellegi-Sunter m/u probabilities, thresholds
    ScoredPair    two record ids, the match probability, the log2 Bayes factor, per-field evidence
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cdp_hub.errors import ConfigurationError

__all__ = [
    "BLOCKING_FUNCTIONS",
    "PERSON_FIELDS",
    "BlockingPass",
    "Comparison",
    "FieldEvidence",
    "MatcherConfig",
    "NegativeEvidence",
    "PersonRecord",
    "ScoredPair",
    "default_config",
    "load_matcher_config",
    "parse_blocking_key",
]

PERSON_FIELDS: tuple[str, ...] = (
    "given_name", "surname", "middle_name", "birth_date", "gender", "street_number", "address",
    "address2", "city", "postcode", "region", "country", "phone", "email", "national_id",
)
FieldName = Literal[
    "given_name", "surname", "middle_name", "birth_date", "gender", "street_number", "address",
    "address2", "city", "postcode", "region", "country", "phone", "email", "national_id",
]
# Blocking may also use "names": given name and surname together, in either order.
BLOCKING_FIELDS = (*PERSON_FIELDS, "names")
BLOCKING_FUNCTIONS: tuple[str, ...] = (
    "exact", "soundex", "prefix1", "prefix2", "prefix3", "prefix4", "prefix5", "reverse", "year", "month_day",
)
_KEY_RE = re.compile(r"^(?:(?P<fn>[a-z_0-9]+)\((?P<arg>[a-z_0-9]+)\)|(?P<bare>[a-z_0-9]+))$")


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """What is known about one person. Every field but ``id`` may be missing (``None`` or empty).

    ``birth_date`` is a :class:`datetime.date` or a string ``YYYY-MM-DD`` / ``YYYYMMDD`` / ``DD.MM.YYYY``.
    Names and addresses may be in Cyrillic or Latin script; they are transliterated before comparison.
    """

    id: str
    given_name: str | None = None
    surname: str | None = None
    middle_name: str | None = None
    birth_date: date | str | None = None
    gender: str | None = None
    street_number: str | None = None
    address: str | None = None
    address2: str | None = None
    city: str | None = None
    postcode: str | None = None
    region: str | None = None
    country: str | None = None
    phone: str | None = None
    email: str | None = None
    national_id: str | None = None


@dataclass(frozen=True, slots=True)
class FieldEvidence:
    """How one field compared in a pair: the level reached, its similarity and its weight (log2 m/u)."""

    level: str
    weight: float
    similarity: float | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"level": self.level, "weight": round(self.weight, 3)}
        if self.similarity is not None:
            out["similarity"] = round(self.similarity, 4)
        return out


@dataclass(frozen=True, slots=True)
class ScoredPair:
    """A candidate match. ``a < b``; ``score`` is the match probability, ``weight`` the log2 Bayes factor."""

    a: str
    b: str
    score: float
    weight: float
    evidence: dict[str, FieldEvidence] = field(default_factory=dict)
    names_swapped: bool = False

    def evidence_json(self) -> dict[str, Any]:
        """The evidence as plain JSON (stored in ``merge_suggestions.evidence``)."""
        out: dict[str, Any] = {name: ev.as_json() for name, ev in self.evidence.items()}
        out["_match_weight"] = round(self.weight, 3)
        if self.names_swapped:
            out["_names_swapped"] = True
        return out


def parse_blocking_key(key: str) -> tuple[str, str]:
    """``"soundex(surname)"`` -> ``("soundex", "surname")``; ``"postcode"`` -> ``("exact", "postcode")``."""
    m = _KEY_RE.match(key)
    if m is None:
        raise ValueError(f"blocking key {key!r} must be 'field' or 'function(field)'")
    return (m["fn"], m["arg"]) if m["fn"] else ("exact", m["bare"])


class BlockingPass(BaseModel):
    """One blocking pass: records whose keys are all equal (``exact``), or that sort next to each other by
    the joined key (``sorted_neighbourhood``, within ``window``), become candidate pairs.

    A key is ``field`` or ``function(field)``; functions: ``soundex``, ``prefixN`` (N=1..5, on the
    transliteration-neutral skeleton), ``reverse``, ``year`` and ``month_day`` (birth date), ``exact``.
    The field ``names`` is given name and surname together, order-free (catches swapped names).
    A block larger than ``max_block_size`` is not paired all-to-all: it is scanned with a sorted
    window over the names instead, so one common postcode cannot make the run quadratic.
    """

    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(min_length=1)
    method: Literal["exact", "sorted_neighbourhood"] = "exact"
    window: int = Field(5, ge=2, le=100)
    max_block_size: int = Field(100, ge=2)

    @field_validator("keys")
    @classmethod
    def _check_keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            fn, arg = parse_blocking_key(key)
            if fn not in BLOCKING_FUNCTIONS:
                raise ValueError(f"blocking key {key!r}: unknown function {fn!r}; use one of {BLOCKING_FUNCTIONS}")
            if arg not in BLOCKING_FIELDS:
                raise ValueError(f"blocking key {key!r}: unknown field {arg!r}; use one of {BLOCKING_FIELDS}")
        return keys


class Comparison(BaseModel):
    """How one field is compared, and the Fellegi-Sunter probabilities of each outcome.

    Levels: ``exact`` first, then one level per entry of ``levels``, then ``different``. For ``name``,
    ``jaro_winkler`` and ``token`` methods ``levels`` are minimum similarities (0..1, descending); for
    ``edit``, ``email`` and ``date`` they are maximum edit distances (ascending; a date with day and month
    swapped counts as one edit; two e-mails whose only difference is in their digits are ``different``, not a
    typo, see :class:`NegativeEvidence`). ``m``/``u`` give P(level | match) / P(level | non-match), one per level
    (``len(levels) + 2`` values). ``u`` left empty is estimated from random record pairs, ``m`` left empty
    by EM; both are needed when the data set is too small to estimate from.
    """

    model_config = ConfigDict(extra="forbid")

    field: FieldName
    method: Literal["name", "jaro_winkler", "token", "edit", "email", "date", "exact"]
    levels: list[float] = Field(default_factory=list)
    m: list[float] | None = None
    u: list[float] | None = None
    term_frequency: bool = Field(
        False, description="weigh an exact agreement by how rare the value is (needs enough records)"
    )

    @model_validator(mode="after")
    def _check(self) -> Comparison:
        n = len(self.levels) + 2
        if self.method == "exact" and self.levels:
            raise ValueError(f"comparison {self.field}: method 'exact' takes no levels")
        for name, probs in (("m", self.m), ("u", self.u)):
            if probs is None:
                continue
            if len(probs) != n:
                raise ValueError(f"comparison {self.field}: {name} needs {n} probabilities (one per level: "
                                 f"exact, {len(self.levels)} partial, different), got {len(probs)}")
            if not all(0.0 < p < 1.0 for p in probs):
                raise ValueError(f"comparison {self.field}: {name} probabilities must be in (0, 1)")
        if self.method in ("name", "jaro_winkler", "token"):
            if any(not 0.0 < t <= 1.0 for t in self.levels) or self.levels != sorted(self.levels, reverse=True):
                raise ValueError(f"comparison {self.field}: similarity levels must be in (0, 1], descending")
        elif self.method in ("edit", "email", "date") and (
            any(t < 1 for t in self.levels) or self.levels != sorted(self.levels)
        ):
            raise ValueError(f"comparison {self.field}: edit-distance levels must be >= 1, ascending")
        return self

    def level_names(self) -> list[str]:
        if self.method in ("edit", "email", "date"):
            middle = [f"edits<={int(t)}" for t in self.levels]
        else:
            middle = [f"similarity>={t:g}" for t in self.levels]
        return ["exact", *middle, "different"]


class NegativeEvidence(BaseModel):
    """Evidence against a match that the field-by-field comparison cannot see, because the fields are not
    independent: an e-mail is usually made of its owner's name, and a family shares a phone.

    * ``email_other_digits``: both e-mails are the same letters with different digits
      (``ivanova.s1970@`` / ``ivanova.s1960@``). Between two people of the same name that is what
      namesakes look like, not a typo; the pair gets this weight (log2 Bayes factor) for its e-mail.
    * ``shared_contact``: a phone or e-mail both records hold is no evidence when their given names or
      birth dates disagree (a household's phone, a couple's mailbox): its agreement weighs 0.
    """

    model_config = ConfigDict(extra="forbid")

    email_other_digits: float = Field(-10.0, le=0.0)
    shared_contact: bool = True


class MatcherConfig(BaseModel):
    """The whole matcher: blocking passes, comparisons, parameter estimation, thresholds.

    ``score`` is the posterior match probability of a pair: the prior is the probability that two
    records drawn at random are one person (from EM when the estimate passes its checks, else from
    ``duplicate_rate``), updated by every field's evidence. Pairs at or above ``suggest_threshold``
    become suggestions; at or above ``auto_merge_threshold`` (off by default) they may be merged
    automatically, and only when m was estimated on the data and validated.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "prior" in data:
            raise ValueError("'prior' (P(match) of a candidate pair) was replaced by 'duplicate_rate': the "
                             "expected share of records that duplicate another one (default 0.1)")
        return data

    blocking: list[BlockingPass] = Field(min_length=1)
    comparisons: list[Comparison] = Field(min_length=1)
    swap_names: bool = Field(True, description="also try given name <-> surname swapped")
    duplicate_rate: float = Field(
        0.1, gt=0.0, lt=1.0,
        description="expected share of records that duplicate another one; sets the prior when EM does not",
    )
    negative_evidence: NegativeEvidence = Field(default_factory=NegativeEvidence)
    estimate_u: bool = Field(True, description="estimate u from random pairs when there are enough records")
    estimate_m: bool = Field(True, description="estimate m and prior by EM when there are enough records")
    min_records_for_estimation: int = Field(1000, ge=10)
    u_sample_pairs: int = Field(50_000, ge=1000)
    em_iterations: int = Field(25, ge=1, le=1000)
    em_max_prior: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="an EM estimate calling more candidate pairs matches than this is rejected (configured m used)",
    )
    seed: int = 20261126
    suggest_threshold: float = Field(0.99, ge=0.0, le=1.0)
    auto_merge_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="pairs at or above may be merged without an operator (off until set; needs validated EM)",
    )
    auto_merge_max_cluster: int = Field(
        5, ge=2, description="auto-merge pulls together at most this many profiles; a bigger cluster waits for a human"
    )

    @model_validator(mode="after")
    def _check(self) -> MatcherConfig:
        if self.auto_merge_threshold is not None and self.auto_merge_threshold < self.suggest_threshold:
            raise ValueError("auto_merge_threshold must be >= suggest_threshold")
        fields = [c.field for c in self.comparisons]
        if len(fields) != len(set(fields)):
            raise ValueError(f"each field may be compared once; got {fields}")
        for c in self.comparisons:
            if c.m is None and not self.estimate_m:
                raise ValueError(f"comparison {c.field}: give m probabilities or turn estimate_m on")
            if c.u is None and not self.estimate_u:
                raise ValueError(f"comparison {c.field}: give u probabilities or turn estimate_u on")
        return self


def default_config(**overrides: Any) -> MatcherConfig:
    """A matcher for people: names, birth date, address, postcode, phone, e-mail, national id.

    The m/u defaults are used when the data set is too small to estimate from (fewer than
    ``min_records_for_estimation`` records); with more data u comes from random pairs and m from EM.
    """
    base: dict[str, Any] = {
        "blocking": [
            # Common names make big blocks: beyond 30 records a block is scanned with a sorted window, so
            # candidates grow linearly with the customer base.
            {"keys": ["soundex(names)"], "max_block_size": 30},
            # A birth date alone makes blocks that grow with the customer base (quadratic pairs); with either
            # name's Soundex code they stay small, and one damaged name is still caught by the other pass.
            {"keys": ["birth_date", "soundex(given_name)"]},
            {"keys": ["birth_date", "soundex(surname)"]},
            {"keys": ["postcode", "prefix1(names)"]},
            {"keys": ["national_id"]},
            {"keys": ["phone"]},
            {"keys": ["email"]},
            {"keys": ["reverse(surname)", "given_name"], "method": "sorted_neighbourhood", "window": 4},
            # Address passes: for pairs whose names and birth date are both damaged.
            {"keys": ["address", "street_number"], "method": "sorted_neighbourhood", "window": 4},
            {"keys": ["postcode", "prefix2(address)"]},
            {"keys": ["city", "street_number"]},
            {"keys": ["postcode", "soundex(given_name)"]},
        ],
        "comparisons": [
            # Names and birth dates: an agreement on a common value (Ivanov, Sergey, 1 January) says less
            # than one on a rare value; weighed by term frequency when u is estimated on the data.
            {"field": "given_name", "method": "name", "levels": [0.92, 0.8], "term_frequency": True,
             "m": [0.85, 0.08, 0.03, 0.04], "u": [0.01, 0.005, 0.05, 0.935]},
            {"field": "surname", "method": "name", "levels": [0.92, 0.8], "term_frequency": True,
             "m": [0.85, 0.08, 0.03, 0.04], "u": [0.002, 0.002, 0.02, 0.976]},
            {"field": "middle_name", "method": "name", "levels": [0.9], "term_frequency": True,
             "m": [0.85, 0.07, 0.08], "u": [0.02, 0.03, 0.95]},
            {"field": "birth_date", "method": "date", "levels": [1, 2], "term_frequency": True,
             "m": [0.88, 0.08, 0.03, 0.01], "u": [0.0002, 0.002, 0.01, 0.9878]},
            {"field": "street_number", "method": "edit", "levels": [1],
             "m": [0.85, 0.05, 0.1], "u": [0.03, 0.1, 0.87]},
            {"field": "address", "method": "token", "levels": [0.9, 0.75],
             "m": [0.7, 0.15, 0.05, 0.1], "u": [0.001, 0.002, 0.02, 0.977]},
            {"field": "address2", "method": "token", "levels": [0.9, 0.75],
             "m": [0.6, 0.15, 0.05, 0.2], "u": [0.001, 0.002, 0.02, 0.977]},
            {"field": "city", "method": "jaro_winkler", "levels": [0.9],
             "m": [0.8, 0.08, 0.12], "u": [0.03, 0.01, 0.96]},
            {"field": "postcode", "method": "edit", "levels": [1],
             "m": [0.85, 0.08, 0.07], "u": [0.005, 0.05, 0.945]},
            {"field": "region", "method": "exact", "m": [0.9, 0.1], "u": [0.25, 0.75]},
            {"field": "phone", "method": "edit", "levels": [1],
             "m": [0.7, 0.1, 0.2], "u": [0.0001, 0.0005, 0.9994]},
            {"field": "email", "method": "email", "levels": [1],
             "m": [0.7, 0.1, 0.2], "u": [0.0001, 0.0005, 0.9994]},
            {"field": "national_id", "method": "edit", "levels": [1],
             "m": [0.85, 0.05, 0.1], "u": [0.0001, 0.001, 0.9989]},
        ],
    }
    base.update(overrides)
    return MatcherConfig.model_validate(base)


def load_matcher_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> MatcherConfig:
    """The matcher configuration from a TOML or JSON file, on top of :func:`default_config`.

    Top-level keys in the file replace the defaults' (a file with only ``auto_merge_threshold = 0.9999``
    keeps the default blocking and comparisons). Keyword ``overrides`` win over the file.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise ConfigurationError(f"matcher config file not found: {path}") from None
        try:
            data = json.loads(raw) if str(path).endswith(".json") else tomllib.loads(raw.decode("utf-8"))
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"matcher config file {path}: {exc}") from None
    data.update(overrides)
    try:
        return default_config(**data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise ConfigurationError(f"invalid matcher configuration{f' in {path}' if path else ''}: {problems}") from None
