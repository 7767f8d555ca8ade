"""The retail scenario catalogue through the running pipeline: one test per catalogue file.

One story runs once for the module (real Kafka, PostgreSQL and Redis; resolver, triggers and delivery as
`cdp-hub run` wires them from the catalogue written by ``scenarios init``; outbox channels stand in for the
providers): a product catalogue and a purchase history, about forty customers with consent, the segment
recomputations the daily job does, then a day of live events and jumps of the clock through the waits (hours,
days, a year). Each test then reads what its scenario sent, or did not send, from the outboxes and the
``message.decided`` events.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cdp_hub.connector.ingest import Ingestor
from cdp_hub.delivery.recommend import refresh
from cdp_hub.hotstate import HotState
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import Pipeline, birthday_scheduler, build_stage, segment_engine, trigger_options
from cdp_hub.schema import parse_event
from cdp_hub.schema.events import Event
from cdp_hub.store import RecommendationRepository
from cdp_hub.triggers.catalogues import write_catalogue

from .conftest import _with_db, hub_settings

T0 = datetime(2026, 6, 1, 7, 0, tzinfo=UTC)  # 10:00 in Moscow, a Monday
D = T0 + timedelta(minutes=210)  # the live day starts at 13:30 in Moscow
M = timedelta(minutes=1)
H = timedelta(hours=1)
DAY = timedelta(days=1)
KINDS = {"email": "email", "sms": "phone", "push": "push_token", "messenger": "phone"}

CUSTOMERS = [
    "lapsed61", "lapsed91", "lapsed181", "atrisk", "dormant", "saleshopper", "appless", "apper", "newbie",
    "newcomer", "newcomer2", "carter", "carter2", "browser", "browser2", "searcher", "pricewatcher", "wisher",
    "stockwaiter", "lowcart", "buyer", "bedbuyer", "payer", "payer2", "shipped", "delivered", "returner",
    "slotter", "slotter2", "storebuyer", "birthdayer", "pointer", "tierup", "tierdown", "confirmed",
]
ENGLISH = {"buyer", "newcomer", "delivered", "pointer"}
NO_APP = {"appless", "apper"}  # only e-mail and phone: no push token


@dataclass
class Story:
    messages: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[tuple[str, str, str]] = field(default_factory=list)

    def sent(self, who: str, scenario: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["who"] == who and m["scenario"] == scenario]

    def one(self, who: str, scenario: str) -> dict[str, Any]:
        got = self.sent(who, scenario)
        assert len(got) == 1, (who, scenario, got, self.decided(who))
        return got[0]

    def decided(self, who: str, scenario: str | None = None) -> list[tuple[str, str]]:
        return sorted((s, d) for w, s, d in self.decisions if w == who and (scenario is None or s == scenario))


def identities(who: str) -> list[dict[str, str]]:
    n = CUSTOMERS.index(who)
    out = [{"kind": "email", "value": f"{who}@example.ru"}, {"kind": "phone", "value": f"+7916{n:07d}"}]
    if who not in NO_APP:
        out.append({"kind": "push_token", "value": f"token-{who}-{'x' * 20}"})
    return out


def event(kind: str, who: str | None, at: datetime, rid: str, *, traits: dict[str, Any] | None = None,
          source: str = "shop", **props: Any) -> Event:
    return parse_event({"type": kind, "source": source, "source_record_id": rid, "occurred_at": at.isoformat(),
                        "identities": identities(who) if who else [], "traits": traits or {}, "properties": props})


def product(sku: str, name: str, category: str, price: int, stock: int, at: datetime, *, durable: bool = False,
            rid: str | None = None) -> Event:
    return event("product.updated", None, at, rid or f"p-{sku}-{at.isoformat()}", source="erp", sku=sku,
                 name=name, category_path=["Home", category], price=str(price), currency="RUB",
                 availability={"MSK": stock}, durable=durable, product_url=f"https://shop.example/p/{sku}",
                 image_url=f"https://cdn.shop.example/{sku}.jpg")


def line(sku: str, name: str, category: str, price: int) -> dict[str, Any]:
    return {"sku": sku, "name": name, "category": category, "price": str(price), "quantity": 1}


SOFA = line("SOFA-1", "Диван Осло", "Sofas", 49990)
CUSHION = line("CUSH-1", "Подушка льняная", "Cushions", 1490)
THROW = line("THROW-1", "Плед шерстяной", "Throws", 2990)
BED = line("BED-1", "Кровать Нордик", "Beds", 39990)
MATTRESS = line("MATT-1", "Матрас Комфорт", "Mattresses", 19990)
LAMP = line("LAMP-1", "Лампа настольная", "Lamps", 2490)
MUG = line("MUG-1", "Кружка керамическая", "Kitchenware", 490)


def order(kind: str, who: str, at: datetime, order_id: str, items: list[dict[str, Any]], **props: Any) -> Event:
    total = sum(int(i["price"]) for i in items)
    return event(kind, who, at, f"{kind}-{order_id}", order_id=order_id, items=items, total=str(total),
                 currency="RUB", **props)


def history() -> list[Event]:
    """The catalogue and a month of other customers' orders (no consent: they only feed recommendations)."""
    at = T0 - 40 * DAY
    out = [product("SOFA-1", "Диван Осло", "Sofas", 49990, 10, at, durable=True),
           product("CUSH-1", "Подушка льняная", "Cushions", 1490, 50, at),
           product("THROW-1", "Плед шерстяной", "Throws", 2990, 30, at),
           product("BED-1", "Кровать Нордик", "Beds", 39990, 8, at, durable=True),
           product("MATT-1", "Матрас Комфорт", "Mattresses", 19990, 20, at),
           product("LAMP-1", "Лампа настольная", "Lamps", 2490, 15, at),
           product("MUG-1", "Кружка керамическая", "Kitchenware", 490, 100, at),
           product("CHAIR-1", "Кресло Уют", "Chairs", 15990, 0, at)]
    baskets = [[SOFA, CUSHION], [SOFA, CUSHION, THROW], [SOFA, CUSHION], [SOFA, THROW], [SOFA, CUSHION],
               [BED, MATTRESS], [BED, MATTRESS], [BED, MATTRESS, LAMP], [BED, MATTRESS], [LAMP, MUG], [MUG]]
    for n, basket in enumerate(baskets):
        who = f"hist{n}"
        when = T0 - (30 - n) * DAY
        out += [_anonymous(order("order.placed", "newbie", when, f"h{n}", basket), who),
                _anonymous(order("order.paid", "newbie", when + M, f"h{n}", basket), who)]
    return out


def _anonymous(e: Event, who: str) -> Event:
    """A history buyer of the other customers (identities of their own)."""
    data = e.model_dump(mode="json")
    data["identities"] = [{"kind": "email", "value": f"{who}@example.ru"}]
    data["event_id"] = None
    data["source_record_id"] = f"{who}-{data['source_record_id']}"
    return parse_event(data)


def customers() -> list[Event]:
    """Each customer's first events, two days before the story: consent on every channel (so the welcome of
    their new profile is too old to send)."""
    out = []
    for who in CUSTOMERS:
        if who in ("newcomer", "newcomer2"):
            continue
        traits: dict[str, Any] = {"first_name": who.capitalize(), "locale": "en" if who in ENGLISH else "ru",
                                  "timezone": "Europe/Moscow"}
        if who == "birthdayer":
            traits["birth_date"] = "1990-06-01"
        for n, channel in enumerate(("email", "sms", "push", "messenger")):
            out.append(event("consent.changed", who, T0 - 2 * DAY + n * M, f"consent-{who}-{channel}",
                             traits=traits, channel=channel, status="opted_in", purpose="marketing",
                             evidence={"method": "double_opt_in", "reference": "signup"}))
    return out


def segment_history() -> list[Event]:
    return [
        order("order.paid", "lapsed61", T0 - 61 * DAY, "l61", [MUG]),
        order("order.paid", "lapsed91", T0 - 91 * DAY, "l91", [LAMP]),
        order("order.paid", "lapsed181", T0 - 181 * DAY, "l181", [MUG]),
        event("loyalty.tier_changed", "atrisk", T0 - 200 * DAY, "tier-atrisk", from_tier="silver",
              to_tier="gold", direction="up"),
        order("order.paid", "atrisk", T0 - 20 * DAY, "ar1", [LAMP]),
        *[event("message.sent", "dormant", T0 - d * DAY, f"sent-dormant-{d}", source="esp",
                message_id=f"m-{d}", channel="email") for d in (100, 60, 30)],
        order("order.paid", "saleshopper", T0 - 10 * DAY, "ss1", [MUG]),
        order("order.paid", "appless", T0 - 5 * DAY, "ap1", [MUG]),
        order("order.paid", "apper", T0 - 5 * DAY, "ap2", [MUG]),
        event("app.installed", "apper", T0 - 4 * DAY, "app-apper", platform="android"),
    ]


def live_day() -> list[Event]:
    """The live events, a few minutes before D (processed at D)."""
    return [
        # welcome series
        event("consent.changed", "newcomer", D - 10 * M, "c-newcomer", traits={"first_name": "Nina", "locale": "en"},
              channel="email", status="opted_in", purpose="marketing"),
        event("consent.changed", "newcomer2", D - 10 * M, "c-newcomer2", channel="email", status="opted_in",
              purpose="marketing"),
        order("order.placed", "newcomer2", D - 5 * M, "n2", [MUG]),
        # carts, browsing, searches
        event("cart.updated", "carter", D - 9 * M, "cart-1a", cart_id="cart-1", items=[LAMP], total="2490",
              currency="RUB", checkout_url="https://shop.example/checkout/cart-1"),
        event("cart.updated", "carter", D - 8 * M, "cart-1b", cart_id="cart-1", items=[LAMP, MUG], total="2980",
              currency="RUB", checkout_url="https://shop.example/checkout/cart-1"),
        event("cart.updated", "carter2", D - 9 * M, "cart-2", cart_id="cart-2", items=[MUG], total="490"),
        order("order.placed", "carter2", D - 5 * M, "c2", [MUG]),
        event("product.viewed", "browser", D - 9 * M, "view-b1", sku="BED-1", name="Кровать Нордик", price="39990"),
        event("product.viewed", "browser2", D - 9 * M, "view-b2", sku="MUG-1"),
        event("cart.updated", "browser2", D - 7 * M, "cart-b2", cart_id="cart-b2", items=[MUG], total="490"),
        event("search.performed", "searcher", D - 9 * M, "search-1", query="диван угловой", results_count=12),
        # price drop, back in stock, low stock
        event("product.viewed", "pricewatcher", D - 20 * M, "view-pw", sku="LAMP-1"),
        event("wishlist.added", "wisher", D - 20 * M, "wish-1", sku="LAMP-1"),
        event("product.viewed", "stockwaiter", D - 20 * M, "view-sw", sku="CHAIR-1"),
        event("cart.updated", "lowcart", D - 20 * M, "cart-low", cart_id="cart-low", items=[MATTRESS], total="19990"),
        event("product.viewed", "tierdown", D - 20 * M, "view-td", sku="MATT-1"),  # viewed, not in a cart
    ]


def live_catalogue() -> list[Event]:
    return [product("LAMP-1", "Лампа настольная", "Lamps", 1990, 15, D - 5 * M, rid="lamp-drop"),
            product("CHAIR-1", "Кресло Уют", "Chairs", 15990, 6, D - 4 * M, rid="chair-back"),
            product("MATT-1", "Матрас Комфорт", "Mattresses", 19990, 2, D - 3 * M, rid="matt-low")]


def live_orders() -> list[Event]:
    slot = D + 2 * DAY
    return [
        order("order.placed", "buyer", D - 5 * M, "o-buyer", [SOFA], payment_url="https://pay.example/o-buyer"),
        order("order.paid", "buyer", D - 3 * M, "o-buyer", [SOFA]),
        order("order.placed", "bedbuyer", D - 5 * M, "o-bed", [BED]),
        order("order.paid", "bedbuyer", D - 4 * M, "o-bed", [BED]),
        order("order.placed", "payer", D - 6 * M, "o-payer", [LAMP], payment_url="https://pay.example/o-payer"),
        order("order.placed", "payer2", D - 6 * M, "o-payer2", [LAMP], payment_url="https://pay.example/o-payer2"),
        order("order.cancelled", "payer2", D - 2 * M, "o-payer2", [LAMP]),
        order("order.shipped", "shipped", D - 2 * M, "o-ship", [MUG], carrier="СДЭК",
              tracking_url="https://track.example/o-ship"),
        order("order.delivered", "delivered", D - 2 * M, "o-deliv", [BED],
              warranty_until=(D + 60 * DAY).isoformat()),
        order("order.delivered", "returner", D - 3 * M, "o-ret", [LAMP]),
        order("order.returned", "returner", D - 2 * M, "o-ret", [LAMP]),
        order("order.delivery_scheduled", "slotter", D - 2 * M, "o-slot", [SOFA],
              delivery_slot_start=slot.isoformat(), delivery_slot_end=(slot + 3 * H).isoformat()),
        order("order.delivery_scheduled", "slotter2", D - 3 * M, "o-slot2", [BED],
              delivery_slot_start=slot.isoformat()),
        _rescheduled(order("order.delivery_scheduled", "slotter2", D - 2 * M, "o-slot2", [BED],
                           delivery_slot_start=(slot + DAY).isoformat())),
        _from_erp(order("order.placed", "storebuyer", D - 4 * M, "pos-1", [CUSHION], store_id="MSK-01")),
        _from_erp(order("order.paid", "storebuyer", D - 4 * M + 10 * timedelta(seconds=1), "pos-1", [CUSHION],
                        store_id="MSK-01")),
        event("loyalty.points_earned", "pointer", D - 2 * M, "pts-1", points="350", balance="1200",
              expires_at=(D + 14 * DAY).isoformat(), transaction_id="t1"),
        event("loyalty.tier_changed", "tierup", D - 2 * M, "tier-up", from_tier="silver", to_tier="gold",
              direction="up"),
        event("loyalty.tier_changed", "tierdown", D - 2 * M, "tier-down", from_tier="gold", to_tier="silver",
              direction="down"),
    ]


def _rescheduled(e: Event) -> Event:
    data = e.model_dump(mode="json")
    data["event_id"] = None
    data["source_record_id"] += "-rescheduled"
    return parse_event(data)


def _from_erp(e: Event) -> Event:
    data = e.model_dump(mode="json")
    data["event_id"] = None
    data["source"] = "erp"
    return parse_event(data)


async def _run_story(pg_server: str, template: str, redis_url: str, kafka_bootstrap: str, tmp: Path) -> Story:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(pg_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()
    catalogue = tmp / "catalogue"
    write_catalogue("retail", catalogue)
    outboxes = {ch: tmp / "outbox" / ch for ch in KINDS}
    settings = hub_settings(
        tmp, bus="kafka", pg_dsn=_with_db(pg_server, name), redis_url=redis_url, kafka_bootstrap=kafka_bootstrap,
        scenarios_dir=catalogue / "scenarios", templates_dir=catalogue / "templates",
        segments_dir=catalogue / "segments", default_locale="ru",
        # Priority claims expire by Redis TTL, on the wall clock: the story lives a year in seconds, so the window
        # is a second here (the scenarios under test never compete within one phase).
        priority_window="1s",
        channels={ch: {"type": "outbox", "config": {"directory": str(path), "kind": ch, "address_kind": KINDS[ch]}}
                  for ch, path in outboxes.items()})
    hub = Hub(settings, metrics=Metrics(), hotstate=HotState(redis_url, prefix=f"t{uuid.uuid4().hex[:10]}:"))
    now = [T0]
    hub.clock = lambda: now[0]
    await hub.start()
    story = Story()
    try:
        # The daily birthday scan runs once, below, as its job would (not on the stage's own wall-clock check,
        # which would find the birthday again when the clock jumps a year).
        pipeline = Pipeline(hub, stages=[
            build_stage(hub, "resolver"),
            build_stage(hub, "triggers", trigger_options=trigger_options(hub, daily_jobs=False)),
            build_stage(hub, "delivery")])
        task = asyncio.create_task(pipeline.run())
        ingest = Ingestor(hub)

        async def settle() -> None:
            # Every timer due by now has fired (the stage checks every second), then every stage is idle.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while loop.time() < deadline:
                pending = await hub.store.fetchval(
                    "SELECT count(*) FROM scheduled_triggers WHERE status = 'pending' AND fire_at <= $1",
                    now[0] - 2 * M)
                if not pending:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("timers did not fire in time")
            await pipeline.drain(idle_polls=4, timeout=60)

        async def at(moment: datetime) -> None:
            now[0] = moment
            await asyncio.sleep(1.2)  # the stage's timer check comes round
            await settle()

        try:
            await ingest.publish_events(history())
            await ingest.publish_events(customers() + segment_history())
            await settle()
            await refresh(RecommendationRepository(hub.store), settings, now=T0)
            segments = segment_engine(hub)
            for sid in ("lapsed_60d", "lapsed_90d", "lapsed_180d", "tier_at_risk", "dormant_subscribers"):
                await segments.recompute(sid, as_of=T0)
            await settle()
            await at(T0 + 70 * M)
            await segments.recompute("seasonal_sale_audience", as_of=now[0])
            await settle()
            await at(T0 + 140 * M)
            await segments.recompute("email_only_customers", as_of=now[0])
            await settle()
            await at(D)
            await ingest.publish_events(live_day())
            await settle()
            await ingest.publish_events(live_catalogue() + live_orders())
            await settle()
            await birthday_scheduler(hub).run(D)
            await settle()
            for offset in (3 * H, DAY + 3 * H, 3 * DAY + 3 * H, 7 * DAY + 3 * H, 14 * DAY + 3 * H,
                           30 * DAY + 3 * H, 365 * DAY + 3 * H):
                await at(D + offset)
        finally:
            pipeline.stop()
            await asyncio.wait_for(task, 30)
        addresses = {i["value"]: who for who in CUSTOMERS for i in identities(who)}
        for channel, path in outboxes.items():
            for file in sorted(path.glob("*.json")) if path.exists() else []:
                body = json.loads(file.read_text(encoding="utf-8"))
                body["who"] = addresses.get(body["to"], body["to"])
                body["kind"] = channel
                story.messages.append(body)
        rows = await hub.store.fetch(
            """SELECT d.body->'identities'->0->>'value' AS who, d.body->'properties'->>'scenario' AS scenario,
                      d.body->'properties'->>'decision' AS decision
                 FROM events d WHERE d.type = 'message.decided'""")
        story.decisions = [(addresses.get(r["who"], r["who"]), r["scenario"], r["decision"]) for r in rows]
    finally:
        keys = [k async for k in hub.hotstate.redis.scan_iter(match=hub.hotstate.prefix + "*")]
        if keys:
            await hub.hotstate.redis.delete(*keys)
        await hub.stop()
        admin = await asyncpg.connect(pg_server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    return story


@pytest.fixture(scope="module")
def story(pg_server: str, pg_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    from .conftest import KAFKA_BOOTSTRAP, REDIS_URL, require

    require("Kafka", KAFKA_BOOTSTRAP)
    require("Redis", REDIS_URL.split("//")[1].split("/")[0])
    yield asyncio.run(_run_story(pg_server, pg_template, REDIS_URL, KAFKA_BOOTSTRAP,
                                 tmp_path_factory.mktemp("catalogue-story")))


def text_of(message: dict[str, Any]) -> str:
    return " ".join(str(message.get(k) or "") for k in ("subject", "text", "html"))


# -- one test per catalogue file ---------------------------------------------------------------------------


def test_welcome_series(story: Story) -> None:
    welcome = story.one("newcomer", "welcome")
    assert welcome["kind"] == "email" and welcome["subject"] == "Welcome, Nina!"
    day3 = story.one("newcomer", "welcome_day3")
    assert 'class="products"' in day3["html"] and "Popular now" in day3["text"]
    # an order during the three days cancels the second step; old profiles get no welcome at all
    assert story.sent("newcomer2", "welcome_day3") == []
    assert ("welcome_day3", "suppressed") in story.decided("newcomer2")
    assert story.sent("carter", "welcome") == [] and ("welcome", "too_late") in story.decided("carter")


def test_abandoned_cart(story: Story) -> None:
    message = story.one("carter", "abandoned_cart")  # two updates of one cart: one reminder
    assert message["subject"] == "Вы забыли товары в корзине"
    assert "Лампа настольная" in message["html"] and "Кружка керамическая" in message["html"]
    assert "https://shop.example/checkout/cart-1" in message["text"]
    assert story.sent("carter2", "abandoned_cart") == []
    assert story.decided("carter2", "abandoned_cart") == [("abandoned_cart", "suppressed")]


def test_abandoned_browse(story: Story) -> None:
    message = story.one("browser", "abandoned_browse")
    assert "Вы смотрели" in message["text"] and "Кровать Нордик" in message["html"]
    assert story.sent("browser2", "abandoned_browse") == []  # put it in a cart instead


def test_abandoned_search(story: Story) -> None:
    message = story.one("searcher", "abandoned_search")
    assert "«диван угловой»" in message["text"]
    assert "Популярное сейчас" in message["text"] and 'class="products"' in message["html"]


def test_price_drop(story: Story) -> None:
    for who in ("pricewatcher", "wisher"):  # viewed it, wished for it
        message = story.one(who, "price_drop")
        assert message["subject"] == "Цена на Лампа настольная снизилась"
        assert "990,00" in message["text"] and "2\xa0490,00" in message["text"]
        assert "https://shop.example/p/LAMP-1" in message["html"]
    assert story.sent("browser", "price_drop") == []


def test_back_in_stock(story: Story) -> None:
    message = story.one("stockwaiter", "back_in_stock")
    assert message["subject"] == "Кресло Уют снова в наличии"


def test_low_stock_cart(story: Story) -> None:
    message = story.one("lowcart", "low_stock_cart")
    assert message["kind"] == "push" and "Матрас Комфорт" in message["text"]
    assert story.sent("tierdown", "low_stock_cart") == [] and story.sent("carter", "low_stock_cart") == []


def test_order_confirmation(story: Story) -> None:
    message = story.one("buyer", "order_confirmation")
    assert message["subject"] == "Order o-buyer is paid" and "Диван Осло" in message["text"]
    # a history order from a month ago: too old for a confirmation now
    assert story.sent("lapsed61", "order_confirmation") == []


def test_payment_reminder(story: Story) -> None:
    message = story.one("payer", "payment_reminder")
    assert message["kind"] == "sms" and "https://pay.example/o-payer" in message["text"]
    assert story.sent("payer2", "payment_reminder") == []  # cancelled
    assert story.sent("buyer", "payment_reminder") == []  # paid


def test_order_shipped(story: Story) -> None:
    message = story.one("shipped", "order_shipped")
    assert message["kind"] == "sms" and "https://track.example/o-ship" in message["text"]


def test_order_delivered(story: Story) -> None:
    message = story.one("delivered", "order_delivered")
    assert message["subject"] == "Order o-deliv has been delivered"


def test_delivery_slot_reminder(story: Story) -> None:
    message = story.one("slotter", "delivery_slot_reminder")
    assert message["kind"] == "sms" and "3 июня" in message["text"] and "13:30" in message["text"]
    # rescheduled: one reminder, for the new slot
    moved = story.one("slotter2", "delivery_slot_reminder")
    assert "4 июня" in moved["text"]


def test_review_request(story: Story) -> None:
    message = story.one("delivered", "review_request")
    assert message["subject"] == "How do you like your purchase?" and "Кровать Нордик" in message["text"]
    assert story.sent("returner", "review_request") == []  # returned during the week


def test_cross_sell(story: Story) -> None:
    sofa = story.one("buyer", "cross_sell")
    assert "Goes well with your purchase" in sofa["text"] and "Подушка льняная" in sofa["html"]
    assert "Диван Осло" not in sofa["html"]  # no second sofa
    bed = story.one("bedbuyer", "cross_sell")
    assert "Матрас Комфорт" in bed["html"] and "Кровать Нордик" not in bed["html"]


def test_assembly_offer(story: Story) -> None:
    message = story.one("buyer", "assembly_offer")
    assert "https://shop.example/services/assembly" in message["text"]
    assert story.sent("storebuyer", "assembly_offer") == []  # cushions need no assembly


def test_warranty_reminder(story: Story) -> None:
    message = story.one("delivered", "warranty_reminder")
    assert message["subject"] == "Your warranty ends on July 31, 2026"


def test_birthday(story: Story) -> None:
    message = story.one("birthdayer", "birthday")
    assert message["subject"] == "С днём рождения, Birthdayer!" and "BIRTHDAY15" in message["text"]
    assert 'class="products"' in message["html"]


def test_points_earned(story: Story) -> None:
    message = story.one("pointer", "points_earned")
    assert message["kind"] == "push" and "You earned 350 points. Balance: 1,200." in message["text"]


def test_points_expiring(story: Story) -> None:
    message = story.one("pointer", "points_expiring")
    assert message["subject"] == "Your points expire on June 15, 2026" and "Spend them on" in message["text"]


def test_tier_upgrade(story: Story) -> None:
    assert story.one("tierup", "tier_upgrade")["subject"] == "Ваш новый уровень: gold"
    assert story.sent("tierdown", "tier_upgrade") == []
    assert story.sent("atrisk", "tier_upgrade") == []  # history


def test_tier_at_risk(story: Story) -> None:
    message = story.one("atrisk", "tier_at_risk")
    assert message["subject"] == "Сохраните уровень gold" and "Идеи для следующего заказа" in message["text"]
    assert story.sent("tierup", "tier_at_risk") == []


def test_first_order_anniversary(story: Story) -> None:
    message = story.one("buyer", "first_order_anniversary")
    assert message["subject"] == "A year together!" and "YEAR10" in message["text"]


def test_win_back(story: Story) -> None:
    assert [m["scenario"] for m in story.messages if m["who"] == "lapsed61" and m["scenario"].startswith("win")] \
        == ["win_back_60"]
    assert "COMEBACK10" in story.one("lapsed91", "win_back_90")["text"]
    assert "COMEBACK20" in story.one("lapsed181", "win_back_180")["text"]
    assert story.sent("lapsed181", "win_back_90") == [] and story.sent("lapsed91", "win_back_60") == []
    assert not [m for m in story.messages if m["scenario"] == "win_back"]  # the built-in is switched off
    assert story.sent("saleshopper", "win_back_60") == []


def test_reactivation(story: Story) -> None:
    message = story.one("dormant", "reactivation")
    assert "https://shop.example/account/subscriptions" in message["text"]
    assert [m for m in story.messages if m["scenario"] == "reactivation"] == [message]


def test_app_install_nudge(story: Story) -> None:
    message = story.one("appless", "app_install_nudge")
    assert message["subject"] == "Покупайте быстрее в приложении"
    assert story.sent("apper", "app_install_nudge") == []  # has the app


def test_store_visit_followup(story: Story) -> None:
    message = story.one("storebuyer", "store_visit_followup")
    assert "К вашей покупке подойдёт" in message["text"] and "Диван Осло" in message["html"]
    assert story.sent("buyer", "store_visit_followup") == []  # an online order


def test_return_followup(story: Story) -> None:
    message = story.one("returner", "return_followup")
    assert message["subject"] == "Мы получили ваш возврат" and "10 дней" in message["text"]


def test_nps_survey(story: Story) -> None:
    message = story.one("delivered", "nps_survey")
    assert "https://shop.example/nps" in message["text"]
    assert story.sent("returner", "nps_survey") == []


def test_seasonal_sale(story: Story) -> None:
    message = story.one("saleshopper", "seasonal_sale")
    assert message["subject"] == "Летняя распродажа: скидки до 50%" and "SUMMER20" in message["text"]
    assert 'class="products"' in message["html"]
    assert story.sent("newbie", "seasonal_sale") == []  # never bought
