"""The retail scenario catalogue as files: `scenarios init` writes it, `scenarios validate` passes on it, every
template renders in English and Russian for every channel kind its scenarios use, and
docs/scenario-catalogue.md lists exactly its files and scenarios. (The pipeline tests are in
test_scenario_catalogue_pipeline.py.) Also the engine mechanisms the catalogue added: send_at, conditions
through lists, low-stock changes."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cdp_hub.delivery.rendering import TemplateRenderer
from cdp_hub.errors import ConfigurationError
from cdp_hub.triggers.catalogues import catalogue_files, catalogue_names, write_catalogue
from cdp_hub.triggers.scenario import Condition, Scenario, load_scenarios

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdp_hub.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd)}, timeout=120)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("retail")
    write_catalogue("retail", target)
    return target


def test_init_writes_the_catalogue_and_validate_passes_on_it(tmp_path: Path) -> None:
    target = tmp_path / "retail"
    done = cli("scenarios", "init", "--catalogue", "retail", str(target), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "scenarios_dir" in done.stdout and "templates_dir" in done.stdout and "segments_dir" in done.stdout
    assert len(list((target / "scenarios").glob("*.yaml"))) == 29
    checked = cli("scenarios", "validate", str(target), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count("\nok  ") + checked.stdout.startswith("ok  ") == 32
    assert "warning" not in checked.stderr
    # the scenarios folder alone validates too (its templates and segments are found beside it)
    assert cli("scenarios", "validate", str(target / "scenarios"), cwd=tmp_path).returncode == 0
    # a second init does not overwrite what the retailer edited
    again = cli("scenarios", "init", "--catalogue", "retail", str(target), cwd=tmp_path)
    assert again.returncode != 0 and "--force" in again.stderr
    assert cli("scenarios", "init", "--catalogue", "retail", str(target), "--force", cwd=tmp_path).returncode == 0


def test_validate_fails_on_a_broken_catalogue_scenario(tmp_path: Path) -> None:
    write_catalogue("retail", tmp_path)
    cart = tmp_path / "scenarios" / "abandoned_cart.yaml"
    cart.write_text(cart.read_text(encoding="utf-8").replace("template: abandoned_cart", "template: abandoned_kart"),
                    encoding="utf-8")
    done = cli("scenarios", "validate", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 1 and "no template 'abandoned_kart'" in done.stderr


def test_unknown_catalogue_is_a_configuration_error(tmp_path: Path) -> None:
    assert catalogue_names() == ["retail"]
    with pytest.raises(ConfigurationError, match="no scenario catalogue 'grocery'"):
        write_catalogue("grocery", tmp_path)


def _context(scenario: Scenario) -> dict[str, Any]:
    """A realistic template context for a scenario's trigger: an event with every property a catalogue
    template reads, a profile, the scenario's vars and a recommendation of every kind."""
    product = {"sku": "SOFA-1", "name": "Диван Осло", "price": "49990", "old_price": "59990", "currency": "RUB",
               "product_url": "https://shop.example/p/SOFA-1", "image_url": "https://cdn.shop.example/SOFA-1.jpg"}
    properties = {
        "order_id": "A-1001", "total": "51480", "currency": "RUB", "cart_id": "c1",
        "items": [{"sku": "SOFA-1", "name": "Диван Осло", "quantity": "1", "price": "49990"},
                  {"sku": "CUSH-1", "name": "Подушка", "quantity": "2", "price": "745"}],
        "checkout_url": "https://shop.example/checkout", "payment_url": "https://pay.example/A-1001",
        "tracking_url": "https://track.example/A-1001", "carrier": "СДЭК",
        "delivery_slot_start": "2026-06-03T07:00:00Z", "delivery_slot_end": "2026-06-03T10:00:00Z",
        "warranty_until": "2027-06-01T00:00:00Z", "query": "диван", "results_count": 12,
        "sku": "SOFA-1", "name": "Диван Осло", "price": "44990", "previous_price": "49990",
        "product_url": "https://shop.example/p/SOFA-1", "points": "350", "balance": "1200",
        "expires_at": "2026-06-15T00:00:00Z", "from_tier": "silver", "to_tier": "gold", "segment": "x",
    }
    return {"profile": {"first_name": "Анна", "loyalty_tier": "gold", "profile_id": "p1"},
            "event": {"type": scenario.trigger.event, "properties": properties},
            "vars": scenario.vars, "scenario": scenario.id,
            "message": {"message_id": "m1", "channel": "email", "unsubscribe_url": "https://shop.example/u/m1"},
            "_recommendations": {kind: [product] for kind in ("viewed", "cart", "bought_together", "similar",
                                                                "popular")}}


def test_every_template_renders_in_both_locales_for_every_channel_kind_used(catalogue: Path) -> None:
    scenarios = load_scenarios([catalogue / "scenarios"], builtin=False)
    renderer = TemplateRenderer(catalogue / "templates", default_locale="ru")
    rendered = 0
    for scenario in scenarios:
        for kind in (scenario.channel, *scenario.fallbacks):
            # the catalogue's channels are named after their kinds (the consent channels)
            assert kind in ("email", "sms", "push", "messenger"), scenario.id
            for locale in ("ru", "en"):
                message = renderer.render(scenario.template, kind, _context(scenario), locale=locale,
                                          timezone="Europe/Moscow")
                where = f"{scenario.id} {kind} {locale}"
                # the catalogue's own file, not a built-in or another locale's
                suffix = f"{kind}.ru.j2" if locale == "ru" else f"{kind}.j2"
                assert message.template_file == f"{scenario.template}/{suffix}", where
                assert message.text.strip(), where
                assert "{{" not in message.text and "{%" not in message.text, where
                cyrillic = bool(re.search("[а-яё]", re.sub(r"Диван Осло|Подушка|Анна|СДЭК|диван", "",
                                                           message.text + (message.subject or ""))))
                assert cyrillic == (locale == "ru"), where
                if kind == "email":
                    assert message.subject and message.html and message.html.startswith("<html>"), where
                    if scenario.category == "marketing":
                        assert "https://shop.example/u/m1" in message.html, where
                if kind == "push":
                    assert message.title, where
                rendered += 1
    assert rendered == 136  # 32 scenarios x their channel kinds x 2 locales


def test_recommendation_blocks_render_as_cards_in_email_and_as_a_line_in_short_texts(catalogue: Path) -> None:
    renderer = TemplateRenderer(catalogue / "templates")
    scenario = next(s for s in load_scenarios([catalogue / "scenarios"], builtin=False) if s.id == "cross_sell")
    email = renderer.render("cross_sell", "email", _context(scenario), locale="ru")
    assert 'class="products"' in email.html and "Дополните покупку" in email.text  # type: ignore[operator]
    push = renderer.render("cross_sell", "push", _context(scenario), locale="en")
    assert "Диван Осло — 49,990.00" in push.text or "Диван Осло — RUB" in push.text
    # nothing bought together: the e-mail falls back to what is popular
    context = _context(scenario)
    context["_recommendations"] = {**context["_recommendations"], "bought_together": []}
    fallback = renderer.render("cross_sell", "email", context, locale="en")
    assert "Popular now" in fallback.text and 'class="products"' in fallback.html  # type: ignore[operator]


def test_the_catalogue_doc_lists_exactly_the_files_and_scenarios() -> None:
    doc = (ROOT / "docs" / "scenario-catalogue.md").read_text(encoding="utf-8")
    files = {Path(rel).stem for rel in catalogue_files("retail") if rel.startswith("scenarios/")}
    documented_files = set(re.findall(r"^### `([a-z0-9_]+)\.yaml`", doc, flags=re.M))
    assert documented_files == files, (sorted(files - documented_files), sorted(documented_files - files))
    ids = {s.id for s in load_scenarios([_scenarios_dir()], builtin=False)}
    documented_ids = set(re.findall(r"^\| `([a-z0-9_]+)` \|", doc, flags=re.M))
    assert documented_ids == ids, (sorted(ids - documented_ids), sorted(documented_ids - ids))
    segments = {Path(rel).stem for rel in catalogue_files("retail") if rel.startswith("segments/")}
    for segment in segments:
        assert f"`{segment}`" in doc, segment
    assert "docs/scenario-catalogue.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def _scenarios_dir() -> Path:
    return ROOT / "cdp_hub" / "triggers" / "catalogues" / "retail" / "scenarios"


# -- the mechanisms the catalogue needed ---------------------------------------------------------------------


def test_send_at_is_relative_to_a_time_on_the_event() -> None:
    scenario = Scenario.model_validate({
        "id": "slot", "trigger": {"event": "order.delivery_scheduled"}, "channel": "sms", "template": "t",
        "send_at": {"field": "event.properties.delivery_slot_start", "before": "1d"}})
    at = datetime(2026, 6, 1, 9, tzinfo=UTC)
    assert scenario.delayed
    assert scenario.fire_time(at, {"properties": {"delivery_slot_start": "2026-06-03T10:00:00Z"}}) == \
        datetime(2026, 6, 2, 10, tzinfo=UTC)
    assert scenario.fire_time(at, {"properties": {}}) is None
    assert scenario.fire_time(at, {"properties": {"delivery_slot_start": "soon"}}) is None
    with pytest.raises(ValueError, match="either a delay"):
        Scenario.model_validate({"id": "x", "trigger": {"event": "order.placed"}, "channel": "sms",
                                 "template": "t", "delay": "1h", "send_at": {"field": "event.properties.x"}})


def test_a_condition_path_through_a_list_collects_every_element() -> None:
    order = {"event": {"properties": {"items": [{"sku": "a", "category": "Sofas"}, {"sku": "b"}]}}}
    assert Condition(field="event.properties.items.category", op="in", value=["Beds", "Sofas"]).matches(order)
    assert not Condition(field="event.properties.items.category", op="in", value=["Beds"]).matches(order)
    assert Condition(field="event.properties.items.category", op="not_in", value=["Beds"]).matches(order)
    assert Condition(field="event.properties.items.category", op="contains", value="Sofas").matches(order)
    assert not Condition(field="event.properties.items.sku", op="contains", value="c").matches(order)
    # a plain value keeps its meaning
    assert Condition(field="event.properties.sku", op="in", value=["a"]).matches({"event": {"properties": {"sku": "a"}}})


async def test_low_stock_is_a_change_when_the_stock_falls_to_the_threshold(store: Any) -> None:
    from cdp_hub.store.products import ProductRepository, ProductUpdate

    repo = ProductRepository(store)

    def update(stock: int, minute: int) -> ProductUpdate:
        return ProductUpdate.from_payload(uuid.uuid4(), datetime(2026, 6, 1, 9, minute, tzinfo=UTC), "erp",
                                          {"sku": "MATT-1", "price": "100", "availability": {"MSK": stock}})

    assert await repo.apply([update(20, 0)], low_stock=3) == []
    assert [c.kind for c in await repo.apply([update(5, 1)], low_stock=3)] == []
    assert [c.kind for c in await repo.apply([update(2, 2)], low_stock=3)] == ["low_stock"]
    assert [c.kind for c in await repo.apply([update(1, 3)], low_stock=3)] == []  # already low
    assert [c.kind for c in await repo.apply([update(10, 4)], low_stock=0)] == []
    assert [c.kind for c in await repo.apply([update(3, 5)], low_stock=0)] == []  # switched off


def test_a_deployment_pointing_only_its_scenarios_at_the_catalogue_fails_to_start(catalogue: Path) -> None:
    from cdp_hub.config import Settings
    from cdp_hub.triggers.cli import check_scenarios

    # templates_dir and segments_dir not set: `cdp-hub run` would not find them, so the check must not either
    with pytest.raises(ConfigurationError, match="no template 'welcome_day3'"):
        check_scenarios(Settings(scenarios_dir=catalogue / "scenarios"))
    configured = Settings(scenarios_dir=catalogue / "scenarios", templates_dir=catalogue / "templates",
                          segments_dir=catalogue / "segments")
    assert len(check_scenarios(configured)) == 33  # the catalogue's 32 and the built-in consent_confirmation
