"""Identity kinds and their normalization.

Values are normalized on the way in so that the same person's identifier compares equal whichever system
sent it: e-mails trimmed and lower-cased (optionally without gmail dots), phones to E.164 with a default
region (RU: ``8 (916) 123-45-67`` -> ``+79161234567``), card numbers stripped of spaces and dashes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

from cdp_hub.errors import NormalizationError

__all__ = [
    "CORE_IDENTITY_KINDS",
    "NormalizationOptions",
    "normalize_email",
    "normalize_identity",
    "normalize_phone",
    "register_identity_kind",
]

CORE_IDENTITY_KINDS: tuple[str, ...] = (
    "email",
    "phone",
    "crm_id",
    "ecom_customer_id",
    "erp_customer_id",
    "loyalty_card",
    "device_id",
    "push_token",
    "anonymous_id",
)

_KIND_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


@dataclass(frozen=True, slots=True)
class NormalizationOptions:
    """How identities are normalized. Passed as pydantic validation context (``{"normalization": opts}``)."""

    default_region: str = "RU"
    gmail_remove_dots: bool = False


DEFAULT_OPTIONS = NormalizationOptions()


def normalize_email(value: str, *, gmail_remove_dots: bool = False) -> str:
    email = value.strip().lower()
    if not _EMAIL_RE.match(email):
        raise NormalizationError(f"not an e-mail address: {value!r}", field="value", value=value)
    if gmail_remove_dots:
        local, _, domain = email.partition("@")
        if domain in _GMAIL_DOMAINS:
            local = local.split("+", 1)[0].replace(".", "")
            email = f"{local}@gmail.com"
    return email


# Fast path (connector SDK, hot in every e-commerce sync, see bench/normalize.py): a number already written
# in E.164 for country code 7 is returned as it is. libphonenumber gives back exactly such input for every
# "+7" and ten ASCII digits (RU and KZ numbers all have ten national digits; the "+" makes the default region
# irrelevant), so its ~30 us parse is skipped; tests/test_sdk_speedups.py checks the equivalence.
_E164_7 = re.compile(r"\+7[0-9]{10}", re.ASCII)
# Second fast path, default region RU only: a Russian mobile number (9XX) written with a national "8" or "+7"
# and any spaces, hyphens and parentheses ("8 (916) 123-45-67"). libphonenumber strips the punctuation and the
# national prefix and returns "+7" and the ten digits for every such input; the same test checks it.
_PHONE_PUNCT = str.maketrans("", "", " ()-")
_PHONE_CHARS = re.compile(r"\+?[0-9 ()\-]+", re.ASCII)
_RU_MOBILE = re.compile(r"(?:\+7|8)(9[0-9]{9})", re.ASCII)


@lru_cache(maxsize=65536)
def normalize_phone(value: str, default_region: str = "RU") -> str:
    """E.164 form of a phone number written in any common notation; raises on an impossible number."""
    raw = value.strip()
    if _E164_7.fullmatch(raw):
        return raw
    if default_region == "RU" and _PHONE_CHARS.fullmatch(raw):
        mobile = _RU_MOBILE.fullmatch(raw.translate(_PHONE_PUNCT))
        if mobile is not None:
            return "+7" + mobile.group(1)
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise NormalizationError(f"not a phone number: {value!r} ({exc})", field="value", value=value) from exc
    if not phonenumbers.is_possible_number(parsed):
        raise NormalizationError(f"impossible phone number: {value!r}", field="value", value=value)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _phone_identity(value: str, default_region: str) -> str:
    # normalize_phone's first fast path ahead of its cache: an E.164 "+7" number written without spaces is its
    # own normal form, and checking that costs less than the cache lookup (a miss for each new customer).
    if type(value) is str and _E164_7.fullmatch(value):
        return value
    return normalize_phone(value, default_region)


def _normalize_card(value: str) -> str:
    card = re.sub(r"[\s\-]", "", value).upper()
    if not card:
        raise NormalizationError("empty card number", field="value", value=value)
    return card


def _normalize_plain(value: str) -> str:
    out = value.strip()
    if not out:
        raise NormalizationError("empty identity value", field="value", value=value)
    return out


_Normalizer = Callable[[str, NormalizationOptions], str]

_NORMALIZERS: dict[str, _Normalizer] = {
    "email": lambda v, o: normalize_email(v, gmail_remove_dots=o.gmail_remove_dots),
    "phone": lambda v, o: _phone_identity(v, o.default_region),
    "loyalty_card": lambda v, o: _normalize_card(v),
}


# Kinds known to be in their normal form (lower case, no spaces, matching _KIND_RE): normalize_identity returns
# them as they are without the strip/lower/match it needs for a kind written any other way.
_CANONICAL_KINDS: set[str] = set(CORE_IDENTITY_KINDS)


def register_identity_kind(kind: str, normalizer: _Normalizer | None = None) -> None:
    """Teach the schema a new identity kind (plugins do this through ``cdp_hub_register_identity_kinds``)."""
    if not _KIND_RE.match(kind):
        raise ValueError(f"identity kind {kind!r} must match {_KIND_RE.pattern}")
    if kind == kind.strip().lower():
        _CANONICAL_KINDS.add(kind)
    if normalizer is not None:
        _NORMALIZERS[kind] = normalizer


def normalize_identity(kind: str, value: str, options: NormalizationOptions = DEFAULT_OPTIONS) -> tuple[str, str]:
    """Return ``(kind, value)`` normalized; raises :class:`NormalizationError` naming the kind and value."""
    if kind in _CANONICAL_KINDS:
        k = kind
    else:
        k = kind.strip().lower()
        if not _KIND_RE.match(k):
            raise NormalizationError(f"bad identity kind {kind!r}", field="kind", value=kind)
    normalizer = _NORMALIZERS.get(k)
    if normalizer is None:
        return k, _normalize_plain(value)
    return k, normalizer(value, options)
