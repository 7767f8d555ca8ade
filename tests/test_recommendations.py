"""Recommendations on real PostgreSQL: the refresh, each kind and its filters, templates, the delivery stage.

The data is a small furniture shop: sofas and beds are durables, cushions and throws go with them.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

from cdp_hub.bus.base import Record
from cdp_hub.bus.memory import MemoryBus
from cdp_hub.channel.base import Channel, OutboundMessage, Receipt
from cdp_hub.delivery.recommend import refresh, template_recommendations
from cdp_hub.delivery.rendering import TemplateRenderer
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import build_stage
from cdp_hub.plugins import PluginInfo
from cdp_hub.schema.events import Event
from cdp_hub.schema.messages import MessageIntent, message_id_for
from cdp_hub.store import RecommendationRepository
from tests.conftest import hub_settings

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
_offsets = itertools.count()

CATALOGUE = [
    # sku, name, category path, price, availability, durable
    ("SOFA-OSLO", "Диван Осло", ["Мебель", "Диваны"], "49990", {"msk": 4}, True),
    ("SOFA-BERGEN", "Диван Берген", ["Мебель", "Диваны"], "45990", {"msk": 2}, True),
    ("SOFA-LUX", "Диван Люкс", ["Мебель", "Диваны"], "150000", {"msk": 1}, True),
    ("CUSH-1", "Подушка льняная", ["Текстиль", "Подушки"], "990", {"msk": 40}, False),
    ("CUSH-2", "Подушка бархатная", ["Текстиль", "Подушки"], "1290", {"msk": 25}, False),
    ("THROW-1", "Плед шерстяной", ["Текстиль", "Пледы"], "2490", {"msk": 10}, False),
    ("BED-1", "Кровать Сканди", ["Мебель", "Кровати"], "39990", {"msk": 3}, True),
    ("MATT-1", "Матрас Ортопед", ["Мебель", "Матрасы"], "19990", {"msk": 6}, True),
    ("LAMP-1", "Лампа настольная", ["Освещение", "Лампы"], "2990", {"msk": 0, "spb": 5}, False),
]
HISTORY = [  # baskets of other customers: (how many customers, SKUs)
    (6, ["SOFA-OSLO", "CUSH-1"]),
    (4, ["BED-1", "MATT-1"]),
    (3, ["SOFA-BERGEN", "THROW-1", "CUSH-2"]),
    (3, ["LAMP-1", "CUSH-1"]),
    (1, ["SOFA-LUX", "MATT-1"]),  # once: below the minimum support
]


def _event(type_: str, email: str | None, at: datetime, rid: str, props: dict[str, Any],
           traits: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "source": "shop", "source_record_id": rid, "occurred_at": at.isoformat(),
                           "properties": props, "traits": traits or {}}
    if email:
        out["identities"] = [{"kind": "email", "value": email}, {"kind": "phone", "value": _phone(email)}]
    return out


def _phone(email: str) -> str:
    return "+7916" + str(abs(hash(email)) % 10_000_000).zfill(7)


def catalogue_events() -> list[dict[str, Any]]:
    return [_event("product.updated", None, NOW - timedelta(days=30), f"p-{sku}",
                   {"sku": sku, "name": name, "category_path": path, "price": price, "currency": "RUB",
                    "availability": avail, "durable": durable, "image_url": f"https://shop.example/i/{sku}.jpg",
                    "product_url": f"https://shop.example/p/{sku}"})
            for sku, name, path, price, avail, durable in CATALOGUE]


def history_events() -> list[dict[str, Any]]:
    out = []
    n = 0
    for count, skus in HISTORY:
        for _ in range(count):
            n += 1
            out.append(_event("order.placed", f"buyer{n}@example.com", NOW - timedelta(days=20 - n % 10), f"h-{n}",
                              {"order_id": f"h-{n}", "items": [{"sku": s, "quantity": 1} for s in skus]},
                              {"city": "msk"}))
    return out


def anna_events() -> list[dict[str, Any]]:
    email = "anna@example.com"
    return [
        _event("customer.updated", email, NOW - timedelta(days=5), "anna", {}, {"city": "msk", "locale": "ru"}),
        _event("order.placed", email, NOW - timedelta(days=1), "a-o1",
               {"order_id": "a-o1", "items": [{"sku": "SOFA-OSLO", "quantity": 1}]}),
        _event("product.viewed", email, NOW - timedelta(hours=20), "a-v1", {"sku": "SOFA-BERGEN"}),
        _event("product.viewed", email, NOW - timedelta(hours=19), "a-v2", {"sku": "LAMP-1"}),
        _event("product.viewed", email, NOW - timedelta(hours=18), "a-v3", {"sku": "THROW-1"}),
        _event("cart.updated", email, NOW - timedelta(hours=2), "a-c1",
               {"cart_id": "c1", "items": [{"sku": "CUSH-2", "quantity": 2}]}),
    ]


async def feed(hub: Hub, events: list[dict[str, Any]]) -> None:
    resolver = build_stage(hub, "resolver")
    out = await resolver.handle([Record(hub.topics.events, 0, next(_offsets), None, orjson.dumps(e))
                                 for e in events])
    assert out.dead == []


async def profile_of(hub: Hub, email: str) -> uuid.UUID:
    from cdp_hub.store import ProfileRepository

    found = (await ProfileRepository(hub.store).all_identities()).get(("email", email))
    assert found is not None
    return found


@pytest.fixture
async def shop(hub: Hub) -> Hub:
    await feed(hub, catalogue_events())
    await feed(hub, history_events())
    await feed(hub, anna_events())
    result = await refresh(RecommendationRepository(hub.store), hub.settings, now=NOW)
    assert result.order_lines == 6 * 2 + 4 * 2 + 3 * 3 + 3 * 2 + 2 + 1
    return hub


async def test_bought_together_keeps_pairs_with_enough_support(shop: Hub) -> None:
    repo = RecommendationRepository(shop.store)
    assert [p["other_sku"] for p in await repo.pairs_of("SOFA-OSLO")] == ["CUSH-1"]
    assert {p["other_sku"] for p in await repo.pairs_of("CUSH-2")} == {"SOFA-BERGEN", "THROW-1"}
    assert await repo.pairs_of("SOFA-LUX") == []  # bought with a mattress once: below min support
    [cush] = [p for p in await repo.pairs_of("SOFA-OSLO")]
    assert cush["together"] == 6 and 0 < cush["score"] <= 1 and cush["lift"] > 1


async def test_damping_moves_partners_between_frequent_and_rare(shop: Hub) -> None:
    repo = RecommendationRepository(shop.store)
    since = NOW - timedelta(days=365)
    # bought with a cushion: the sofa 6 times (7 orders in all), the lamp 3 times (3 orders in all)
    await repo.rebuild(since=since, min_support=3, damping=0.0)
    assert [p["other_sku"] for p in await repo.pairs_of("CUSH-1")] == ["SOFA-OSLO", "LAMP-1"]
    await repo.rebuild(since=since, min_support=3, damping=0.9)  # a fraction: it must reach the SQL as one
    assert [p["other_sku"] for p in await repo.pairs_of("CUSH-1")] == ["LAMP-1", "SOFA-OSLO"]


async def test_each_kind_for_a_customer_with_its_filters(shop: Hub) -> None:
    anna = await profile_of(shop, "anna@example.com")
    nobody = uuid.uuid4()
    recs = await RecommendationRepository(shop.store).for_profiles([anna, nobody], now=NOW)
    skus = {kind: [p.sku for p in products] for kind, products in recs[anna].items()}
    # viewed, not bought: the other sofa is out (a sofa was bought yesterday), so is the lamp (none in msk)
    assert skus["viewed"] == ["THROW-1"]
    assert skus["cart"] == ["CUSH-2"] and recs[anna]["cart"][0].quantity == 2
    assert recs[anna]["cart"][0].price is not None
    # partners of the cart, the last order and the views; never a second sofa, never what is in the cart
    assert set(skus["bought_together"]) == {"CUSH-1", "THROW-1"}
    assert skus["similar"] == ["CUSH-1"]  # the same category, within 30% of the cushion's price
    assert "SOFA-BERGEN" not in skus["popular"] and "LAMP-1" not in skus["popular"]
    assert all(p.name and p.product_url for ps in recs[anna].values() for p in ps)
    # nothing known of a customer: empty lists, and popular only (all regions)
    assert recs[nobody]["viewed"] == recs[nobody]["cart"] == recs[nobody]["bought_together"] == []


def test_templates_render_product_blocks_and_short_lists(tmp_path: Path) -> None:
    (tmp_path / "cross_sell").mkdir()
    (tmp_path / "cross_sell" / "email.j2").write_text(
        "{% block subject %}К дивану{% endblock %}"
        "{% block html %}{% set items = recommend('bought_together', limit=2) %}"
        "{% if items %}{{ items | product_blocks }}{% else %}<p>nothing</p>{% endif %}{% endblock %}"
        "{% block text %}{{ recommend('bought_together') | product_list }}{% endblock %}", encoding="utf-8")
    (tmp_path / "cross_sell" / "sms.en.j2").write_text(
        "You may like: {{ recommend('bought_together', limit=1, max_price=1000) | product_list }}", encoding="utf-8")
    renderer = TemplateRenderer(tmp_path)
    assert renderer.calls_recommend("cross_sell") and not renderer.calls_recommend("welcome")
    products = {"bought_together": [
        {"sku": "CUSH-1", "name": "Подушка <льняная>", "price": "990", "old_price": "1290", "currency": "RUB",
         "image_url": "https://shop.example/i/c1.jpg", "product_url": "https://shop.example/p/c1"},
        {"sku": "THROW-1", "name": "Плед", "price": "2490", "currency": "RUB",
         "product_url": "javascript:alert(1)", "image_url": "data:text/html,x"}]}
    email = renderer.render("cross_sell", "email", {"_recommendations": products}, locale="ru")
    assert email.html is not None and email.html.count('class="product"') == 2
    assert "Подушка &lt;льняная&gt;" in email.html and "<s" in email.html  # escaped; the old price crossed out
    assert "javascript:" not in email.html and "data:" not in email.html  # only http(s) links and pictures
    assert email.text == "Подушка <льняная> — 990,00\xa0₽; Плед — 2\xa0490,00\xa0₽"
    sms = renderer.render("cross_sell", "sms", {"_recommendations": products}, locale="en")
    assert sms.text.startswith("You may like: Подушка <льняная> — RUB") and sms.text.endswith("990.00")
    empty = renderer.render("cross_sell", "email", {"_recommendations": template_recommendations({})}, locale="ru")
    assert empty.html == "<p>nothing</p>"


class RecordingSms(Channel):
    name: ClassVar[str] = "rec_sms_reco"
    kind = "sms"
    address_kind = "phone"
    sent: ClassVar[list[OutboundMessage]] = []

    async def send(self, message: OutboundMessage) -> Receipt:
        type(self).sent.append(message)
        return Receipt(message_id=message.message_id, status="sent", provider="rec")


@pytest.fixture
async def rhub(tmp_path: Path, pg_dsn: str, redis_url: str) -> AsyncIterator[Hub]:
    templates = tmp_path / "templates"
    (templates / "cross_sell").mkdir(parents=True)
    (templates / "cross_sell" / "sms.j2").write_text(
        "{% set items = recommend('bought_together', limit=2) %}"
        "{% if items %}К покупке: {{ items | product_list }}{% else %}Спасибо за покупку!{% endif %}",
        encoding="utf-8")
    h = Hub(hub_settings(tmp_path, pg_dsn=pg_dsn, redis_url=redis_url, templates_dir=templates),
            bus=MemoryBus(), metrics=Metrics())
    h.registry.channels[RecordingSms.name] = PluginInfo(RecordingSms.name, RecordingSms, "tests", None, None)
    RecordingSms.sent = []
    await h.start()
    yield h
    await h.stop()
    h.registry.channels.pop(RecordingSms.name, None)


async def test_the_delivery_stage_loads_recommendations_for_its_batch(rhub: Hub) -> None:
    await feed(rhub, catalogue_events())
    await feed(rhub, history_events())
    await feed(rhub, anna_events())
    await refresh(RecommendationRepository(rhub.store), rhub.settings, now=NOW)
    anna = await profile_of(rhub, "anna@example.com")
    buyer = await profile_of(rhub, "buyer7@example.com")  # bought a bed and a mattress: nothing goes with both

    def intent(pid: uuid.UUID) -> MessageIntent:
        trigger = str(uuid.uuid4())
        return MessageIntent(message_id=message_id_for("cross_sell", trigger, str(pid)), profile_id=str(pid),
                             scenario="cross_sell", channel=RecordingSms.name, template="cross_sell",
                             trigger_event_id=trigger, category="transactional")

    stage = build_stage(rhub, "delivery")
    stage.ctx = type(stage.ctx)(**{**stage.ctx.__dict__, "clock": lambda: NOW})
    await stage.handle([Record(rhub.topics.messages, 0, next(_offsets), None, intent(p).model_dump_json().encode())
                        for p in (anna, buyer)])
    texts = {m.profile_id: m.text for m in RecordingSms.sent}
    assert texts[str(anna)].startswith("К покупке: ") and "Подушка льняная" in texts[str(anna)]
    assert texts[str(buyer)] == "Спасибо за покупку!"


def test_derived_events_are_profile_events() -> None:
    # the resolver publishes these on cdp.profile-events: the payload model is registered
    event = Event.model_validate({"type": "product.price_dropped", "source": "cdp-hub", "occurred_at": NOW,
                                  "identities": [{"kind": "email", "value": "a@example.com"}],
                                  "properties": {"sku": "X", "change_id": "c", "price": "1"},
                                  "profile_id": uuid.uuid4()})
    assert event.properties["sku"] == "X"
