"""docs/recommendations.md stays true: its templates render (both locales, with and without products) and its
scenario loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cdp_hub.delivery.recommend import template_recommendations
from cdp_hub.delivery.rendering import TemplateRenderer
from cdp_hub.schema.events import parse_event
from cdp_hub.store.recommendations import KINDS
from cdp_hub.triggers.scenario import load_scenarios

DOC = Path(__file__).resolve().parents[1] / "docs" / "recommendations.md"
# a fenced block, and the `templates/NAME/FILE` named in the paragraph before it
TEMPLATE = re.compile(r"\(`templates/([a-z_]+)/([a-z]+)((?:\.[a-z]{2})?)\.j2`\)[^\n]*\n+```jinja\n(.*?)```", re.S)

PRODUCTS = {
    "bought_together": [
        {"sku": "CUSH-1", "name": "Подушка льняная", "price": "990", "old_price": "1290", "currency": "RUB",
         "image_url": "https://shop.example/i/c1.jpg", "product_url": "https://shop.example/p/c1"},
        {"sku": "THROW-1", "name": "Плед", "price": "2490", "currency": "RUB"}],
    "similar": [{"sku": "CUSH-2", "name": "Подушка бархатная", "price": "1290", "currency": "RUB"}],
    "cart": [{"sku": "SOFA-1", "name": "Диван Осло", "price": "49990", "currency": "RUB", "quantity": 1}],
}


def templates() -> list[tuple[str, str, str, str]]:
    found = TEMPLATE.findall(DOC.read_text(encoding="utf-8"))
    assert len(found) >= 3, "the page lost its template examples (or this test its pattern)"
    return found


@pytest.mark.parametrize(("name", "kind", "locale", "source"), templates())
def test_each_template_example_renders_with_and_without_products(
        tmp_path: Path, name: str, kind: str, locale: str, source: str) -> None:
    (tmp_path / name).mkdir()
    (tmp_path / name / f"{kind}{locale}.j2").write_text(source, encoding="utf-8")
    renderer = TemplateRenderer(tmp_path)
    assert renderer.calls_recommend(name)
    locales = [locale.lstrip(".")] if locale else ["ru", "en"]
    for loc in locales:
        full = renderer.render(name, kind, {"_recommendations": PRODUCTS, "profile": {"first_name": "Анна"}},
                               locale=loc)
        empty = renderer.render(name, kind, {"_recommendations": template_recommendations({})}, locale=loc)
        assert full.text.strip() and empty is not None
        if full.html is not None:
            assert 'class="product"' in full.html
        assert full.text != empty.text or full.html != empty.html


def test_the_product_event_and_the_scenario_on_the_page_are_valid(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    [event] = re.findall(r"```json\n(.*?)```", text, re.S)
    parsed = parse_event(event)
    assert parsed.type == "product.updated" and parsed.identities == []
    [scenario] = re.findall(r"```yaml\n(.*?)```", text, re.S)
    (tmp_path / "price_drop.yaml").write_text(scenario, encoding="utf-8")
    [loaded] = load_scenarios([tmp_path], builtin=False)
    assert loaded.trigger.event == "product.price_dropped"


def test_the_page_names_every_kind() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert all(f"| `{kind}` |" in text for kind in KINDS)


def test_the_configuration_on_the_page_is_accepted() -> None:
    import tomllib

    from cdp_hub.config import Settings
    from connectors.ecommerce.connector import EcommerceConfig

    [block] = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    data = tomllib.loads(block)
    settings = Settings(**data)
    assert settings.recommend_min_support == 3 and settings.catalogue_interest_days == 30
    shop = EcommerceConfig.model_validate(settings.connectors["shop"].config)
    assert "Диваны" in shop.durable_categories


def test_the_recommend_commands_run(pg_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import uuid

    from cdp_hub.cli import main

    monkeypatch.setenv("CDP_HUB_POSTGRES_DSN", pg_dsn)
    assert main(["recommend", "refresh"]) == 0
    assert "order lines updated: 0; bought-together pairs: 0; popular rows: 0" in capsys.readouterr().out
    assert main(["recommend", "show", str(uuid.uuid4())]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in shown] == list(KINDS) and all("(nothing)" in line for line in shown)
