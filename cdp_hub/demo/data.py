"""Synthetic, realistic source data for demos and tests: one Russian retailer's five systems.

:func:`generate` invents ``customers`` people and writes what each of the retailer's systems would hold about
them, in that system's own record shape (the shapes the built-in connectors read):

    person ──▶ ecommerce  shop account (email, sometimes phone) or guest orders; orders, refunds,
          │               abandoned checkouts, product views
          ├─▶ crm        contact (crm id + email + phone, traits), consents, a few merges and deletions
          ├─▶ erp        customer master data (ERP code + phone + card), offline receipts and returns
          ├─▶ loyalty    card linked to the phone, points earned/redeemed/expired, tier changes
          └─▶ mobile     SDK batches: install, opens, screens, push token (and refresh), deep links

The same person shows up in several systems under overlapping identities, written the way each system
writes them (``8 (916) 123-45-67`` in the ERP, ``+79161234567`` in the shop, ``" Ivan.Petrov@Mail.ru "``
in the CRM), so identity resolution has real work to do. About 0.5% of the records are deliberately broken
(impossible phone, missing required field) so the dead-letter queue shows up in a demo.

Deterministic for a seed; 1000 customers take a few tens of milliseconds.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

__all__ = ["DEFAULT_END", "SYSTEMS", "generate"]

SYSTEMS = ("ecommerce", "crm", "erp", "loyalty", "mobile")
DEFAULT_END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
"""The default end of the generated period (fixed, so that a seed always gives the same data)."""

_MSK = timezone(timedelta(hours=3))
_BROKEN_SHARE = 0.006

_MALE = ("Александр", "Дмитрий", "Максим", "Сергей", "Андрей", "Алексей", "Артём", "Илья", "Кирилл", "Михаил",
         "Никита", "Матвей", "Роман", "Егор", "Иван", "Владимир", "Павел", "Николай", "Олег", "Тимур")
_FEMALE = ("Анастасия", "Мария", "Анна", "Виктория", "Екатерина", "Наталья", "Марина", "Полина", "София",
           "Дарья", "Алиса", "Ксения", "Елена", "Ольга", "Татьяна", "Ирина", "Юлия", "Светлана", "Вера", "Алёна")
_LAST = ("Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов", "Новиков",
         "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров", "Павлов", "Козлов",
         "Степанов", "Николаев", "Орлов", "Андреев", "Макаров", "Никитин", "Захаров", "Зайцев", "Соловьёв",
         "Борисов", "Яковлев", "Григорьев", "Романов", "Воробьёв", "Сергеев", "Кузьмин", "Фролов")
_PATRONYMIC_BASE = ("Александров", "Дмитриев", "Сергеев", "Андреев", "Алексеев", "Михайлов", "Иванов",
                    "Владимиров", "Павлов", "Николаев", "Олегов", "Викторов", "Юрьев", "Евгеньев")
_CITIES = (("Москва", "101000", 0.30), ("Санкт-Петербург", "190000", 0.15), ("Новосибирск", "630000", 0.06),
           ("Екатеринбург", "620000", 0.06), ("Казань", "420000", 0.06), ("Нижний Новгород", "603000", 0.05),
           ("Челябинск", "454000", 0.04), ("Самара", "443000", 0.04), ("Ростов-на-Дону", "344000", 0.04),
           ("Уфа", "450000", 0.04), ("Краснодар", "350000", 0.05), ("Воронеж", "394000", 0.04),
           ("Пермь", "614000", 0.04), ("Тверь", "170000", 0.03))
_DOMAINS = ("mail.ru", "yandex.ru", "gmail.com", "bk.ru", "inbox.ru", "list.ru", "rambler.ru", "ya.ru")
_MOBILE_CODES = ("903", "905", "909", "910", "912", "915", "916", "917", "919", "925", "926", "929", "950",
                 "951", "952", "953", "960", "961", "977", "985", "999")
_PRODUCTS = (
    ("MLK-032-1L", "Молоко 3,2% 1 л", "89.90", "Молочные продукты"),
    ("KFR-025-900", "Кефир 2,5% 900 г", "79.90", "Молочные продукты"),
    ("TVR-09-200", "Творог 9% 200 г", "119.00", "Молочные продукты"),
    ("CHS-RSS-300", "Сыр Российский 300 г", "329.00", "Сыры"),
    ("BRD-BRD-400", "Хлеб Бородинский 400 г", "65.50", "Хлеб"),
    ("CFE-ARB-1KG", "Кофе в зёрнах Арабика 1 кг", "1499.00", "Чай и кофе"),
    ("TEA-BLK-100", "Чай чёрный листовой 100 г", "249.00", "Чай и кофе"),
    ("CHO-BTR-90", "Шоколад горький 72% 90 г", "159.90", "Сладости"),
    ("APL-GRN-1KG", "Яблоки Гренни Смит 1 кг", "189.00", "Фрукты"),
    ("BNN-1KG", "Бананы 1 кг", "129.00", "Фрукты"),
    ("OIL-SUN-1L", "Масло подсолнечное 1 л", "149.00", "Бакалея"),
    ("BCW-900", "Крупа гречневая 900 г", "109.00", "Бакалея"),
    ("PST-SPG-450", "Спагетти 450 г", "99.00", "Бакалея"),
    ("SHP-HRB-400", "Шампунь травяной 400 мл", "389.00", "Уход"),
    ("TPS-MNT-100", "Зубная паста мятная 100 мл", "199.00", "Уход"),
    ("DTG-GEL-2L", "Гель для стирки 2 л", "749.00", "Бытовая химия"),
    ("NPK-2PLY-8", "Бумажные полотенца 8 рулонов", "459.00", "Бытовая химия"),
    ("KTL-EL-17", "Чайник электрический 1,7 л", "2490.00", "Техника"),
    ("BLN-PRO-600", "Блендер погружной 600 Вт", "3990.00", "Техника"),
    ("PAN-CST-28", "Сковорода чугунная 28 см", "1890.00", "Посуда"),
    ("MUG-CER-350", "Кружка керамическая 350 мл", "299.00", "Посуда"),
    ("JNS-SLM-32", "Джинсы slim, размер 32", "3490.00", "Одежда"),
    ("HDY-GRY-M", "Худи серое, размер M", "2790.00", "Одежда"),
    ("SCK-WL-3", "Носки шерстяные, 3 пары", "590.00", "Одежда"),
)
_STORES = (("S001", "Магазин №1, Тверская"), ("S005", "Магазин №5, Невский пр."),
           ("S012", "Магазин №12, ТЦ Мега"), ("S021", "Магазин №21, ул. Ленина"))
_SCREENS = ("home", "catalog", "catalog/dairy", "product", "cart", "checkout", "profile", "promo/black-friday",
            "search", "orders")
_TIERS = ("Базовый", "Серебряный", "Золотой", "Платиновый")
_TRANSLIT = dict(zip("абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
                     ("a", "b", "v", "g", "d", "e", "e", "zh", "z", "i", "y", "k", "l", "m", "n", "o", "p", "r",
                      "s", "t", "u", "f", "kh", "ts", "ch", "sh", "shch", "", "y", "", "e", "yu", "ya"), strict=True))


def _latin(word: str) -> str:
    return "".join(_TRANSLIT.get(ch, ch) for ch in word.lower())


@dataclass
class _Person:
    index: int
    gender: str
    first: str
    last: str
    middle: str
    birth: datetime
    city: str
    postal: str
    email: str
    phone_digits: str  # ten digits after +7
    shop_id: int | None = None
    crm_id: str | None = None
    erp_code: str | None = None
    card: str | None = None
    device_id: str | None = None
    tier: str = _TIERS[0]
    order_numbers: list[str] = field(default_factory=list)


class _Gen:
    """The generator's state: one random stream, id counters and the output lists."""

    def __init__(self, seed: int, end: datetime, days: int) -> None:
        self.rng = random.Random(seed)
        self.end = end
        self.start = end - timedelta(days=days)
        self.span = (end - self.start).total_seconds()
        self.out: dict[str, list[dict[str, Any]]] = {name: [] for name in SYSTEMS}
        self.order_seq = 0
        self.doc_seq = 0
        self.txn_seq = 0
        self.broken = 0

    # -- primitives ----------------------------------------------------------------------------------

    def when(self, after: datetime | None = None) -> datetime:
        lo = after or self.start
        room = max((self.end - lo).total_seconds(), 60.0)
        return lo + timedelta(seconds=int(self.rng.random() * room))

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def phone_as_written(self, digits: str) -> str:
        """The same number the way people and systems write it in Russia."""
        a, b, c, d = digits[:3], digits[3:6], digits[6:8], digits[8:]
        style = self.rng.randrange(7)
        return (f"8 ({a}) {b}-{c}-{d}", f"+7 {a} {b}-{c}-{d}", f"8{digits}", f"+7({a}){b}{c}{d}",
                f"7-{a}-{b}-{c}-{d}", f"+7{digits}", f"8-{a}-{b}{c}{d}")[style]

    def emit(self, system: str, record: dict[str, Any]) -> None:
        self.out[system].append(record)

    def maybe_break(self, record: dict[str, Any], *, phone_path: tuple[str, ...] | None,
                    required: tuple[str, ...]) -> dict[str, Any]:
        """With a small probability, spoil the record the way real exports do: an impossible phone, or a
        required field left empty."""
        if self.rng.random() >= _BROKEN_SHARE:
            return record
        self.broken += 1
        if phone_path is not None and self.rng.random() < 0.5:
            target = record
            for key in phone_path[:-1]:
                target = target[key]
            target[phone_path[-1]] = self.rng.choice(("123", "8 (000) 12", "+7 916 ABC-DE-FG", "00000"))
        else:
            target = record
            for key in required[:-1]:
                target = target[key]
            target.pop(required[-1], None)
        return record

    # -- people --------------------------------------------------------------------------------------

    def person(self, i: int) -> _Person:
        rng = self.rng
        female = rng.random() < 0.55
        first = rng.choice(_FEMALE if female else _MALE)
        last = rng.choice(_LAST) + ("а" if female else "")
        middle = rng.choice(_PATRONYMIC_BASE) + ("на" if female else "ич")
        city, postal, _ = rng.choices(_CITIES, weights=[c[2] for c in _CITIES])[0]
        birth = datetime(1955 + rng.randrange(50), 1 + rng.randrange(12), 1 + rng.randrange(28), tzinfo=UTC)
        local = rng.choice((f"{_latin(first)}.{_latin(last)}", f"{_latin(last)}{birth.year % 100:02d}",
                            f"{_latin(first)[0]}{_latin(last)}{rng.randrange(100)}", f"{_latin(first)}{i}"))
        email = f"{local}@{rng.choice(_DOMAINS)}"
        phone = rng.choice(_MOBILE_CODES) + f"{rng.randrange(10_000_000):07d}"
        return _Person(i, "female" if female else "male", first, last, middle, birth, city, postal, email, phone)

    # -- systems -------------------------------------------------------------------------------------

    def ecommerce(self, p: _Person) -> None:
        rng = self.rng
        has_account = rng.random() < 0.65
        guest = not has_account and rng.random() < 0.3
        if not (has_account or guest):
            return
        created = self.when()
        if has_account:
            p.shop_id = 7_100_000_000 + p.index
            subscribed = rng.random() < 0.6
            customer: dict[str, Any] = {
                "id": p.shop_id, "email": p.email,
                "phone": f"+7{p.phone_digits}" if rng.random() < 0.5 else None,
                "first_name": p.first, "last_name": p.last, "state": "enabled", "verified_email": True,
                "created_at": _iso_msk(created), "updated_at": _iso_msk(self.when(created)),
                "orders_count": 0, "tags": rng.choice(("", "vip", "opt", "b2c")),
                "default_address": {"city": p.city, "zip": p.postal, "country_code": "RU",
                                    "address1": f"ул. {rng.choice(_LAST)}а, д. {1 + rng.randrange(80)}"},
                "email_marketing_consent": {
                    "state": "subscribed" if subscribed else rng.choice(("not_subscribed", "unsubscribed")),
                    "opt_in_level": "single_opt_in", "consent_updated_at": _iso_msk(created)},
            }
            self.emit("ecommerce", self.maybe_break(customer, phone_path=None, required=("updated_at",)))
        for _ in range(rng.choice((0, 1, 1, 1, 1, 2, 2)) if has_account else 1):
            self.order(p, guest=not has_account)
        if rng.random() < 0.25:
            self.checkout(p)
        client_id = self.uuid()
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            sku, name, price, category = rng.choice(_PRODUCTS)
            view: dict[str, Any] = {
                "id": f"sh-{self.uuid()}", "name": "product_viewed", "timestamp": _iso_utc(self.when()),
                "clientId": client_id, "customerId": p.shop_id,
                "data": {"productVariant": {"sku": sku, "title": name, "price": {"amount": float(price),
                                                                                  "currencyCode": "RUB"},
                                            "product": {"title": name, "type": category}}},
                "context": {"document": {"location": {"href": f"https://shop.example.ru/products/{sku.lower()}"}},
                            "navigator": {"userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"}},
            }
            self.emit("ecommerce", view)

    def _lines(self, n: int) -> tuple[list[dict[str, Any]], float]:
        lines, total = [], 0.0
        for _ in range(n):
            sku, name, price, category = self.rng.choice(_PRODUCTS)
            qty = self.rng.choice((1, 1, 1, 2, 3))
            lines.append({"id": self.rng.getrandbits(40), "sku": sku, "title": name, "quantity": qty,
                          "price": price, "product_type": category})
            total += float(price) * qty
        return lines, round(total, 2)

    def order(self, p: _Person, *, guest: bool) -> None:
        rng = self.rng
        self.order_seq += 1
        lines, total = self._lines(rng.choice((1, 1, 2, 2, 3, 4)))
        created = self.when()
        status = rng.choices(("paid", "pending", "refunded", "partially_refunded"), weights=(80, 10, 5, 5))[0]
        order: dict[str, Any] = {
            "id": 5_200_000_000 + self.order_seq, "name": f"#{1000 + self.order_seq}",
            "order_number": 1000 + self.order_seq,
            "email": p.email if not guest or rng.random() < 0.6 else None,
            "phone": None, "created_at": _iso_msk(created), "updated_at": _iso_msk(self.when(created)),
            "processed_at": _iso_msk(created + timedelta(minutes=rng.randrange(1, 30))),
            "financial_status": status, "fulfillment_status": None, "currency": "RUB",
            "total_price": f"{total:.2f}", "total_discounts": "0.00", "source_name": rng.choice(("web", "web", "pos")),
            "line_items": lines, "cancelled_at": None, "cancel_reason": None, "refunds": [],
            "customer": None if guest else {"id": p.shop_id, "email": p.email, "first_name": p.first,
                                            "last_name": p.last},
            "billing_address": {"first_name": p.first, "last_name": p.last, "city": p.city, "zip": p.postal,
                                "country_code": "RU", "phone": self.phone_as_written(p.phone_digits)},
        }
        if guest and order["email"] is None:
            order["phone"] = self.phone_as_written(p.phone_digits)
            order["billing_address"]["phone"] = None
        if status == "pending" and rng.random() < 0.5:
            order["cancelled_at"] = _iso_msk(self.when(created))
            order["cancel_reason"] = rng.choice(("customer", "inventory", "declined"))
        if status in ("refunded", "partially_refunded"):
            refunded = lines if status == "refunded" else lines[:1]
            order["refunds"] = [{
                "id": 9_300_000_000 + self.order_seq, "created_at": _iso_msk(self.when(created)),
                "note": rng.choice(("не подошёл размер", "брак", "передумал")),
                "refund_line_items": [{"line_item": li, "quantity": li["quantity"],
                                       "subtotal": f"{float(li['price']) * li['quantity']:.2f}"} for li in refunded],
            }]
        p.order_numbers.append(order["name"])
        self.emit("ecommerce", self.maybe_break(order, phone_path=("billing_address", "phone"),
                                                required=("created_at",)))

    def checkout(self, p: _Person) -> None:
        lines, total = self._lines(self.rng.choice((1, 2, 3)))
        created = self.when(self.end - timedelta(days=3))
        self.emit("ecommerce", {
            "id": 3_400_000_000 + p.index, "token": f"ck-{self.uuid()[:18]}", "email": p.email,
            "phone": None, "customer": {"id": p.shop_id} if p.shop_id else None,
            "created_at": _iso_msk(created), "updated_at": _iso_msk(self.when(created)), "completed_at": None,
            "currency": "RUB", "total_price": f"{total:.2f}", "line_items": lines,
            "abandoned_checkout_url": f"https://shop.example.ru/checkouts/{p.index}/recover",
        })

    def crm(self, p: _Person) -> None:
        rng = self.rng
        if rng.random() >= 0.6:
            return
        p.crm_id = str(30_000 + p.index)
        created = self.when()
        updated = self.when(created)
        email = p.email if rng.random() < 0.8 else f"  {p.email.capitalize()} "
        props: dict[str, Any] = {
            "email": email, "firstname": p.first, "lastname": p.last, "middlename": p.middle,
            "phone": self.phone_as_written(p.phone_digits), "mobilephone": None, "city": p.city,
            "date_of_birth": p.birth.date().isoformat() if rng.random() < 0.7 else None,
            "gender": p.gender, "lifecyclestage": rng.choice(("lead", "customer", "customer", "evangelist")),
            "hs_email_optout": "true" if rng.random() < 0.05 else "false", "hs_object_id": p.crm_id,
            "preferred_store": rng.choice(_STORES)[0],
        }
        contact: dict[str, Any] = {"id": p.crm_id, "properties": props, "createdAt": _iso_z(created),
                                   "updatedAt": _iso_z(updated), "archived": False}
        if rng.random() < 0.015:  # a duplicate contact created from a call-centre ticket, merged later
            dup = str(80_000 + p.index)
            self.emit("crm", {"id": dup, "properties": {"phone": f"8{p.phone_digits}", "firstname": p.first},
                              "createdAt": _iso_z(created), "updatedAt": _iso_z(created), "archived": False})
            props["hs_merged_object_ids"] = dup
        self.emit("crm", self.maybe_break(contact, phone_path=("properties", "phone"), required=("id",)))
        for channel in rng.sample(("EMAIL", "SMS", "PUSH"), rng.choice((0, 0, 1, 1, 2))):
            self.emit("crm", {
                "id": f"sub-{p.crm_id}-{channel.lower()}", "contactId": p.crm_id, "channel": channel,
                "status": "SUBSCRIBED" if rng.random() < 0.75 else "UNSUBSCRIBED", "subscriptionType": "marketing",
                "legalBasis": "CONSENT_WITH_NOTICE", "source": rng.choice(("web_form", "mobile_app", "store")),
                "timestamp": _iso_z(self.when(created)),
            })
        if rng.random() < 0.01:
            self.emit("crm", {"eventId": 600_000 + p.index, "subscriptionType": "contact.deletion",
                              "objectId": int(p.crm_id), "occurredAt": int(self.end.timestamp() * 1000) - 3_600_000,
                              "portalId": 4242, "attemptNumber": 0})

    def erp(self, p: _Person) -> None:
        rng = self.rng
        if rng.random() >= 0.5:
            return
        p.erp_code = f"{p.index + 10_000:09d}"
        changed = self.when()
        row = {
            "Код": p.erp_code, "Наименование": f"{p.last} {p.first} {p.middle}", "Фамилия": p.last,
            "Имя": p.first, "Отчество": p.middle, "Телефон": self.phone_as_written(p.phone_digits),
            "ЭлПочта": p.email if rng.random() < 0.4 else "",
            "ДатаРождения": p.birth.strftime("%d.%m.%Y") if rng.random() < 0.6 else "",
            "Пол": "Женский" if p.gender == "female" else "Мужской", "Город": p.city,
            "НомерКарты": p.card or "", "ДатаИзменения": changed.astimezone(_MSK).strftime("%d.%m.%Y %H:%M:%S"),
        }
        self.emit("erp", self.maybe_break(row, phone_path=("Телефон",), required=("ДатаИзменения",)))
        for _ in range(rng.choice((0, 1, 1, 2))):
            self.receipt(p)

    def receipt(self, p: _Person) -> None:
        rng = self.rng
        self.doc_seq += 1
        store_code, store_name = rng.choice(_STORES)
        lines, total = self._lines(rng.choice((1, 2, 3, 5)))
        when = self.when()
        number = f"{store_code}-{self.doc_seq:06d}"
        goods = [{"НомерСтроки": n + 1, "Артикул": li["sku"], "Номенклатура": li["title"],
                  "Количество": li["quantity"], "Цена": float(li["price"]),
                  "Сумма": round(float(li["price"]) * li["quantity"], 2)} for n, li in enumerate(lines)]
        client = {"Код": p.erp_code, "Телефон": self.phone_as_written(p.phone_digits), "НомерКарты": p.card}
        doc = {"Ref_Key": self.uuid(), "Number": number, "Date": when.astimezone(_MSK).strftime("%Y-%m-%dT%H:%M:%S"),
               "ВидДокумента": "ЧекККМ", "Posted": True, "DeletionMark": False,
               "Магазин": {"Код": store_code, "Наименование": store_name}, "Клиент": client,
               "СуммаДокумента": total, "Валюта": "RUB", "Товары": goods}
        self.emit("erp", self.maybe_break(doc, phone_path=("Клиент", "Телефон"), required=("Date",)))
        if rng.random() < 0.07:
            self.doc_seq += 1
            back = goods[:1]
            self.emit("erp", {
                "Ref_Key": self.uuid(), "Number": f"{store_code}-{self.doc_seq:06d}",
                "Date": self.when(when).astimezone(_MSK).strftime("%Y-%m-%dT%H:%M:%S"),
                "ВидДокумента": "ВозвратТоваровОтПокупателя", "Posted": True, "DeletionMark": False,
                "Магазин": {"Код": store_code, "Наименование": store_name}, "Клиент": client,
                "СуммаДокумента": back[0]["Сумма"], "Валюта": "RUB", "ДокументОснование": number, "Товары": back,
            })

    def loyalty(self, p: _Person) -> None:
        rng = self.rng
        if rng.random() >= 0.5:
            return
        digits = f"2775{p.index + 1:012d}"
        p.card = " ".join(digits[i:i + 4] for i in range(0, 16, 4))
        issued = self.when()
        balance = 0
        tier_index = 0
        card = {
            "card_number": p.card, "status": "active", "issued_at": _iso_z(issued), "updated_at": _iso_z(issued),
            "phone": self.phone_as_written(p.phone_digits),
            "holder": {"first_name": p.first, "last_name": p.last, "birth_date": p.birth.date().isoformat(),
                       "gender": "F" if p.gender == "female" else "M",
                       "email": p.email if rng.random() < 0.3 else None},
            "tier": _TIERS[0], "balance": 0,
        }
        self.emit("loyalty", self.maybe_break(card, phone_path=("phone",), required=("card_number",)))
        when = issued
        for _ in range(rng.choice((0, 1, 2, 2, 3))):
            self.txn_seq += 1
            when = self.when(when)
            kind = rng.choices(("accrual", "redemption", "expiration"), weights=(70, 22, 8))[0]
            points = rng.randrange(10, 400) if kind == "accrual" else min(balance, rng.randrange(10, 200))
            if kind != "accrual" and points <= 0:
                kind, points = "accrual", rng.randrange(10, 400)
            balance += points if kind == "accrual" else -points
            txn = {"transaction_id": f"T{self.txn_seq:08d}", "card_number": p.card.replace(" ", ""),
                   "type": kind, "points": points, "balance_after": balance, "created_at": _iso_z(when),
                   "store_id": rng.choice(_STORES)[0], "receipt_id": None,
                   "expires_at": _iso_z(when + timedelta(days=365)) if kind == "accrual" else None}
            self.emit("loyalty", self.maybe_break(txn, phone_path=None, required=("card_number",)))
        if balance > 500 or rng.random() < 0.08:
            tier_index = 1 + rng.randrange(len(_TIERS) - 1)
            p.tier = _TIERS[tier_index]
            self.emit("loyalty", {"id": f"TC-{p.index}", "card_number": p.card, "old_level": _TIERS[0],
                                  "new_level": p.tier, "changed_at": _iso_z(self.when(when)),
                                  "reason": "сумма покупок за квартал"})

    def mobile(self, p: _Person) -> None:
        rng = self.rng
        if rng.random() >= 0.35:
            return
        p.device_id = self.uuid().upper()
        android = rng.random() < 0.6
        installed = self.when()
        t = installed
        token = f"{'fcm' if android else 'apns'}:{self.uuid().replace('-', '')}"
        events: list[dict[str, Any]] = [
            {"id": self.uuid(), "name": "app_install", "ts": _ms(t),
             "params": {"referrer": rng.choice(("google-play", "app-store", "vk-ads", "organic")),
                        "campaign": rng.choice((None, "autumn-sale", "install-bonus"))}},
            {"id": self.uuid(), "name": "push_token", "ts": _ms(t + timedelta(seconds=5)), "params": {"token": token}},
        ]
        for _ in range(rng.choice((1, 1, 1, 2))):
            t = self.when(t)
            events.append({"id": self.uuid(), "name": "app_open", "ts": _ms(t),
                           "params": {"from_push": rng.random() < 0.2}})
            for screen in rng.sample(_SCREENS, rng.choice((1, 1, 2))):
                t += timedelta(seconds=rng.randrange(3, 90))
                events.append({"id": self.uuid(), "name": "screen_view", "ts": _ms(t), "params": {"screen": screen}})
        if rng.random() < 0.25:
            t = self.when(t)
            events.append({"id": self.uuid(), "name": "deep_link", "ts": _ms(t),
                           "params": {"url": "shopapp://promo/black-friday?utm_source=email&utm_campaign=bf2026"}})
        if rng.random() < 0.15:  # the OS rotated the push token
            t = self.when(t)
            new = f"{'fcm' if android else 'apns'}:{self.uuid().replace('-', '')}"
            events.append({"id": self.uuid(), "name": "push_token", "ts": _ms(t),
                           "params": {"token": new, "previous_token": token}})
        batch: dict[str, Any] = {
            "batch_id": self.uuid(), "sent_at": _iso_z(t + timedelta(seconds=30)),
            "app": {"id": "ru.example.shop", "version": rng.choice(("5.1.0", "5.2.1", "5.3.0")), "build": "512"},
            "device": {"id": p.device_id, "platform": "android" if android else "ios",
                       "os_version": rng.choice(("13", "14", "15")) if android else rng.choice(("17.5", "18.1")),
                       "model": rng.choice(("Pixel 7", "Redmi Note 12", "Galaxy A54")) if android else "iPhone 14",
                       "locale": "ru-RU", "timezone": "Europe/Moscow"},
            "user": {"customer_id": p.shop_id} if p.shop_id and rng.random() < 0.8 else {},
            "events": events,
        }
        if rng.random() < _BROKEN_SHARE * 4:  # one bad event in the batch (a screen view without a screen)
            self.broken += 1
            events.append({"id": self.uuid(), "name": "screen_view", "ts": _ms(t), "params": {}})
        self.emit("mobile", batch)


def _iso_msk(ts: datetime) -> str:
    return ts.astimezone(_MSK).isoformat(timespec="seconds")


def _iso_utc(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_z(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def generate(customers: int = 1000, seed: int = 7, *, end: datetime = DEFAULT_END,
             days: int = 60) -> dict[str, list[dict[str, Any]]]:
    """Raw source records of ``customers`` people across the five systems, keyed by connector type.

    Records are in each system's source shape (what :class:`connectors.ecommerce.EcommerceConnector` and
    the others read) and in time order within a system only loosely, as real exports are. Events fall in the
    ``days`` before ``end``. The same ``seed`` always gives the same records.
    """
    gen = _Gen(seed, end, days)
    for i in range(customers):
        person = gen.person(i)
        gen.loyalty(person)  # first, so that ERP master data can name the card
        gen.ecommerce(person)
        gen.crm(person)
        gen.erp(person)
        gen.mobile(person)
    return gen.out
