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

from rapidfuzz.distance import JaroWinkler

__all__ = ["fold", "given_name_key", "name_skeleton", "same_given_name", "soundex", "transliterate"]

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


# Russian given names and the short forms people give instead (a shop form, a loyalty card): the short form
# and both genders' full forms share one key (Саша: Александр or Александра; a family telling them apart
# has birth dates for that). Patronymics and surnames are not given names and are not keyed here.
_GIVEN_NAME_FORMS: tuple[tuple[str, ...], ...] = (
    ("Александр", "Александра", "Саша", "Шура", "Саня", "Алекс", "Сашенька", "Alexander"),
    ("Алексей", "Лёша", "Алёша", "Лёха"),
    ("Анатолий", "Толя"),
    ("Андрей", "Андрюша"),
    ("Антон", "Антоша"),
    ("Аркадий", "Аркаша"),
    ("Артём", "Тёма", "Артемий"),
    ("Борис", "Боря"),
    ("Вадим", "Вадик"),
    ("Валентин", "Валентина", "Валя"),
    ("Валерий", "Валерия", "Валера", "Лера"),
    ("Василий", "Василиса", "Вася"),
    ("Виктор", "Виктория", "Витя", "Вика"),
    ("Владимир", "Вова", "Володя"),
    ("Владислав", "Владислава", "Влад", "Слава"),
    ("Вячеслав", "Слава"),
    ("Геннадий", "Гена"),
    ("Георгий", "Жора", "Гоша"),
    ("Григорий", "Гриша"),
    ("Даниил", "Данила", "Даня"),
    ("Денис", "Дениска"),
    ("Дмитрий", "Дима", "Митя"),
    ("Евгений", "Евгения", "Женя"),
    ("Егор", "Егорка"),
    ("Иван", "Ваня"),
    ("Игорь", "Игорёк"),
    ("Илья", "Илюша"),
    ("Кирилл", "Киря"),
    ("Константин", "Костя"),
    ("Леонид", "Лёня"),
    ("Максим", "Макс"),
    ("Михаил", "Миша"),
    ("Никита", "Никитка"),
    ("Николай", "Коля"),
    ("Олег", "Олежка"),
    ("Павел", "Паша"),
    ("Пётр", "Петя"),
    ("Роман", "Рома"),
    ("Семён", "Сёма"),
    ("Сергей", "Серёжа", "Серёга"),
    ("Станислав", "Стас"),
    ("Степан", "Стёпа"),
    ("Тимофей", "Тима"),
    ("Фёдор", "Федя"),
    ("Юрий", "Юра"),
    ("Ярослав", "Ярослава", "Ярик"),
    ("Алёна", "Алёнка"),
    ("Алла", "Аллочка"),
    ("Анастасия", "Настя"),
    ("Анна", "Аня", "Анюта"),
    ("Антонина", "Тоня"),
    ("Вера", "Верочка"),
    ("Галина", "Галя"),
    ("Дарья", "Даша"),
    ("Екатерина", "Катя"),
    ("Елена", "Лена"),
    ("Елизавета", "Лиза"),
    ("Зинаида", "Зина"),
    ("Ирина", "Ира"),
    ("Кристина", "Кристи"),
    ("Ксения", "Ксюша"),
    ("Лариса", "Лара"),
    ("Любовь", "Люба"),
    ("Людмила", "Люда", "Мила"),
    ("Маргарита", "Рита"),
    ("Марина", "Мариша"),
    ("Мария", "Маша"),
    ("Надежда", "Надя"),
    ("Наталья", "Наталия", "Наташа"),
    ("Нина", "Ниночка"),
    ("Ольга", "Оля"),
    ("Полина", "Поля"),
    ("Светлана", "Света"),
    ("София", "Софья", "Соня"),
    ("Тамара", "Тома"),
    ("Татьяна", "Таня"),
    ("Юлия", "Юля"),
)


# Ё written "yo" after a consonant (Pyotr, Artyom, Alyona) where ICAO and Е-for-Ё spellings have "e".
_YO = re.compile(r"(?<=[bcdfghklmnprstvz])yo")


def _skeleton_of(name: str) -> str:
    return name_skeleton(_YO.sub("e", fold(name)))


# skeleton of any form -> skeleton of the group's first (full) form; a short form of two groups (Слава:
# Владислав or Вячеслав) keeps its own key, which equals neither full form's, so it never contradicts them.
_GIVEN_NAME_KEYS: dict[str, str] = {}
_AMBIGUOUS: set[str] = set()
for _forms in _GIVEN_NAME_FORMS:
    _full = _skeleton_of(_forms[0])
    for _form in _forms:
        _sk = _skeleton_of(_form)
        if _GIVEN_NAME_KEYS.get(_sk, _full) != _full:
            _AMBIGUOUS.add(_sk)
        _GIVEN_NAME_KEYS[_sk] = _full
for _sk in _AMBIGUOUS:
    del _GIVEN_NAME_KEYS[_sk]


@lru_cache(maxsize=65536)
def given_name_key(name: str) -> str | None:
    """One key per given name, whatever the form a system holds: Ё or Е, Cyrillic or Latin (any common
    transliteration), full or short (``Александр``, ``Саша``, ``Sasha``, ``Aleksandr`` and ``Alexander``
    meet). The first token only (``Анна-Мария`` keys as ``Анна``); None for an empty name and for a short
    form two full names share (``Слава``): those are no evidence either way."""
    tokens = _skeleton_of(name).split()
    if not tokens:
        return None
    token = tokens[0]
    if token in _AMBIGUOUS:
        return None
    return _GIVEN_NAME_KEYS.get(token, token)


def same_given_name(a: str, b: str) -> bool:
    """Two :func:`given_name_key` keys that may be one person's: equal, one the start of the other (Al, Alex,
    Aleksandr), or one typo apart (Jaro-Winkler 0.88 or more: Natalya / Natalja, Sergey / Segrey)."""
    if a == b:
        return True
    short, long = (a, b) if len(a) <= len(b) else (b, a)
    if len(short) >= 2 and long.startswith(short):
        return True
    return bool(JaroWinkler.similarity(a, b) >= 0.88)
