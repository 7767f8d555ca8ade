"""Message templates: Jinja2 in a sandbox, one file per template, channel kind and locale.

    welcome/email.ru.j2  ─┐   lookup for kind "email", locale "ru_RU":
    welcome/email.j2     ─┤     email.ru_RU.j2 → email.ru.j2 → email.j2   (user directory first, then built-ins)
    welcome/sms.j2       ─┘

A template file holds named blocks, one per part of the message: ``subject``, ``text`` and ``html`` for e-mail,
``text`` for SMS, ``title`` and ``text`` (and optionally ``url``) for push. A file without blocks is all
``text``. The ``html`` block is rendered with HTML autoescaping, every other block without it (a text part
or an SMS must not contain ``&amp;``), so each block is rendered by its own environment over the same files.

Templates get ``profile`` (Golden Record traits and ``profile_id``), ``event`` (the trigger event),
``vars`` (scenario variables), ``scenario``, ``message`` (``message_id``, ``channel``, ``unsubscribe_url``),
``locale`` and ``timezone``; filters ``money``, ``number``, ``date``, ``datetime`` and ``time`` format in the
customer's locale and time zone (Babel: CLDR data, so "1 234,50 ₽" for ru and "RUB 1,234.50" for en).

Product recommendations: ``recommend(kind, limit=4, max_price=None, min_price=None)`` returns a list of
products (``sku``, ``name``, ``price``, ``old_price``, ``currency``, ``image_url``, ``product_url``, ...; kinds
in :mod:`cdp_hub.store.recommendations`), empty when there is nothing to offer, so ``{% if not recommend(...) %}``
can leave a block out, or ``{{ skip("nothing to offer") }}`` drop the whole message (a ``suppressed`` decision). ``| product_blocks`` renders them as an HTML block of cards (e-mail), ``| product_list``
as one short line (SMS, push, messenger). The delivery stage loads them for the whole batch before rendering.

They run in Jinja's immutable sandbox: a template cannot reach Python internals or mutate its context.
Any failure to find, compile or render a template is a :class:`TemplateError` (the message goes to the
dead-letter queue with the reason; delivery goes on).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from babel import numbers as babel_numbers
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from cdp_hub.delivery.recommend import pick
from cdp_hub.errors import RecordError

__all__ = ["RenderedMessage", "TemplateError", "TemplateRenderer", "parse_locale", "template_candidates"]

BLOCKS = ("subject", "text", "html", "title", "url")
# A channel kind without its own template file borrows one of these (a webhook push uses the push text; a
# messenger the SMS text, which stands alone, unlike a push text under its title).
_KIND_FALLBACKS: dict[str, tuple[str, ...]] = {"messenger": ("sms", "push"), "webhook": ("push", "sms"),
                                               "other": ("push", "sms")}


class TemplateError(RecordError):
    """A template is missing, does not compile, or failed while rendering this message."""

    failure_type = "template_error"


class MessageSkipped(Exception):
    """The template decided this message is not worth sending: ``{{ skip("nothing to offer") }}``, typically
    when a recommendation came back empty. Delivery records it as a ``suppressed`` decision, not a failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _skip(reason: object = "the template skipped it") -> NoReturn:
    raise MessageSkipped(str(reason)[:300])


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """The parts of one rendered message (``None``: the template has no such block)."""

    template_file: str
    text: str
    subject: str | None = None
    html: str | None = None
    title: str | None = None
    url: str | None = None


@functools.lru_cache(maxsize=256)
def parse_locale(value: str | None, default: str = "en") -> Locale:
    """A Babel locale from ``ru``, ``ru_RU`` or ``ru-RU``; the default when missing or unknown (cached)."""
    for candidate in (value, default, "en"):
        if not candidate:
            continue
        try:
            return Locale.parse(candidate.replace("-", "_"))
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    raise AssertionError("unreachable: 'en' is always a known locale")  # pragma: no cover


def template_candidates(name: str, kind: str, locale: Locale) -> list[str]:
    """File names to try, most specific first: ``name/kind.ll_TT.j2``, ``name/kind.ll.j2``, ``name/kind.j2``."""
    out: list[str] = []
    for k in (kind, *_KIND_FALLBACKS.get(kind, ())):
        if locale.territory:
            out.append(f"{name}/{k}.{locale.language}_{locale.territory}.j2")
        out.append(f"{name}/{k}.{locale.language}.j2")
        out.append(f"{name}/{k}.j2")
    return out


def _locale(ctx: jinja2.runtime.Context) -> Locale:
    value = ctx.get("locale")
    return value if isinstance(value, Locale) else parse_locale(str(value) if value else None)


def _tz(ctx: jinja2.runtime.Context) -> ZoneInfo:
    name = ctx.get("timezone")
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


@jinja2.pass_context
def _money(ctx: jinja2.runtime.Context, value: Any, currency: str | None = None) -> str:
    """``{{ order.total | money("RUB") }}``: the amount with the currency sign, in the customer's locale."""
    cur = currency or ctx.get("currency") or "RUB"
    return _format_money(str(_decimal(value)), str(cur), _locale(ctx))


@functools.lru_cache(maxsize=4096)
def _format_money(amount: str, currency: str, locale: Locale) -> str:
    """Babel's currency format, cached: a template shows an amount in its text and its HTML, and shops repeat
    prices (keyed by the amount's digits, so 1.0 and 1.00 stay apart as Babel may format them). Babel's
    formatting is a pure function of these three, and ten microseconds a call."""
    return babel_numbers.format_currency(Decimal(amount), currency, locale=locale)


@jinja2.pass_context
def _number(ctx: jinja2.runtime.Context, value: Any, decimals: int | None = None) -> str:
    """``{{ points | number }}``: grouping and decimal sign of the customer's locale."""
    if decimals is None:
        return _format_number(str(_decimal(value)), None, _locale(ctx))
    fmt = "#,##0" + ("." + "0" * decimals if decimals > 0 else "")
    return _format_number(str(_decimal(value)), fmt, _locale(ctx))


@functools.lru_cache(maxsize=4096)
def _format_number(amount: str, fmt: str | None, locale: Locale) -> str:
    """Babel's number format, cached as :func:`_format_money` (quantities and points repeat)."""
    if fmt is None:
        return babel_numbers.format_decimal(Decimal(amount), locale=locale)
    return babel_numbers.format_decimal(Decimal(amount), format=fmt, locale=locale)


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise ValueError(f"not a date or time: {value!r}")


@jinja2.pass_context
def _date(ctx: jinja2.runtime.Context, value: Any, format: str = "long") -> str:
    """``{{ event.occurred_at | date }}``: the date in the customer's time zone and locale (``short``,
    ``medium``, ``long``, ``full`` or a CLDR pattern such as ``d MMMM``)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return babel_dates.format_date(value, format=format, locale=_locale(ctx))
    if isinstance(value, str) and len(value) == 10:  # a bare ISO date: no time zone to convert
        return babel_dates.format_date(date.fromisoformat(value), format=format, locale=_locale(ctx))
    local = _to_datetime(value).astimezone(_tz(ctx))
    return babel_dates.format_date(local.date(), format=format, locale=_locale(ctx))


@jinja2.pass_context
def _datetime(ctx: jinja2.runtime.Context, value: Any, format: str = "medium") -> str:
    """``{{ event.occurred_at | datetime("short") }}``: date and time in the customer's zone and locale."""
    return babel_dates.format_datetime(_to_datetime(value), format=format, tzinfo=_tz(ctx), locale=_locale(ctx))


@jinja2.pass_context
def _time(ctx: jinja2.runtime.Context, value: Any, format: str = "short") -> str:
    """``{{ slot | time }}``: the time of day in the customer's zone and locale."""
    if isinstance(value, time):
        return babel_dates.format_time(value, format=format, locale=_locale(ctx))
    local = _to_datetime(value).astimezone(_tz(ctx))
    return babel_dates.format_time(local, format=format, tzinfo=_tz(ctx), locale=_locale(ctx))


@jinja2.pass_context
def _recommend(ctx: jinja2.runtime.Context, kind: str, limit: int = 4, max_price: Any = None,
               min_price: Any = None) -> list[dict[str, Any]]:
    """``recommend("bought_together", limit=4)``: the customer's products of that kind (see module doc)."""
    loaded = ctx.get("_recommendations")
    if not isinstance(loaded, Mapping):
        return []
    return pick(loaded.get(kind) or [], limit=limit, max_price=max_price, min_price=min_price)


@jinja2.pass_context
def _product_list(ctx: jinja2.runtime.Context, products: Any, separator: str = "; ") -> str:
    """``{{ recommend("similar", limit=3) | product_list }}``: "Name — 1 990 ₽; Name — 590 ₽" for short texts."""
    parts = []
    for p in products or []:
        name = p.get("name") or p.get("sku")
        price = p.get("price")
        parts.append(f"{name} — {_money(ctx, price, p.get('currency'))}" if price is not None else str(name))
    return separator.join(parts)


def _web_url(value: Any) -> str:
    """``value`` if it is an http(s) URL, else "": a catalogue value never becomes a ``javascript:`` link."""
    text = str(value or "").strip()
    return text if text.lower().startswith(("https://", "http://")) else ""


@jinja2.pass_context
def _product_blocks(ctx: jinja2.runtime.Context, products: Any) -> Markup:
    """``{{ recommend("bought_together") | product_blocks }}``: product cards for an HTML e-mail (a table, as
    mail clients need): picture, name, price (and the old price crossed out), each linked to its page."""
    cells = []
    for p in products or []:
        url = escape(_web_url(p.get("product_url")))
        name = escape(p.get("name") or p.get("sku"))
        picture = _web_url(p.get("image_url"))
        image = (f'<img src="{escape(picture)}" alt="{name}" width="140" style="display:block;border:0">'
                 if picture else "")
        price = escape(_money(ctx, p["price"], p.get("currency"))) if p.get("price") is not None else ""
        old = (f' <s style="color:#888">{escape(_money(ctx, p["old_price"], p.get("currency")))}</s>'
               if p.get("old_price") is not None and p.get("price") is not None
               and _decimal(p["old_price"]) > _decimal(p["price"]) else "")
        cells.append(f'<td class="product" style="padding:8px;vertical-align:top;width:150px">'
                     f'<a href="{url}">{image}{name}</a><br><b>{price}</b>{old}</td>')
    if not cells:
        return Markup("")
    return Markup('<table class="products" role="presentation"><tr>' + "".join(cells) + "</tr></table>")


def _environment(loader: jinja2.BaseLoader, *, autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=loader,
        autoescape=autoescape,
        undefined=jinja2.ChainableUndefined,  # a missing trait renders empty, never crashes the message
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
        cache_size=1000,
    )
    env.filters.update(money=_money, number=_number, date=_date, datetime=_datetime, time=_time,
                       product_list=_product_list, product_blocks=_product_blocks)
    env.globals["recommend"] = _recommend
    env.globals["skip"] = _skip
    return env


class TemplateRenderer:
    """Finds and renders templates: ``directory`` (the deployment's own) first, then the built-ins.

    Compiled templates are cached; rendering is synchronous and fast (no I/O after the first use).
    """

    def __init__(self, directory: Path | str | None = None, *, default_locale: str = "ru",
                 default_currency: str = "RUB") -> None:
        loaders: list[jinja2.BaseLoader] = []
        if directory is not None:
            loaders.append(jinja2.FileSystemLoader(str(directory)))
        loaders.append(jinja2.PackageLoader("cdp_hub.delivery", "templates"))
        loader = jinja2.ChoiceLoader(loaders)
        self.directory = Path(directory) if directory is not None else None
        self.default_locale = default_locale
        self.default_currency = default_currency
        self._resolved: dict[tuple[str, str, str], str] = {}
        self._calls_recommend: dict[str, bool] = {}
        self._loader = loader
        self._text_env = _environment(loader, autoescape=False)
        self._html_env = _environment(loader, autoescape=True)

    def list_templates(self) -> dict[str, list[str]]:
        """Template names and their variants (``email``, ``email.ru``, ``sms``, ...), user's and built-in."""
        out: dict[str, set[str]] = {}
        for path in self._text_env.list_templates(extensions=["j2"]):
            name, _, file = path.rpartition("/")
            if name:
                out.setdefault(name, set()).add(file.removesuffix(".j2"))
        return {name: sorted(variants) for name, variants in sorted(out.items())}

    def exists(self, name: str, kind: str, locale: str | None = None) -> bool:
        """Whether template ``name`` has a file for a channel ``kind`` in ``locale`` (or a fallback of them)."""
        try:
            self._select(self._text_env, name, kind, parse_locale(locale, self.default_locale))
        except TemplateError:
            return False
        return True

    def calls_recommend(self, name: str) -> bool:
        """Whether any file of template ``name`` (any kind, any locale) calls ``recommend(``: only then does
        the delivery stage load recommendations for its messages (cached per name)."""
        found = self._calls_recommend.get(name)
        if found is None:
            found = False
            for path in self._text_env.list_templates(extensions=["j2"]):
                if path.startswith(name + "/"):
                    source, _, _ = self._loader.get_source(self._text_env, path)
                    if "recommend(" in source:
                        found = True
                        break
            self._calls_recommend[name] = found
        return found

    def _select(self, env: jinja2.Environment, name: str, kind: str,
                locale: Locale) -> jinja2.Template:
        # Which file serves (name, kind, locale) is resolved once: Jinja caches the templates it found, but
        # looks for the missing candidates (email.ru_RU.j2, ...) on disk again every time.
        key = (name, kind, str(locale))
        found = self._resolved.get(key)
        try:
            if found is not None:
                return env.get_template(found)
            template = env.select_template(template_candidates(name, kind, locale))
        except jinja2.TemplatesNotFound:
            raise TemplateError(
                f"no template {name!r} for {kind} (looked for {', '.join(template_candidates(name, kind, locale))}"
                f" in {self.directory or '<none>'} and the built-ins); add one to templates_dir",
                field="template", value=name,
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template {exc.filename or exc.name}: line {exc.lineno}: {exc.message}",
                                field="template", value=name) from None
        if template.name:
            self._resolved[key] = template.name
        return template

    def render(self, name: str, kind: str, context: Mapping[str, Any], *, locale: str | None = None,
               timezone: str | None = None) -> RenderedMessage:
        """Render template ``name`` for a channel ``kind`` in ``locale``; raise :class:`TemplateError`."""
        loc = parse_locale(locale, self.default_locale)
        values = dict(context)
        values["locale"] = loc
        values["timezone"] = timezone or values.get("timezone") or "UTC"
        values.setdefault("currency", self.default_currency)
        parts: dict[str, str] = {}
        template = self._select(self._text_env, name, kind, loc)
        filename = template.name or name
        try:
            if not template.blocks:
                parts["text"] = template.render(values).strip()
            else:
                ctx = template.new_context(values)
                for block, fn in template.blocks.items():
                    if block in BLOCKS and block != "html":
                        parts[block] = jinja2.utils.concat(fn(ctx)).strip()
                if "html" in template.blocks:  # the same file, compiled with HTML autoescaping
                    html_template = self._select(self._html_env, name, kind, loc)
                    parts["html"] = jinja2.utils.concat(
                        html_template.blocks["html"](html_template.new_context(values))).strip()
        except (TemplateError, MessageSkipped):
            raise
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {filename}: {type(exc).__name__}: {exc}",
                                field="template", value=name) from None
        except Exception as exc:  # a filter given bad data, a sandbox violation, ...
            raise TemplateError(f"template {filename}: {type(exc).__name__}: {exc}",
                                field="template", value=name) from None
        if "text" not in parts and "html" not in parts:
            raise TemplateError(f"template {filename} has neither a 'text' nor an 'html' block",
                                field="template", value=name)
        return RenderedMessage(
            template_file=filename,
            text=parts.get("text", ""),
            subject=parts.get("subject"),
            html=parts.get("html"),
            title=parts.get("title"),
            url=parts.get("url"),
        )
