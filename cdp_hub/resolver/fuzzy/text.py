"""Text folding for fuzzy person matching: transliteration, name skeletons, phonetic codes.

Every string a matcher compares goes through :func:`fold` first::

    "  Иванов-Петров "  --fold-->  "ivanov petrov"      (Cyrillic -> Latin, ICAO Doc 9303 table)
    "José  O'Neil"      --fold-->  "jose oneil"         (diacritics dropped, punctuation removed)

Names are also compared through :func:`name_skeleton`, which maps the spellings that different
transliteration systems produce for one Cyrillic name onto one form, so ``Юлия`` (ICAO ``iuliia``),
``Yuliya`` and ``Julija`` meet, and so do ``Дмитрий`` / ``Dmitriy`` / ``Dmitry``, and
``Alexander`` / ``Aleksandr``. Blocking uses :func:`soundex`, computed on the skeleton.

The transliteration table is written here (ICAO Doc 9303, the system of Russian international passports
since 2013, plus Ukrainian and Belarusian letters) rather than taken from a package: it is small, and the
common packages are GPL, which an Apache-2.0 project cannot ship.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["fold", "name_skeleton", "soundex", "transliterate"]

# ICAO Doc 9303 (2013+ Russian passports). Ukrainian/Belarusian extras follow the same style.
_CYRILLIC = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh", "з": "z",
    "и": "i", "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r",
    "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh",
    "щ": "shch", "ъ": "ie", "ы": "y", "ь": "", "э": "e", "ю": "iu", "я": "ia",
    "є": "ie", "і": "i", "ї": "i", "ґ": "g", "ў": "u",
}
_TRANSLIT_TABLE = str.maketrans(_CYRILLIC)
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_APOSTROPHES = re.compile(r"['’`ʼ]")

# Spelling variants of other transliteration systems (and of Latin names), mapped to one form. Order
# matters: longer patterns first. Applied to single tokens after fold().
_SKELETON_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"shch|sch|chtch", "sh"),   # щ: ICAO shch, German sch, French chtch
        (r"tsch|tch", "ch"),         # ч: German/French
        (r"tz", "ts"),               # ц
        (r"kh", "h"),                # х: kh / h
        (r"x", "ks"),                # Alexander / Aleksandr
        (r"ph", "f"),
        (r"w", "v"),                 # German transliteration (Wladimir)
        (r"ck", "k"),
        (r"(?<=[aeiou])j(?=[aeiou])", "y"),  # Maja / Maya
        (r"^j(?=[aeiou])", "y"),     # Julia / Yulia, Jakov / Yakov
        (r"(?<=[aeiouy])i(?=[aeiou])", "y"),  # Natalia / Natalya, Mariia / Mariya
        (r"iu|ju|yu", "yu"),         # ю
        (r"ia|ja|ya", "ya"),         # я
        (r"ie|je|ye", "ye"),         # е after a vowel / ъ
        (r"(?:iy|ii|ij|yi|yj|y)$", "y"),  # -ий: Dmitrii / Dmitriy / Dmitry
        (r"(?:ei|ey|ej)$", "ey"),    # -ей: Sergei / Sergey / Serguei
        (r"c(?=[eiy])", "s"),        # soft c
        (r"c", "k"),
        (r"q", "k"),
        (r"(.)\1+", r"\1"),          # doubled letters: Anna / Ana, Filippov / Filipov
    )
)


def transliterate(text: str) -> str:
    """Cyrillic letters to Latin (ICAO Doc 9303); other characters unchanged. Expects lower case."""
    return text.translate(_TRANSLIT_TABLE)


@lru_cache(maxsize=262144)
def fold(text: str) -> str:
    """Lower-case, transliterated, diacritic-free ``[a-z0-9 ]`` form of ``text``; ``""`` when nothing is left.

    Apostrophes vanish (``O'Neil`` -> ``oneil``); every other run of punctuation or space is one space.
    """
    lowered = transliterate(unicodedata.normalize("NFKC", text).lower())
    decomposed = unicodedata.normalize("NFKD", lowered)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    plain = _APOSTROPHES.sub("", plain)
    return _NON_ALNUM.sub(" ", plain).strip()


@lru_cache(maxsize=262144)
def name_skeleton(folded: str) -> str:
    """Transliteration-neutral form of a folded name (token by token); see the module docstring."""
    out = []
    for token in folded.split():
        for pattern, repl in _SKELETON_RULES:
            token = pattern.sub(repl, token)
        out.append(token)
    return " ".join(out)


_SOUNDEX_CODES = {
    **dict.fromkeys("bfpv", "1"), **dict.fromkeys("cgjkqsxz", "2"), **dict.fromkeys("dt", "3"),
    "l": "4", **dict.fromkeys("mn", "5"), "r": "6",
}


@lru_cache(maxsize=262144)
def soundex(token: str) -> str:
    """American Soundex of one folded token (``robert`` -> ``r163``); ``""`` for an empty token.

    Computed on :func:`name_skeleton` output, so transliteration variants share a code.
    """
    letters = [ch for ch in token if "a" <= ch <= "z"]
    if not letters:
        return token  # digits only: the token is its own code
    first = letters[0]
    code = [first]
    last = _SOUNDEX_CODES.get(first, "")
    for ch in letters[1:]:
        digit = _SOUNDEX_CODES.get(ch, "")
        if digit and digit != last:
            code.append(digit)
            if len(code) == 4:
                break
        if ch not in "hw":  # h and w do not separate two letters with one code
            last = digit
    return "".join(code).ljust(4, "0")
