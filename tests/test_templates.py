"""Templates: lookup per channel kind and locale, blocks, escaping, locale-aware filters, sandbox, errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from cdp_hub.delivery.rendering import TemplateError, TemplateRenderer, parse_locale, template_candidates


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def renderer(tmp_path: Path) -> TemplateRenderer:
    return TemplateRenderer(tmp_path, default_locale="ru")


def test_builtin_welcome_for_each_kind_and_locale() -> None:
    r = TemplateRenderer()
    ctx = {"profile": {"first_name": "Anna"}, "vars": {"bonus": 1500}, "message": {}}
    email_en = r.render("welcome", "email", ctx, locale="en_GB")
    assert email_en.subject == "Welcome, Anna!" and email_en.template_file == "welcome/email.j2"
    assert "1,500 welcome points" in email_en.text and "<b>1,500</b>" in (email_en.html or "")
    email_ru = r.render("welcome", "email", ctx, locale="ru-RU")
    assert email_ru.template_file == "welcome/email.ru.j2"
    assert "1\xa0500 приветственных баллов" in email_ru.text  # CLDR: non-breaking space groups in ru
    assert r.render("welcome", "sms", ctx, locale="ru").text == "Добро пожаловать, Anna! Ваш аккаунт готов."
    push = r.render("welcome", "push", ctx, locale="en")
    assert push.title == "Welcome, Anna!" and push.html is None
    assert r.render("welcome", "webhook", ctx, locale="en").title == "Welcome, Anna!"  # borrows the push file


def test_lookup_order() -> None:
    assert template_candidates("t", "sms", parse_locale("ru_RU"))[:3] == ["t/sms.ru_RU.j2", "t/sms.ru.j2", "t/sms.j2"]
    assert parse_locale("xx-nonsense", "ru").language == "ru"
    assert parse_locale(None, "en").language == "en"


def test_money_and_dates_in_the_customers_locale_and_zone(renderer: TemplateRenderer, tmp_path: Path) -> None:
    write(tmp_path, "order/sms.j2",
          "{{ event.total | money(event.currency) }} | {{ event.at | datetime('short') }} | "
          "{{ event.at | date('d MMMM') }} | {{ event.points | number }} | {{ event.total | money }}")
    ctx = {"event": {"total": Decimal("12345.5"), "currency": "RUB", "at": "2026-03-01T21:30:00Z",
                     "points": 1234567}}
    ru = renderer.render("order", "sms", ctx, locale="ru", timezone="Europe/Moscow").text
    assert ru == "12\xa0345,50\xa0₽ | 02.03.2026, 00:30 | 2 марта | 1\xa0234\xa0567 | 12\xa0345,50\xa0₽"
    en = renderer.render("order", "sms", {**ctx, "currency": "USD"}, locale="en_US", timezone="America/New_York").text
    assert en == "RUB12,345.50 | 3/1/26, 4:30\u202fPM | 1 March | 1,234,567 | $12,345.50"


def test_date_filter_accepts_dates_and_datetimes(renderer: TemplateRenderer, tmp_path: Path) -> None:
    write(tmp_path, "d/sms.j2", "{{ a | date('short') }} {{ b | date('short') }} {{ c | date('short') }}")
    ctx = {"a": date(2026, 5, 9), "b": "2026-05-09", "c": datetime(2026, 5, 9, 23, 0, tzinfo=UTC)}
    assert renderer.render("d", "sms", ctx, locale="ru", timezone="Asia/Vladivostok").text == \
        "09.05.2026 09.05.2026 10.05.2026"


def test_html_block_is_escaped_and_text_blocks_are_not(renderer: TemplateRenderer, tmp_path: Path) -> None:
    write(tmp_path, "x/email.j2", "{% block subject %}{{ v }}{% endblock %}{% block text %}{{ v }}{% endblock %}"
                                  "{% block html %}<p>{{ v }}</p>{% endblock %}")
    out = renderer.render("x", "email", {"v": "Tom & <Jerry>"}, locale="en")
    assert out.subject == "Tom & <Jerry>" and out.text == "Tom & <Jerry>"
    assert out.html == "<p>Tom &amp; &lt;Jerry&gt;</p>"


def test_missing_values_render_empty(renderer: TemplateRenderer, tmp_path: Path) -> None:
    write(tmp_path, "m/sms.j2", "Hi {{ profile.first_name }}{{ profile.address.city }}!")
    assert renderer.render("m", "sms", {"profile": {}}, locale="en").text == "Hi !"


def test_user_directory_overrides_builtins(renderer: TemplateRenderer, tmp_path: Path) -> None:
    write(tmp_path, "welcome/sms.ru.j2", "Свой текст")
    assert renderer.render("welcome", "sms", {}, locale="ru").text == "Свой текст"
    assert renderer.render("welcome", "sms", {}, locale="en").text.startswith("Welcome")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "SecurityError"),  # no Python internals
        ("{{ vars.seen.append(1) }}", "SecurityError"),                # immutable sandbox: no mutation
        ("{% for x in %}", "line 1"),                                   # syntax error, with the line
        ("{{ 'abc' | money('RUB') }}", "not a number"),                # a filter given bad data
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{% block subject %}only a subject{% endblock %}", "neither a 'text' nor an 'html' block"),
    ],
)
def test_template_errors_are_template_errors(renderer: TemplateRenderer, tmp_path: Path, source: str,
                                             message: str) -> None:
    write(tmp_path, "bad/sms.j2", source)
    with pytest.raises(TemplateError, match=message) as info:
        renderer.render("bad", "sms", {"vars": {"seen": []}}, locale="en")
    assert info.value.failure_type == "template_error" and info.value.field == "template"


def test_sandbox_hides_internals(renderer: TemplateRenderer, tmp_path: Path) -> None:
    write(tmp_path, "peek/sms.j2", "[{{ ''.__class__ }}{{ profile.__dict__ }}{{ profile.get.__globals__ }}]")
    assert renderer.render("peek", "sms", {"profile": {"a": 1}}, locale="en").text == "[]"


def test_missing_template_names_where_it_looked(renderer: TemplateRenderer) -> None:
    with pytest.raises(TemplateError, match="no template 'nope' for sms") as info:
        renderer.render("nope", "sms", {}, locale="ru")
    assert "nope/sms.ru.j2" in str(info.value)
