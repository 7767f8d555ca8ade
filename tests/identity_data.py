"""A realistic multi-source customer set with hidden truth, and a pairwise scorer of resolved partitions.

    generate(people=10_000, seed=1, rates=Rates()) -> IdentityDataset
        .events      canonical event dicts (valid for ``parse_event``), in time order
        .person_of   event id -> person id: the truth, never part of an event
        .keys()      event id -> normalized identity keys
    pairwise_scores(partition, truth) -> Scores            precision / recall / F1 over record pairs
    identifier_ceiling(keys, truth, junk) -> partition     the best any exact-identifier resolver can do

Five source systems, each with its own account key, as the connectors in ``connectors/`` emit them:

=========  ====================  ========================================================================
source     account key           records
=========  ====================  ========================================================================
shop       ``ecom_customer_id``  ``customer.updated`` (e-mail always, phone often, names often in Latin or
                                 as a diminutive), ``order.placed`` with the account's e-mail
crm        ``crm_id``            ``customer.updated`` with full Cyrillic names, patronymic, birth date,
                                 phones typed by hand in any notation, e-mails in any case
erp        ``erp_customer_id``   1C customer card (``8 (9xx) ...`` phones, Ё written as Е, the loyalty card)
                                 and till receipts (``order.placed``: the phone typed at the till, the card)
loyalty    ``loyalty_card``      card holder (``customer.updated``: card, phone, sometimes e-mail), points
app        ``device_id``         ``app.installed`` / ``app.opened`` / ``push.token_registered``: the device
                                 (and ``push_token``); after login also ``ecom_customer_id``, phone, e-mail
=========  ====================  ========================================================================

A person has at most one account per system (a profile holding two ``crm_id`` or two ``loyalty_card``
values is always a false merge); a person may have a second app device.

Phenomena (each with a knob in :class:`Rates`; ``IdentityDataset.tags`` marks the records they touch):

* Russian names: male/female forms of surnames and patronymics, diminutives (Александр/Саша), Ё/Е
  (Фёдоров/Федоров), Latin transliteration (ICAO passport style or popular: Aleksandr/Alexander);
* phones in ``+7``, ``8``, ``7``, bracketed and dashed notations, e-mails with upper case and spaces;
* e-mail changes: the old address in the systems that saw the person before the change, the new one after;
* families sharing one phone (one member's mobile given for the others), each member with own accounts;
* namesakes: same first and last name, birth years one digit apart, e-mails ``ivanov.a1977@`` /
  ``ivanov.a1987@`` (no shared identifier; a trap for fuzzy matching);
* two people who typed the same e-mail (rare);
* junk e-mails and phones typed by many (``test@test.ru``, ``noemail@mail.ru``, ``+70000000000``,
  ``89999999999``) and the store's own phone typed at the till;
* app devices never logged in: records that share no identifier with the rest of their person.

The module is imported by tests (``from .identity_data import ...``) and by ``bench/identity_quality.py``
(with ``tests/`` on ``sys.path``); it needs no database.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Container, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from typing import Any, TypeVar

from cdp_hub.errors import NormalizationError
from cdp_hub.schema.events import deterministic_event_id
from cdp_hub.schema.identities import normalize_identity

__all__ = [
    "ACCOUNT_KINDS",
    "JUNK_EMAILS",
    "JUNK_PHONES",
    "PHONE_FORMATS",
    "SOURCES",
    "IdentityDataset",
    "Person",
    "Rates",
    "Scores",
    "account_collisions",
    "connected_by_identifiers",
    "event_keys",
    "generate",
    "identifier_ceiling",
    "mixed_clusters",
    "pairwise_scores",
    "same_partition",
    "transliterate",
]

Key = tuple[str, str]
K = TypeVar("K", bound=Hashable)

SOURCES = ("shop", "crm", "erp", "loyalty", "app")
ACCOUNT_KINDS = ("crm_id", "ecom_customer_id", "erp_customer_id", "loyalty_card")
JUNK_EMAILS = ("test@test.ru", "noemail@mail.ru", "no@mail.ru", "net@net.ru", "1@1.ru", "nomail@nomail.ru")
JUNK_PHONES = ("+70000000000", "89999999999", "8 (900) 000-00-00", "+7 (911) 111-11-11")
T_START = datetime(2018, 1, 1, tzinfo=UTC)
T_END = datetime(2025, 12, 31, tzinfo=UTC)

# -- names ----------------------------------------------------------------------------------------------

# full form, diminutive, (male, female) patronymic when this is a father's name
MALE_NAMES: tuple[tuple[str, str, tuple[str, str]], ...] = (
    ("Александр", "Саша", ("Александрович", "Александровна")),
    ("Сергей", "Серёжа", ("Сергеевич", "Сергеевна")),
    ("Дмитрий", "Дима", ("Дмитриевич", "Дмитриевна")),
    ("Андрей", "Андрюша", ("Андреевич", "Андреевна")),
    ("Алексей", "Лёша", ("Алексеевич", "Алексеевна")),
    ("Иван", "Ваня", ("Иванович", "Ивановна")),
    ("Михаил", "Миша", ("Михайлович", "Михайловна")),
    ("Николай", "Коля", ("Николаевич", "Николаевна")),
    ("Евгений", "Женя", ("Евгеньевич", "Евгеньевна")),
    ("Владимир", "Вова", ("Владимирович", "Владимировна")),
    ("Павел", "Паша", ("Павлович", "Павловна")),
    ("Артём", "Тёма", ("Артёмович", "Артёмовна")),
    ("Пётр", "Петя", ("Петрович", "Петровна")),
    ("Фёдор", "Федя", ("Фёдорович", "Фёдоровна")),
    ("Семён", "Сёма", ("Семёнович", "Семёновна")),
    ("Максим", "Макс", ("Максимович", "Максимовна")),
    ("Константин", "Костя", ("Константинович", "Константиновна")),
    ("Юрий", "Юра", ("Юрьевич", "Юрьевна")),
    ("Виктор", "Витя", ("Викторович", "Викторовна")),
    ("Олег", "Олег", ("Олегович", "Олеговна")),
)
FEMALE_NAMES: tuple[tuple[str, str], ...] = (
    ("Елена", "Лена"), ("Анна", "Аня"), ("Мария", "Маша"), ("Ольга", "Оля"), ("Наталья", "Наташа"),
    ("Татьяна", "Таня"), ("Екатерина", "Катя"), ("Ирина", "Ира"), ("Светлана", "Света"), ("Юлия", "Юля"),
    ("Алёна", "Алёна"), ("Дарья", "Даша"), ("Ксения", "Ксюша"), ("Анастасия", "Настя"),
    ("Александра", "Саша"), ("Евгения", "Женя"), ("Людмила", "Люда"), ("Галина", "Галя"),
    ("Марина", "Марина"), ("Надежда", "Надя"),
)
# Surnames (male form), most common first: drawn with Zipf-like weights (the first about 3%, as Smirnov and
# Ivanov are), so people with the same first and last name occur by chance too.
SURNAMES = (
    "Смирнов", "Иванов", "Кузнецов", "Соколов", "Попов", "Лебедев", "Козлов", "Новиков", "Морозов", "Петров",
    "Волков", "Соловьёв", "Васильев", "Зайцев", "Павлов", "Семёнов", "Голубев", "Виноградов", "Богданов",
    "Воробьёв", "Фёдоров", "Михайлов", "Беляев", "Тарасов", "Белов", "Комаров", "Орлов", "Киселёв", "Макаров",
    "Андреев", "Ковалёв", "Ильин", "Гусев", "Титов", "Кузьмин", "Кудрявцев", "Баранов", "Куликов", "Алексеев",
    "Степанов", "Яковлев", "Сорокин", "Сергеев", "Романов", "Захаров", "Борисов", "Королёв", "Герасимов",
    "Пономарёв", "Григорьев", "Лазарев", "Медведев", "Ершов", "Никитин", "Соболев", "Рябов", "Поляков",
    "Цветков", "Данилов", "Жуков", "Фролов", "Журавлёв", "Николаев", "Крылов", "Максимов", "Сидоров",
    "Осипов", "Белоусов", "Федотов", "Дорофеев", "Егоров", "Матвеев", "Бобров", "Дмитриев", "Калинин",
    "Анисимов", "Петухов", "Антонов", "Тимофеев", "Никифоров", "Веселов", "Филиппов", "Марков", "Большаков",
    "Суханов", "Миронов", "Ширяев", "Александров", "Коновалов", "Шестаков", "Казаков", "Ефимов", "Денисов",
    "Громов", "Фомин", "Давыдов", "Мельников", "Щербаков", "Блинов", "Колесников", "Карпов", "Афанасьев",
    "Власов", "Маслов", "Исаков", "Тихонов", "Аксёнов", "Гаврилов", "Родионов", "Котов", "Горбунов",
    "Кудряшов", "Быков", "Зуев", "Третьяков", "Савельев", "Панов", "Рыбаков", "Суворов", "Абрамов",
    "Воронов", "Мухин", "Архипов", "Трофимов", "Мартынов", "Емельянов", "Горшков", "Чернов", "Овчинников",
    "Селезнёв", "Панфилов", "Копылов", "Михеев", "Галкин", "Назаров", "Лобанов", "Лукин", "Беляков",
    "Потапов", "Некрасов", "Хохлов", "Жданов", "Наумов", "Шилов", "Воронцов", "Ермаков", "Дроздов",
    "Игнатьев", "Савин", "Логинов", "Сафонов", "Капустин", "Кириллов", "Моисеев", "Елисеев", "Кошелев",
    "Костин", "Горбачёв", "Орехов", "Ефремов", "Исаев", "Евдокимов", "Калашников", "Кабанов", "Носков",
    "Юдин", "Кулагин", "Лапин", "Прохоров", "Нестеров", "Харитонов", "Агафонов", "Муравьёв", "Ларионов",
    "Федосеев", "Зимин", "Пахомов", "Шубин", "Игнатов", "Филатов", "Крюков", "Рогов", "Кулаков", "Терентьев",
    "Молчанов", "Владимиров", "Артемьев", "Гурьев", "Зиновьев", "Гришин", "Кононов", "Дементьев", "Ситников",
    "Симонов", "Мишин", "Фадеев", "Комиссаров", "Мамонтов", "Носов", "Гуляев", "Шаров", "Устинов", "Вишняков",
    "Евсеев", "Лаврентьев", "Брагин", "Константинов", "Корнилов", "Авдеев", "Зыков", "Бирюков", "Шарапов",
    "Никонов", "Щукин", "Дьячков", "Одинцов", "Сазонов", "Якушев", "Красильников", "Гордеев", "Самойлов",
    "Князев", "Беспалов", "Уваров", "Шашков", "Бобылёв", "Доронин", "Белозёров", "Рожков", "Самсонов",
    "Мясников", "Лихачёв", "Буров", "Сысоев", "Фомичёв", "Русаков", "Стрелков", "Гущин", "Тетерин",
    "Колобов", "Субботин", "Фокин", "Блохин", "Селиверстов", "Пестов", "Кондратьев", "Силин", "Меркушев",
    "Лыткин", "Туров", "Успенский", "Вишневский", "Трубецкой", "Шевченко", "Бондаренко", "Кравченко", "Ким",
    "Цой",
)
# Latin spellings people use for their own first names, besides the transliteration.
LATIN_FIRST = {
    "Александр": ("Alexander", "Alexandr"), "Сергей": ("Sergey", "Sergei"), "Дмитрий": ("Dmitry", "Dmitri"),
    "Алексей": ("Alexey", "Alexei"), "Евгений": ("Evgeny", "Eugene"), "Юлия": ("Julia", "Yulia"),
    "Наталья": ("Natalia", "Natalya"), "Татьяна": ("Tatiana", "Tanya"), "Ксения": ("Ksenia", "Xenia"),
    "Екатерина": ("Ekaterina", "Katerina"), "Пётр": ("Peter", "Petr"), "Михаил": ("Mikhail", "Michael"),
    "Фёдор": ("Fedor", "Fyodor"), "Артём": ("Artem", "Artyom"), "Семён": ("Semen", "Semyon"),
    "Юрий": ("Yury", "Yuri"), "Мария": ("Maria", "Mariya"), "Анастасия": ("Anastasia", "Anastasiya"),
}
CITIES = (  # (city, Latin spelling, weight, area code of its stores)
    ("Москва", "Moscow", 30, "495"), ("Санкт-Петербург", "Saint Petersburg", 14, "812"),
    ("Новосибирск", "Novosibirsk", 5, "383"), ("Екатеринбург", "Yekaterinburg", 5, "343"),
    ("Казань", "Kazan", 5, "843"), ("Нижний Новгород", "Nizhny Novgorod", 4, "831"),
    ("Челябинск", "Chelyabinsk", 4, "351"), ("Самара", "Samara", 4, "846"), ("Омск", "Omsk", 3, "381"),
    ("Ростов-на-Дону", "Rostov-on-Don", 4, "863"), ("Уфа", "Ufa", 3, "347"),
    ("Красноярск", "Krasnoyarsk", 3, "391"), ("Воронеж", "Voronezh", 3, "473"), ("Пермь", "Perm", 3, "342"),
    ("Королёв", "Korolev", 1, "495"),
)
EMAIL_DOMAINS = (("mail.ru", 35), ("yandex.ru", 25), ("gmail.com", 15), ("bk.ru", 5), ("list.ru", 5),
                 ("inbox.ru", 5), ("rambler.ru", 5), ("ya.ru", 5))
NICKS = ("kotik", "sunny", "zvezda", "dark", "maxpower", "angel", "tiger", "lisa", "wolf", "malina", "solnce")
MOBILE_PREFIXES = (
    "900", "901", "903", "904", "905", "906", "908", "909", "910", "911", "912", "913", "914", "915", "916",
    "917", "918", "919", "920", "921", "922", "925", "926", "927", "929", "950", "951", "952", "953", "960",
    "961", "962", "963", "964", "965", "966", "967", "968", "977", "978", "980", "981", "985", "987", "995",
)

_ICAO = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
                 ["a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "i", "k", "l", "m", "n", "o", "p", "r", "s",
                  "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "ie", "y", "", "e", "iu", "ia"], strict=True))
_POPULAR = {**_ICAO, "й": "y", "ё": "yo", "ъ": "", "ю": "yu", "я": "ya", "х": "kh", "щ": "sch"}


def transliterate(text: str, scheme: str = "icao") -> str:
    """Cyrillic to Latin: ``icao`` (Russian passports since 2013) or ``popular`` (Aleksey, Yuliya)."""
    table = _ICAO if scheme == "icao" else _POPULAR
    out = []
    for word in text.split(" "):
        low = word.lower()
        if scheme == "popular" and low.endswith("ий"):
            low = low[:-2] + "iy"
        latin = "".join(table.get(ch, ch) for ch in low)
        out.append(latin[:1].upper() + latin[1:] if word[:1].isupper() else latin)
    return " ".join(out)


def female_surname(male: str) -> str:
    if male.endswith(("ов", "ев", "ёв", "ин", "ын")):
        return male + "а"
    if male.endswith(("ский", "цкий")):
        return male[:-2] + "ая"
    if male.endswith("ой"):
        return male[:-2] + "ая"
    return male  # Шевченко, Ким: the same for both


# -- phones -----------------------------------------------------------------------------------------------

# name -> how ten national digits (``9161234567``) are written
PHONE_FORMATS: dict[str, str] = {
    "plus7": "+7{0}{1}{2}{3}",                 # +79161234567
    "plus7_spaced": "+7 {0} {1}-{2}-{3}",      # +7 916 123-45-67
    "plus7_brackets": "+7 ({0}) {1}-{2}-{3}",  # +7 (916) 123-45-67
    "eight": "8{0}{1}{2}{3}",                  # 89161234567
    "eight_brackets": "8 ({0}) {1}-{2}-{3}",   # 8 (916) 123-45-67
    "eight_dashes": "8-{0}-{1}-{2}-{3}",       # 8-916-123-45-67
    "seven": "7{0}{1}{2}{3}",                  # 79161234567
    "seven_spaced": "7 {0} {1}{2}{3}",         # 7 916 1234567
}
# Which notations each system's users and staff use (weights).
_SYSTEM_FORMATS: dict[str, dict[str, int]] = {
    "shop": {"plus7": 6, "plus7_brackets": 2, "eight": 2},
    "crm": dict.fromkeys(PHONE_FORMATS, 1),
    "erp": {"eight_brackets": 5, "eight": 3, "eight_dashes": 2},
    "loyalty": {"seven": 5, "plus7": 3, "eight": 2, "seven_spaced": 1},
    "app": {"plus7": 1},
}


def format_phone(e164: str, fmt: str) -> str:
    """``+79161234567`` written in notation ``fmt`` (one of :data:`PHONE_FORMATS`)."""
    d = e164[2:]
    return PHONE_FORMATS[fmt].format(d[:3], d[3:6], d[6:8], d[8:])


# -- the data set ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    """Knobs of the generator. Person-level shares are exact counts (rounded), record-level ones are
    probabilities per record."""

    # share of people with an account in each system (everyone has at least one)
    shop: float = 0.55
    crm: float = 0.45
    erp: float = 0.5
    loyalty: float = 0.4
    app: float = 0.3
    # person level
    family: float = 0.06          # people living in a family (2-4 people) that shares one phone
    namesake: float = 0.03        # people in namesake pairs (same first and last name, different people)
    shared_email: float = 0.004   # people who typed someone else's e-mail in one system
    email_change: float = 0.2     # people whose e-mail changed (old address in some systems, new in others)
    second_device: float = 0.15   # app users with a second device
    # record level
    app_anonymous: float = 0.25   # app devices never logged in: share no identifier with the person's records
    junk_email: float = 0.03      # customer records with a placeholder e-mail (test@test.ru, noemail@mail.ru)
    junk_phone: float = 0.02      # customer records with a placeholder phone (+70000000000, 89999999999)
    store_phone: float = 0.04     # ERP records (customer cards, till receipts) with the store's own phone
    latin: float = 0.3            # shop and loyalty records with names in Latin letters
    diminutive: float = 0.25      # shop and loyalty records with the diminutive first name (Саша)
    yo_as_e: float = 0.5          # records writing a name's Ё as Е (ERP: twice as often)
    messy_email: float = 0.2      # e-mails written with upper case and/or surrounding spaces
    stores: int = 25              # stores (each with its own phone), over the cities


@dataclass
class Person:
    """One real person (the hidden truth)."""

    person_id: str
    gender: str
    first: str
    short: str
    middle: str
    last: str
    last_male: str                     # the surname's male form (the family's name)
    birth: date
    city: str
    phone: str | None                  # own mobile, E.164
    emails: list[str]                  # canonical; [old, new] when the e-mail changed
    since: datetime                    # first contact with any system
    email_changed_at: datetime | None = None
    family: int | None = None
    family_phone: str | None = None    # the phone the family shares (one member's mobile)
    namesake_of: str | None = None
    typed_email: tuple[str, str] | None = None  # (someone else's e-mail, the system it was typed into)
    systems: tuple[str, ...] = ()

    def email_at(self, when: datetime) -> str:
        if self.email_changed_at is not None and when >= self.email_changed_at:
            return self.emails[-1]
        return self.emails[0]


@dataclass
class IdentityDataset:
    """Generated events and the truth about them."""

    people: list[Person]
    events: list[dict[str, Any]]                 # canonical event dicts, sorted by occurred_at
    person_of: dict[str, str]                    # event id -> person id
    system_of: dict[str, str]                    # event id -> source system
    tags: dict[str, frozenset[str]]              # event id -> phenomena the record shows
    junk: frozenset[Key]                         # normalized placeholder values and store phones
    categories: dict[Key, str]                   # normalized value shared by design -> its phenomenon
    stores: list[tuple[str, str, str]]           # (store id, city, phone in E.164)
    families: list[list[str]]
    namesakes: list[tuple[str, str]]
    shared_emails: list[tuple[str, str, str]]    # (owner, other person, e-mail)
    phone_formats: Counter[str] = field(default_factory=Counter)
    seed: int = 0
    _keys: dict[str, list[Key]] | None = field(default=None, repr=False)

    def keys(self) -> dict[str, list[Key]]:
        """Event id -> its identities, normalized as the schema does (cached)."""
        if self._keys is None:
            self._keys = {e["event_id"]: event_keys(e) for e in self.events}
        return self._keys

    def by_source(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {s: [] for s in SOURCES}
        for e in self.events:
            out[e["source"]].append(e)
        return out

    def category(self, key: Key) -> str:
        """The phenomenon behind a value that several people share (``other`` for none known)."""
        return self.categories.get(key, "other")


def event_keys(event: Mapping[str, Any]) -> list[Key]:
    """The event's identities normalized like ``parse_event`` does, without repeats."""
    out: list[Key] = []
    for ident in event["identities"]:
        key = normalize_identity(ident["kind"], ident["value"])
        if key not in out:
            out.append(key)
    return out


class _Weighted:
    """A weighted choice among fixed values (cumulative weights computed once)."""

    def __init__(self, items: Mapping[str, int] | Sequence[tuple[str, int]]) -> None:
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        self.values = [p[0] for p in pairs]
        self.cum = list(accumulate(p[1] for p in pairs))

    def pick(self, rng: random.Random) -> str:
        return rng.choices(self.values, cum_weights=self.cum)[0]


_DOMAINS = _Weighted(EMAIL_DOMAINS)
_FORMATS_OF = {system: _Weighted(weights) for system, weights in _SYSTEM_FORMATS.items()}


def _iso(t: datetime) -> str:
    return t.isoformat()[:19] + "Z"


class _Generator:
    def __init__(self, n: int, seed: int, rates: Rates) -> None:
        self.n = n
        self.seed = seed
        self.rates = rates
        self.rng = random.Random(seed)
        self.people: list[Person] = []
        self.used_phones: set[str] = set()
        self.used_emails: set[str] = set()
        self.events: list[dict[str, Any]] = []
        self.person_of: dict[str, str] = {}
        self.system_of: dict[str, str] = {}
        self.tags: dict[str, frozenset[str]] = {}
        self.categories: dict[Key, str] = {}
        self.phone_formats: Counter[str] = Counter()
        self.families: list[list[str]] = []
        self.namesakes: list[tuple[str, str]] = []
        self.shared_emails: list[tuple[str, str, str]] = []
        self.typed_done: set[str] = set()
        self.ecom_id: dict[str, str] = {}   # person -> e-commerce account id (the app logs in with it)
        self.cards: dict[str, str] = {}     # person -> loyalty card number
        self.cities = list(CITIES)
        self.city_weights = [c[2] for c in self.cities]
        self.surname_weights = [1 / (i + 1) ** 0.5 for i in range(len(SURNAMES))]
        self.stores: list[tuple[str, str, str]] = []
        for i in range(rates.stores):
            city = self.cities[i % len(self.cities)] if i < len(self.cities) else self._city()
            phone = self._unique_phone(prefixes=(city[3],))
            self.stores.append((f"S{i + 1:03d}", city[0], phone))
            self.categories[("phone", phone)] = "store_phone"
        for value in JUNK_EMAILS:
            self.categories[normalize_identity("email", value)] = "junk_email"
        for value in JUNK_PHONES:
            self.categories[normalize_identity("phone", value)] = "junk_phone"

    # -- people --------------------------------------------------------------------------------------

    def _city(self) -> tuple[str, str, int, str]:
        return self.rng.choices(self.cities, self.city_weights)[0]

    def _unique_phone(self, prefixes: Sequence[str] = MOBILE_PREFIXES) -> str:
        while True:
            phone = "+7" + self.rng.choice(prefixes) + f"{self.rng.randrange(10**7):07d}"
            if phone not in self.used_phones and len(set(phone[2:])) > 2:
                self.used_phones.add(phone)
                return phone

    def _surname(self) -> str:
        return self.rng.choices(SURNAMES, self.surname_weights)[0]

    def _birth(self, lo: int = 1950, hi: int = 2006) -> date:
        return date(self.rng.randint(lo, hi), self.rng.randint(1, 12), self.rng.randint(1, 28))

    def _email(self, first: str, last: str, birth: date, pattern: str | None = None,
               domain: str | None = None) -> str:
        rng = self.rng
        sur = transliterate(last, "popular").lower().replace("'", "")
        fst = transliterate(first, "popular").lower()
        domain = domain or _DOMAINS.pick(rng)
        pattern = pattern or rng.choice(("sur.iyear", "first.sur", "firstsyy", "surn", "nick"))
        for attempt in range(100):
            if pattern == "sur.iyear":
                local = f"{sur}.{fst[0]}{birth.year}"
            elif pattern == "first.sur":
                local = f"{fst}.{sur}"
            elif pattern == "firstsyy":
                local = f"{fst}{sur[0]}{birth.year % 100:02d}"
            elif pattern == "surn":
                local = f"{sur}{rng.randint(1, 999)}"
            else:
                local = f"{rng.choice(NICKS)}{rng.randint(1, 9999)}"
            if attempt:
                local += f"{rng.randint(1, 99)}" if pattern != "nick" else ""
            email = f"{local}@{domain}"
            if email not in self.used_emails:
                self.used_emails.add(email)
                return email
        raise RuntimeError("could not make a unique e-mail")

    def _new_person(self, gender: str | None = None, *, last_male: str | None = None, city: str | None = None,
                    birth: date | None = None, father: str | None = None, phone: bool = True,
                    first: tuple[str, str] | None = None, email_pattern: str | None = None,
                    email_domain: str | None = None) -> Person:
        rng = self.rng
        gender = gender or rng.choice(("male", "female"))
        father_name = father or rng.choice(MALE_NAMES)[0]
        pat = next(m[2] for m in MALE_NAMES if m[0] == father_name)
        if first is None:
            if gender == "male":
                m = rng.choice(MALE_NAMES)
                first = (m[0], m[1])
            else:
                first = rng.choice(FEMALE_NAMES)
        last_male = last_male or self._surname()
        last = last_male if gender == "male" else female_surname(last_male)
        birth = birth or self._birth()
        since = T_START + timedelta(seconds=rng.randrange(int((T_END - T_START).total_seconds() * 0.8)))
        person = Person(
            person_id=f"P{len(self.people) + 1:06d}", gender=gender, first=first[0], short=first[1],
            middle=pat[0] if gender == "male" else pat[1], last=last, last_male=last_male, birth=birth,
            city=city or self._city()[0], phone=self._unique_phone() if phone else None,
            emails=[self._email(first[0], last, birth, email_pattern, email_domain)], since=since,
        )
        self.people.append(person)
        return person

    def make_people(self) -> None:
        rng, rates, n = self.rng, self.rates, self.n
        n_family = round(n * rates.family)
        n_namesake = 2 * round(n * rates.namesake / 2)
        family_id = 0
        while sum(len(f) for f in self.families) < n_family and len(self.people) < n:
            size = min(rng.choices((2, 3, 4), (5, 3, 2))[0], n_family - sum(len(f) for f in self.families),
                       n - len(self.people))
            if size < 2:
                break
            family_id += 1
            head_male = rng.random() < 0.6
            city = self._city()[0]
            surname = self._surname()
            head = self._new_person("male" if head_male else "female", last_male=surname, city=city,
                                    birth=self._birth(1955, 1990))
            members = [head]
            phoneless = rng.randrange(1, size)  # one member has no phone of their own: they give the family's
            for i in range(1, size):
                if i == 1:  # the spouse
                    spouse_birth = head.birth.replace(year=min(2000, head.birth.year + rng.randint(-5, 5)))
                    members.append(self._new_person("female" if head_male else "male", last_male=surname,
                                                    city=city, birth=spouse_birth,
                                                    phone=i != phoneless and rng.random() < 0.8))
                else:  # a child (patronymic after the father) or an elderly parent
                    father = head.first if head_male else members[1].first
                    if rng.random() < 0.75:
                        b = self._birth(min(2006, head.birth.year + 20), min(2007, head.birth.year + 38))
                        members.append(self._new_person(last_male=surname, city=city, birth=b, father=father,
                                                        phone=i != phoneless and rng.random() < 0.5))
                    else:
                        members.append(self._new_person(last_male=surname, city=city,
                                                        birth=self._birth(1935, max(1936, head.birth.year - 20)),
                                                        phone=i != phoneless and rng.random() < 0.5))
            for m in members:
                m.family = family_id
                m.family_phone = head.phone
            assert head.phone is not None
            self.categories[("phone", head.phone)] = "family_phone"
            self.families.append([m.person_id for m in members])
        while len(self.namesakes) * 2 < n_namesake and len(self.people) + 2 <= n:
            domain = _DOMAINS.pick(rng)
            a = self._new_person(email_pattern="sur.iyear", email_domain=domain)
            year = str(a.birth.year)
            pos = rng.choice((2, 3))  # 1977 -> 1987 or 1978
            digits = [d for d in "0123456789" if d != year[pos]]
            other = year[:pos] + rng.choice(digits) + year[pos + 1:]
            if not 1935 <= int(other) <= 2007:
                other = year[:3] + str((int(year[3]) + 1) % 10)
            b_birth = date(int(other), rng.randint(1, 12), rng.randint(1, 28))
            b = self._new_person(a.gender, first=(a.first, a.short), last_male=a.last_male,
                                 city=a.city if rng.random() < 0.5 else None, birth=b_birth,
                                 email_pattern="sur.iyear", email_domain=domain)
            b.namesake_of = a.person_id
            self.namesakes.append((a.person_id, b.person_id))
        while len(self.people) < n:
            self._new_person()
        rng.shuffle(self.people)  # person ids keep their creation order; the event times are random anyway
        for p in self.people:
            p.systems = self._systems(p)
        for p in rng.sample(self.people, round(n * rates.email_change)):
            p.emails.append(self._email(p.first, p.last, p.birth))
            p.email_changed_at = p.since + timedelta(seconds=rng.randrange(60 * 86400, 900 * 86400))
        # Someone typed another person's e-mail into one system (a typo, a relative's address).
        typed = round(n * rates.shared_email)
        pool = [p for p in self.people if set(p.systems) & {"shop", "crm", "erp", "loyalty"}]
        for owner, other in zip(rng.sample(self.people, typed), rng.sample(pool, typed), strict=True):
            if owner is other or other.typed_email is not None:
                continue
            system = rng.choice([s for s in other.systems if s in ("shop", "crm", "erp", "loyalty")])
            other.typed_email = (owner.emails[0], system)
            self.shared_emails.append((owner.person_id, other.person_id, owner.emails[0]))
            self.categories[("email", owner.emails[0])] = "shared_email"

    def _systems(self, p: Person) -> tuple[str, ...]:
        rates = self.rates
        probs = {"shop": rates.shop, "crm": rates.crm, "erp": rates.erp, "loyalty": rates.loyalty,
                 "app": rates.app}
        chosen = tuple(s for s in SOURCES if self.rng.random() < probs[s])
        if not chosen:
            chosen = (self.rng.choices(SOURCES, [probs[s] for s in SOURCES])[0],)
        return chosen

    # -- records -------------------------------------------------------------------------------------

    def _emit(self, p: Person, source: str, type_: str, rid: str, when: datetime, identities: list[dict[str, str]],
              tags: Iterable[str] = (), traits: dict[str, Any] | None = None,
              properties: dict[str, Any] | None = None, context: dict[str, Any] | None = None) -> None:
        eid = str(deterministic_event_id(source, rid, type_))
        event: dict[str, Any] = {"event_id": eid, "type": type_, "source": source, "source_record_id": rid,
                                 "occurred_at": _iso(when), "identities": identities}
        if traits:
            event["traits"] = traits
        if properties:
            event["properties"] = properties
        if context:
            event["context"] = context
        self.events.append(event)
        self.person_of[eid] = p.person_id
        self.system_of[eid] = source
        self.tags[eid] = frozenset(tags)

    def _when(self, start: datetime, max_days: float) -> datetime:
        t = start + timedelta(seconds=self.rng.randrange(int(max_days * 86400)))
        return min(t, T_END)

    def _phone(self, p: Person, system: str, share: float, tags: set[str]) -> str | None:
        """The phone a record of ``p`` in ``system`` carries (formatted), or None."""
        rng, rates = self.rng, self.rates
        if rng.random() < rates.junk_phone:
            tags.add("junk_phone")
            return rng.choice(JUNK_PHONES)
        if system == "erp" and rng.random() < rates.store_phone:
            tags.add("store_phone")
            store = self._store(p)
            return self._fmt(store[2], system)
        phone = p.phone
        if p.family_phone is not None and p.family_phone != p.phone and (
                p.phone is None or (system in ("loyalty", "erp") and rng.random() < 0.5)
                or (system == "crm" and rng.random() < 0.2)):
            phone = p.family_phone
            tags.add("family_phone")
        if phone is None or rng.random() >= share:
            return None
        return self._fmt(phone, system)

    def _fmt(self, e164: str, system: str) -> str:
        fmt = _FORMATS_OF[system].pick(self.rng)
        self.phone_formats[fmt] += 1
        return format_phone(e164, fmt)

    def _store(self, p: Person) -> tuple[str, str, str]:
        local = [s for s in self.stores if s[1] == p.city]
        return self.rng.choice(local or self.stores)

    def _email_of(self, p: Person, system: str, when: datetime, share: float, tags: set[str]) -> str | None:
        rng, rates = self.rng, self.rates
        if rng.random() < rates.junk_email:
            tags.add("junk_email")
            return rng.choice(JUNK_EMAILS)
        if p.typed_email is not None and p.typed_email[1] == system and p.person_id not in self.typed_done:
            self.typed_done.add(p.person_id)  # once: the first record of that system
            tags.add("shared_email")
            return self._messy(p.typed_email[0])
        if rng.random() >= share:
            return None
        email = p.email_at(when)
        if len(p.emails) > 1:
            tags.add("old_email" if email == p.emails[0] else "new_email")
        raw = self._messy(email)
        if raw != email:
            tags.add("messy_email")
        return raw

    def _messy(self, email: str) -> str:
        rng = self.rng
        if rng.random() >= self.rates.messy_email:
            return email
        style = rng.randrange(3)
        if style == 0:
            out = email.upper()
        elif style == 1:
            local, _, domain = email.partition("@")
            out = local[:1].upper() + local[1:] + "@" + domain.capitalize()
        else:
            out = email
        return f" {out} " if style == 2 or rng.random() < 0.3 else out

    def _names(self, p: Person, system: str, tags: set[str]) -> dict[str, Any]:
        """first_name / last_name (and middle_name in CRM and ERP) as ``system`` writes them."""
        rng, rates = self.rng, self.rates
        first, last, middle = p.first, p.last, p.middle
        informal = system in ("shop", "loyalty")
        if informal and rng.random() < rates.diminutive and p.short != p.first:
            first = p.short
            tags.add("diminutive")
        yo = rates.yo_as_e * (2 if system == "erp" else 1)
        if "ё" in (first + last + middle).lower() and rng.random() < yo:
            first, last, middle = (s.replace("ё", "е").replace("Ё", "Е") for s in (first, last, middle))
            tags.add("yo_e")
        out: dict[str, Any] = {}
        if informal and rng.random() < rates.latin:
            tags.add("latin")
            scheme = rng.choice(("icao", "popular"))
            known = LATIN_FIRST.get(p.first)
            if first == p.first and known and rng.random() < 0.5:
                out["first_name"] = rng.choice(known)
            else:
                out["first_name"] = transliterate(first, scheme)
            out["last_name"] = transliterate(last, scheme)
            return out
        out["first_name"], out["last_name"] = first, last
        if system in ("crm", "erp") and rng.random() < 0.7:
            out["middle_name"] = middle
        return out

    def _city_trait(self, p: Person, tags: set[str]) -> str:
        if "latin" in tags:
            return next(c[1] for c in self.cities if c[0] == p.city)
        return p.city

    def records(self) -> None:
        for p in self.people:
            for system in p.systems:
                getattr(self, f"_{system}")(p)

    def _account_times(self, p: Person) -> tuple[datetime, datetime | None]:
        opened = self._when(p.since, 500)
        updated = self._when(opened + timedelta(days=30), 700) if self.rng.random() < 0.4 else None
        return opened, updated

    def _shop(self, p: Person) -> None:
        rng = self.rng
        cid = str(4_100_000 + len(self.events) * 7 + rng.randrange(7))
        self.ecom_id[p.person_id] = cid
        opened, updated = self._account_times(p)
        snapshots = []
        for when in (opened, updated):
            if when is None:
                continue
            tags: set[str] = set()
            ids = [{"kind": "ecom_customer_id", "value": cid}]
            email = self._email_of(p, "shop", when, 1.0, tags)
            if email:
                ids.append({"kind": "email", "value": email})
            phone = self._phone(p, "shop", 0.6, tags)
            if phone:
                ids.append({"kind": "phone", "value": phone})
            traits = self._names(p, "shop", tags)
            if rng.random() < 0.7:
                traits["city"] = self._city_trait(p, tags)
            self._emit(p, "shop", "customer.updated", f"{cid}@{_iso(when)}", when, ids, tags, traits,
                       context={"channel": "ecommerce"})
            snapshots.append((when, email, tags))
        for k in range(rng.choice((0, 1, 1, 2))):
            when = self._when(opened, 600)
            email, tags = next(((e, t) for w, e, t in reversed(snapshots) if w <= when), snapshots[0][1:])
            ids = [{"kind": "ecom_customer_id", "value": cid}]
            if email:
                ids.append({"kind": "email", "value": email})
            order_tags = {t for t in tags if t.endswith("email")}
            self._emit(p, "shop", "order.placed", f"{cid}-{k + 1}", when, ids, order_tags,
                       properties={"order_id": f"#{cid}-{k + 1}", "total": f"{rng.randint(300, 20000)}.00",
                                   "currency": "RUB"}, context={"channel": "ecommerce"})

    def _crm(self, p: Person) -> None:
        rng = self.rng
        cid = str(51_000_000 + len(self.events) * 3 + rng.randrange(3))
        opened, updated = self._account_times(p)
        for when in (opened, updated):
            if when is None:
                continue
            tags: set[str] = set()
            ids = [{"kind": "crm_id", "value": cid}]
            email = self._email_of(p, "crm", when, 0.75, tags)
            if email:
                ids.append({"kind": "email", "value": email})
            phone = self._phone(p, "crm", 0.85, tags)
            if phone:
                ids.append({"kind": "phone", "value": phone})
            traits = self._names(p, "crm", tags)
            if rng.random() < 0.7:
                traits["birth_date"] = p.birth.isoformat()
            traits["gender"] = p.gender
            traits["city"] = p.city
            self._emit(p, "crm", "customer.updated", f"{cid}@{_iso(when)}", when, ids, tags, traits,
                       context={"channel": "crm"})

    def _erp(self, p: Person) -> None:
        rng = self.rng
        code = f"{len(self.events) + 1:09d}"
        opened, updated = self._account_times(p)
        card = self._card(p) if "loyalty" in p.systems and rng.random() < 0.7 else None
        for when in (opened, updated):
            if when is None:
                continue
            tags: set[str] = set()
            ids = [{"kind": "erp_customer_id", "value": code}]
            phone = self._phone(p, "erp", 0.9, tags)
            if phone:
                ids.append({"kind": "phone", "value": phone})
            email = self._email_of(p, "erp", when, 0.3, tags)
            if email:
                ids.append({"kind": "email", "value": email})
            if card:
                ids.append({"kind": "loyalty_card", "value": self._card_text(card)})
            traits = self._names(p, "erp", tags)
            if rng.random() < 0.5:
                traits["birth_date"] = p.birth.isoformat()
            traits["gender"] = p.gender
            if rng.random() < 0.6:
                traits["city"] = p.city
            self._emit(p, "erp", "customer.updated", f"{code}@{_iso(when)}", when, ids, tags, traits,
                       context={"channel": "offline"})
        for k in range(rng.randint(1, 3)):
            when = self._when(opened, 700)
            tags = set()
            ids = [{"kind": "erp_customer_id", "value": code}]
            phone = self._phone(p, "erp", 0.8, tags)  # typed at the till
            if phone:
                ids.append({"kind": "phone", "value": phone})
            if card and rng.random() < 0.8:
                ids.append({"kind": "loyalty_card", "value": self._card_text(card)})
            store = self._store(p)
            self._emit(p, "erp", "order.placed", f"ЧК-{code}-{k + 1}", when, ids, tags,
                       properties={"order_id": f"ЧК-{code}-{k + 1}", "total": f"{rng.randint(100, 9000)}.00",
                                   "currency": "RUB", "store_id": store[0]},
                       context={"channel": "offline", "store_id": store[0]})

    def _card(self, p: Person) -> str:
        if p.person_id not in self.cards:
            self.cards[p.person_id] = f"2770{len(self.cards) + 1:08d}{self.rng.randrange(10)}"
        return self.cards[p.person_id]

    def _card_text(self, card: str) -> str:
        style = self.rng.randrange(3)
        if style == 0:
            return card
        if style == 1:
            return f"{card[:4]} {card[4:8]} {card[8:]}"
        return f"{card[:4]}-{card[4:]}"

    def _loyalty(self, p: Person) -> None:
        rng = self.rng
        card = self._card(p)
        opened, updated = self._account_times(p)
        for when in (opened, updated):
            if when is None:
                continue
            tags: set[str] = set()
            ids = [{"kind": "loyalty_card", "value": self._card_text(card)}]
            phone = self._phone(p, "loyalty", 0.95, tags)
            if phone:
                ids.append({"kind": "phone", "value": phone})
            email = self._email_of(p, "loyalty", when, 0.4, tags)
            if email:
                ids.append({"kind": "email", "value": email})
            traits = self._names(p, "loyalty", tags)
            if rng.random() < 0.8:
                traits["birth_date"] = p.birth.isoformat()
            traits["gender"] = p.gender
            traits["loyalty_tier"] = rng.choice(("bronze", "silver", "gold"))
            self._emit(p, "loyalty", "customer.updated", f"card/{card}@{_iso(when)}", when, ids, tags, traits,
                       context={"channel": "loyalty"})
        for k in range(rng.choice((0, 1, 1, 2))):
            when = self._when(opened, 700)
            self._emit(p, "loyalty", "loyalty.points_earned", f"txn/{card}/{k + 1}", when,
                       [{"kind": "loyalty_card", "value": self._card_text(card)}],
                       properties={"card": card, "points": str(rng.randint(10, 500)),
                                   "transaction_id": f"{card}-{k + 1}"}, context={"channel": "loyalty"})

    def _app(self, p: Person) -> None:
        rng = self.rng
        devices = 2 if rng.random() < self.rates.second_device else 1
        for _ in range(devices):
            device = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            token = f"{rng.getrandbits(88):022x}:APA91b{rng.getrandbits(160):040x}"
            installed = self._when(p.since, 600)
            anonymous = rng.random() < self.rates.app_anonymous
            base_tags = {"orphan_device"} if anonymous else set()
            dev = [{"kind": "device_id", "value": device}]
            platform = rng.choice(("android", "ios"))
            ctx = {"channel": "app", "app_version": "5.2.1"}
            self._emit(p, "app", "app.installed", f"{device}/install", installed, dev, base_tags,
                       properties={"platform": platform}, context=ctx)
            self._emit(p, "app", "push.token_registered", f"{device}/token", self._when(installed, 1),
                       [*dev, {"kind": "push_token", "value": token}], base_tags,
                       properties={"token": token, "platform": platform}, context=ctx)
            login: list[dict[str, str]] = []
            tags = set(base_tags)
            if not anonymous:
                shop_id = self.ecom_id.get(p.person_id)
                if shop_id and rng.random() < 0.8:
                    login.append({"kind": "ecom_customer_id", "value": shop_id})
                if not login or rng.random() < 0.5:
                    phone = p.phone or p.family_phone
                    if phone and rng.random() < 0.7:
                        login.append({"kind": "phone", "value": self._fmt(phone, "app")})
                        if phone != p.phone:
                            tags.add("family_phone")
                    else:
                        email = p.email_at(installed)
                        login.append({"kind": "email", "value": email})
                        if len(p.emails) > 1:
                            tags.add("old_email" if email == p.emails[0] else "new_email")
            for k in range(rng.randint(1, 3)):
                when = self._when(installed, 300)
                self._emit(p, "app", "app.opened", f"{device}/open/{k + 1}", when, [*dev, *login], tags,
                           properties={"platform": platform}, context=ctx)

    def dataset(self) -> IdentityDataset:
        self.events.sort(key=lambda e: (e["occurred_at"], e["event_id"]))
        junk = {normalize_identity("email", v) for v in JUNK_EMAILS}
        junk |= {normalize_identity("phone", v) for v in JUNK_PHONES}
        junk |= {("phone", s[2]) for s in self.stores}
        people = sorted(self.people, key=lambda p: p.person_id)
        return IdentityDataset(
            people=people, events=self.events, person_of=self.person_of, system_of=self.system_of,
            tags=self.tags, junk=frozenset(junk), categories=self.categories, stores=self.stores,
            families=self.families, namesakes=self.namesakes, shared_emails=self.shared_emails,
            phone_formats=self.phone_formats, seed=self.seed,
        )


def generate(people: int = 10_000, seed: int = 1, rates: Rates | None = None) -> IdentityDataset:
    """A data set of ``people`` persons and their records in five systems; the same for the same arguments."""
    gen = _Generator(people, seed, rates or Rates())
    gen.make_people()
    gen.records()
    return gen.dataset()


# -- scoring -------------------------------------------------------------------------------------------------


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


@dataclass(frozen=True)
class Scores:
    """Pairwise figures of a partition against the truth: a pair of records is a positive when the
    partition puts them in one cluster, a true one when they are one person."""

    records: int
    clusters: int
    people: int
    true_positive: int
    predicted_pairs: int
    true_pairs: int

    @property
    def precision(self) -> float:
        return self.true_positive / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positive / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_pairs(self) -> int:
        return self.predicted_pairs - self.true_positive

    @property
    def missed_pairs(self) -> int:
        return self.true_pairs - self.true_positive


def pairwise_scores(partition: Mapping[K, Hashable], truth: Mapping[K, Hashable]) -> Scores:
    """Pairwise precision / recall / F1 of ``partition`` (record -> cluster) against ``truth`` (record ->
    person), over the records of ``truth``; a record the partition lacks (a dead letter) is a cluster of its
    own. Counted through the cluster-size contingency table, in O(records)."""
    cells: Counter[tuple[Hashable, Hashable]] = Counter()
    sizes: Counter[Hashable] = Counter()
    people: Counter[Hashable] = Counter()
    for rec, person in truth.items():
        cluster = partition.get(rec, ("\x00missing", rec))
        cells[(cluster, person)] += 1
        sizes[cluster] += 1
        people[person] += 1
    return Scores(
        records=len(truth), clusters=len(sizes), people=len(people),
        true_positive=sum(_pairs(n) for n in cells.values()),
        predicted_pairs=sum(_pairs(n) for n in sizes.values()),
        true_pairs=sum(_pairs(n) for n in people.values()),
    )


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, x: Hashable) -> Hashable:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: Hashable, b: Hashable) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _components(groups: Iterable[Sequence[K]], records: Iterable[K]) -> dict[K, Hashable]:
    uf = _UnionFind()
    for group in groups:
        for other in group[1:]:
            uf.union(group[0], other)
    return {r: uf.find(r) for r in records}


def connected_by_identifiers(keys: Mapping[K, Iterable[Key]],
                             blocked: Iterable[Key] | Container[Key] = ()) -> dict[K, Hashable]:
    """Connected components of records sharing any identity key not in ``blocked`` (a set, or the rules'
    block list with its patterns): what a resolver without rules does (the transitive closure of shared
    identifiers)."""
    skip: Container[Key] = blocked if isinstance(blocked, Container) else set(blocked)
    holders: dict[Key, list[K]] = defaultdict(list)
    for rec, ks in keys.items():
        for k in ks:
            if k not in skip:
                holders[k].append(rec)
    return _components(holders.values(), keys)


def identifier_ceiling(keys: Mapping[K, Iterable[Key]], truth: Mapping[K, Hashable],
                       junk: Iterable[Key] = ()) -> dict[K, Hashable]:
    """The best partition a resolver using exact normalized identifiers alone can reach: connected
    components of records that share a non-junk identity key *and* are one person. Its precision is 1 by
    construction; its recall is the ceiling of any identifier-only resolver on the data."""
    skip = set(junk)
    holders: dict[tuple[Key, Hashable], list[K]] = defaultdict(list)
    for rec, ks in keys.items():
        for k in ks:
            if k not in skip:
                holders[(k, truth[rec])].append(rec)
    return _components(holders.values(), keys)


def same_partition(a: Mapping[K, Hashable], b: Mapping[K, Hashable]) -> bool:
    """True when ``a`` and ``b`` cover the same records and group them the same way (labels may differ)."""
    if a.keys() != b.keys():
        return False
    forward: dict[Hashable, Hashable] = {}
    backward: dict[Hashable, Hashable] = {}
    for rec, la in a.items():
        lb = b[rec]
        if forward.setdefault(la, lb) != lb or backward.setdefault(lb, la) != la:
            return False
    return True


def account_collisions(partition: Mapping[K, Hashable], keys: Mapping[K, Iterable[Key]],
                       kinds: Iterable[str] = ACCOUNT_KINDS) -> Counter[str]:
    """Per kind, how many clusters of ``partition`` hold records with two or more different values of it
    (two CRM contacts, two loyalty cards in one profile)."""
    wanted = set(kinds)
    values: dict[tuple[Hashable, str], set[str]] = defaultdict(set)
    for rec, ks in keys.items():
        if rec not in partition:
            continue
        for kind, value in ks:
            if kind in wanted:
                values[(partition[rec], kind)].add(value)
    out: Counter[str] = Counter({k: 0 for k in wanted})
    for (_, kind), vals in values.items():
        if len(vals) > 1:
            out[kind] += 1
    return out


@dataclass
class MixedCluster:
    """A cluster holding records of more than one person, and the values that tie the people together."""

    cluster: Hashable
    records: int
    people: int
    false_pairs: int
    shared: dict[Key, int]   # key held by records of several people -> how many people


def mixed_clusters(partition: Mapping[K, Hashable], truth: Mapping[K, Hashable],
                   keys: Mapping[K, Iterable[Key]]) -> list[MixedCluster]:
    """The clusters of ``partition`` that hold several people, largest first, each with the identity keys
    found on records of two or more of its people (what glued them)."""
    members: dict[Hashable, list[K]] = defaultdict(list)
    for rec, cluster in partition.items():
        if rec in truth:
            members[cluster].append(rec)
    out = []
    for cluster, recs in members.items():
        per_person = Counter(truth[r] for r in recs)
        if len(per_person) < 2:
            continue
        holders: dict[Key, set[Hashable]] = defaultdict(set)
        for r in recs:
            for k in keys.get(r, ()):
                holders[k].add(truth[r])
        shared = {k: len(ps) for k, ps in holders.items() if len(ps) > 1}
        false = _pairs(len(recs)) - sum(_pairs(n) for n in per_person.values())
        out.append(MixedCluster(cluster, len(recs), len(per_person), false, shared))
    out.sort(key=lambda m: (-m.false_pairs, str(m.cluster)))
    return out


def binomial_ok(hits: int, trials: int, rate: float, sigmas: float = 4.0) -> bool:
    """``hits`` out of ``trials`` is within ``sigmas`` standard deviations of ``rate`` (for tests)."""
    if trials == 0:
        return False
    sd = math.sqrt(rate * (1 - rate) / trials)
    return abs(hits / trials - rate) <= sigmas * sd + 1 / trials


def normalizes(kind: str, value: str) -> bool:
    try:
        normalize_identity(kind, value)
    except NormalizationError:
        return False
    return True
