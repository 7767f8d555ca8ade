"""ERP connector: a 1C-like accounting/retail system (offline store receipts, returns, customer master data).

1C writes Russian field names, local time without an offset, decimal commas and ``DD.MM.YYYY`` dates; bulk
exports are CSV in cp1251 with ``;``. Record shapes:

==========  ===================================================  ===============================================
stream      record                                                events
==========  ===================================================  ===============================================
documents   the incremental document feed (OData-like JSON):      ``order.placed`` for a receipt
            ``{Ref_Key, Number, Date, ВидДокумента: ЧекККМ |      (``ЧекККМ``), ``order.returned`` for a return
            ВозвратТоваровОтПокупателя, Posted, DeletionMark,     (linked to ``ДокументОснование``),
            Магазин{Код}, Клиент{Код, Телефон, НомерКарты},        ``order.cancelled`` for a receipt marked for
            СуммаДокумента, ДокументОснование, Товары[...]}``      deletion; nothing for an unposted draft
receipts    a CSV receipt export, one row per line:               as ``documents`` (rows of one document are
            ``ВидДокумента;НомерДокумента;ДатаДокумента;            assembled into one record first, see
            КодМагазина;КодКлиента;Телефон;НомерКарты;             :meth:`ErpConnector.assemble`)
            Артикул;Номенклатура;Количество;Цена;Сумма``
customers   customer master data CSV: ``Код;Наименование;          ``customer.updated`` (erp_customer_id, phone,
            Фамилия;Имя;Отчество;Телефон;ЭлПочта;ДатаРождения;    email, loyalty card; names, birth date, gender,
            Пол;Город;НомерКарты;ДатаИзменения``                   city)
products    a CSV product export, one row per article and store:  ``product.updated`` per article (rows of one
            ``Артикул;Наименование;Группа;Бренд;Цена;СтараяЦена;    article assembled first): the group path
            КодМагазина;Остаток;ДатаИзменения`` (``Группа`` as     ``Мебель/Диваны``, stock per store as
            ``Мебель/Диваны``; ``Остаток`` per store)              availability; no person, so no identity
==========  =========================================orders      customer orders (``Document_ЗаказКлиента``), read by     the order's fulfilment, one event per step:
            ``ДатаИзменения`` (any change: shipment, slot,         ``order.shipped`` (``ДатаОтгрузки``, carrier,
            delivery): ``{Ref_Key, Number, Date, ДатаИзменения,    tracking URL), ``order.delivery_scheduled``
            НомерНаСайте, Клиент{Код, Телефон, ЭлПочта,            (``ДоставкаС``/``ДоставкаПо``; a new slot is a
            НомерКарты}, Магазин{Код}, СуммаДокумента, Валюта,     new event), ``order.delivered``
            ДатаОплаты, ДатаОтгрузки, Перевозчик, ТрекНомер,       (``ДатаДоставки``; ``warranty_until`` from the
            СсылкаОтслеживания, ДоставкаС, ДоставкаПо,             lines' ``ГарантияМесяцев``); an order the ERP
            ДатаСогласованияДоставки, ДатаДоставки,                took itself (no ``НомерНаСайте``) also
            Товары[{Артикул, Номенклатура, Количество, Цена,       ``order.placed`` and, once ``ДатаОплаты`` is
            Сумма, ГарантияМесяцев}]}``                            set, ``order.paid``
==========  ===================================================  ===============================================

**Receipts are paid at the till**: a posted ``ЧекККМ``/``Чек``/``Продажа`` is ``order.placed`` and
``order.paid`` with the store's code in ``store_id`` (the store-visit follow-up starts from it); a
``РеализацияТоваровУслуг`` (a sale on account) is only ``order.placed``.

**Orders from the website** (``НомерНаСайте`` set) were placed and paid in the shop, which says so itself: the
ERP sends only their fulfilment, under the shop's order id (``НомерНаСайте``), so that the shop's and the
ERP's events of one order share ``order_id`` (the catalogue's scenarios hold and cancel by it). Each step's
event id is derived from the order and the step (``<Ref_Key>/shipped``, ``<Ref_Key>/slot/<start>``,
``<Ref_Key>/delivered``): the order is read again whenever it changes, and the steps it already had map to
the same ids, which the store drops, so every step is sent once. A return of an order
(``ВозвратТоваровОтПокупателя`` with the order in ``ДокументОснование``, expanded or as its number) is
``order.returned`` under the order's id. ``tracking_urls`` (carrier -> URL with ``{tracking_number}``) builds
the tracking link where the ERP keeps only the track number. An infobase that does not publish
``Document_ЗаказКлиента`` (HTTP 404) makes the ``orders`` stream read nothing, with a warning; the other
streams sync as before.

Pull: ``receipts`` and ``returns`` from the 1C OData service (``$filter=Date ge datetime'...'``,
``$orderby=Date``; ``orders`` by ``ДатаИзменения`` the same way), ``$skip``/``$top`` pages, basic auth); the OData entity names the document type, which
:meth:`_OData.post_process` writes into ``ВидДокумента``. Files: ``cdp-hub ingest-file erp export.csv``
(cp1251, ``;``), receipt lines and product rows assembled by :meth:`ErpConnector.assemble`.

A receipt with no customer (no code, phone or card) is an anonymous sale, not a customer event: it maps to no
event. Times are local to ``config.timezone`` (Moscow by default) and converted to UTC.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import Field, field_validator

from cdp_hub.connector.base import ConnectorConfig, SourceRecord
from cdp_hub.connector.mapping import (
    add_identity,
    gender,
    keep_unknown,
    parse_date,
    parse_datetime,
    parse_decimal,
    require,
    text,
)
from cdp_hub.connector.pagination import OffsetPaginator
from cdp_hub.connector.resilience import Action
from cdp_hub.connector.rest import HttpConnector, HttpConnectorConfig, RestStream
from cdp_hub.errors import SchemaViolation

__all__ = ["CustomerOrders", "ErpConfig", "ErpConnector", "Receipts", "Returns"]

log = logging.getLogger(__name__)

RECEIPT_TYPES = frozenset({"ЧекККМ", "Чек", "Продажа", "РеализацияТоваровУслуг"})
PAID_AT_TILL = frozenset({"ЧекККМ", "Чек", "Продажа"})
"""Receipts of a cash register: the customer paid when the receipt was printed."""
ORDER_TYPES = frozenset({"ЗаказКлиента"})
RETURN_TYPES = frozenset({"ВозвратТоваровОтПокупателя", "Возврат", "ЧекККМВозврат"})
_CUSTOMER_KNOWN = frozenset({"Код", "Наименование", "Фамилия", "Имя", "Отчество", "Телефон", "ЭлПочта",
                             "ДатаРождения", "Пол", "Город", "НомерКарты", "ДатаИзменения", "ПометкаУдаления"})


class ErpConfig(HttpConnectorConfig):
    """Options of the ERP connector."""

    base_url: str = Field("http://localhost:8083/retail", description="base URL of the 1C infobase's web "
                          "publication (the OData service is under /odata/standard.odata)")
    durable_groups: list[str] = Field(
        default_factory=list, description="product groups (any level of 'A/B') of goods bought once in years: "
        "recommendations leave their category out after a purchase")
    timezone: str = Field("Europe/Moscow", description="zone of the ERP's local timestamps")
    currency: str = Field("RUB", pattern=r"^[A-Z]{3}$")
    encoding: str = Field("cp1251", description="encoding of CSV exports")
    delimiter: str = Field(";", min_length=1, max_length=1, description="CSV delimiter of exports")
    tracking_urls: dict[str, str] = Field(
        default_factory=dict, description="carrier name (as the ERP writes it) -> its tracking page with "
        "{tracking_number}, for orders whose СсылкаОтслеживания is empty: "
        "{\"СДЭК\" = \"https://www.cdek.ru/ru/tracking?order_id={tracking_number}\"}")

    @field_validator("tracking_urls")
    @classmethod
    def _tracking_templates(cls, urls: dict[str, str]) -> dict[str, str]:
        for carrier, template in urls.items():
            if "{tracking_number}" not in template or not template.startswith(("https://", "http://")):
                raise ValueError(f"tracking_urls[{carrier!r}] must be an http(s) URL containing {{tracking_number}}")
        return urls


class _OData(RestStream):
    """A 1C OData document list, filtered and ordered by the document date (local time)."""

    records_path = "value"
    cursor_field = "Date"
    primary_key = "Ref_Key"
    paginator = OffsetPaginator(offset_param="$skip", limit_param="$top")
    document_type: ClassVar[str] = ""
    expand: ClassVar[str] = "Клиент,Магазин"

    def format_cursor(self, start: Any) -> str:
        local = start.astimezone(self.cursor_key("2000-01-01T00:00:00").tzinfo)  # 1C filters in its local time
        return f"datetime'{local:%Y-%m-%dT%H:%M:%S}'"

    def request_params(self, start: Any | None) -> dict[str, Any]:
        cursor = self.cursor_field or "Date"
        params: dict[str, Any] = {"$format": "json", "$orderby": f"{cursor} asc", "$expand": self.expand}
        if start is not None:
            params["$filter"] = f"{cursor} ge {self.format_cursor(start)} and Posted eq true"
        return params

    def post_process(self, record: SourceRecord) -> SourceRecord | None:
        return {**record, "ВидДокумента": record.get("ВидДокумента") or self.document_type}


class Receipts(_OData):
    name = "receipts"
    path = "/odata/standard.odata/Document_ЧекККМ"
    document_type = "ЧекККМ"


class Returns(_OData):
    name = "returns"
    path = "/odata/standard.odata/Document_ВозвратТоваровОтПокупателя"
    document_type = "ВозвратТоваровОтПокупателя"


class CustomerOrders(_OData):
    """Customer orders, read again on every change (``ДатаИзменения``): their fulfilment steps are events."""

    name = "orders"
    path = "/odata/standard.odata/Document_ЗаказКлиента"
    document_type = "ЗаказКлиента"
    cursor_field = "ДатаИзменения"
    # A store-only infobase may not publish customer orders: that is no reason to fail the receipts' sync job.
    status_actions = {404: Action.SKIP}

    async def pages(self, start: Any | None) -> AsyncIterator[list[SourceRecord]]:
        answered = False
        async for page in super().pages(start):
            answered = True
            yield page
        if not answered:  # skipped on the 404: say why no shipment or delivery ever arrives
            log.warning("connector %s: the 1C OData publication has no Document_ЗаказКлиента (HTTP 404), so no "
                        "order shipments, delivery slots or deliveries are read; publish the document to send them",
                        self.connector.instance)


class ErpConnector(HttpConnector):
    """ERP (1C-like): offline store receipts and returns, customer master data; CSV exports and a feed."""

    name: ClassVar[str] = "erp"
    title: ClassVar[str] = "ERP (1C-like)"
    config_model: ClassVar[type[ConnectorConfig]] = ErpConfig
    record_id_field: ClassVar[str | None] = "Ref_Key"
    streams = (Receipts, Returns, CustomerOrders)
    config: ErpConfig

    def record_id(self, record: SourceRecord) -> str | None:
        return text(record.get("Ref_Key")) or text(record.get("Number")) or text(
            record.get("НомерДокумента")) or text(record.get("Код"))

    def assemble(self, records: Iterable[SourceRecord], *, stream: str | None = None) -> Iterator[SourceRecord]:
        """Join consecutive CSV rows of one receipt (same ``НомерДокумента``) into one document record.

        Exports list a document's lines together; a document number seen again later starts a new record
        (and maps to the same event id, so nothing is counted twice).
        """
        current: dict[str, Any] | None = None
        for row in records:
            if stream == "products" or _is_product_row(row):
                # a product export: consecutive rows of one article (one per store) make one record
                if current is not None and current.get("Артикул") == row.get("Артикул") and "НомерДокумента" not in current:
                    current["Строки"].append(row)
                    continue
                if current is not None:
                    yield current
                current = {**row, "Строки": [row]}
                continue
            number = row.get("НомерДокумента")
            if number is None or stream == "customers" or ("Код" in row and "Наименование" in row):
                if current is not None:
                    yield current
                    current = None
                yield row
                continue
            if current is not None and current["НомерДокумента"] == number:
                current["Строки"].append(row)
                continue
            if current is not None:
                yield current
            current = {**row, "Строки": [row]}
        if current is not None:
            yield current

    def stream_of(self, record: SourceRecord) -> str:
        """Which stream a record belongs to, from its shape."""
        if record.get("ВидДокумента") in ORDER_TYPES:
            return "orders"
        if "Ref_Key" in record or "Товары" in record:
            return "documents"
        if "НомерДокумента" in record:
            return "receipts"
        if _is_product_row(record):
            return "products"
        return "customers"

    def normalize(self, record: SourceRecord, *, stream: str | None = None) -> list[dict[str, Any]]:
        stream = stream or self.stream_of(record)
        if stream == "orders":
            return self._order(record)
        if stream in ("documents", "returns") or (stream == "receipts" and "Number" in record):
            return self._feed_document(record)  # the OData feed's documents
        if stream == "receipts":
            return self._csv_document(record)  # CSV export rows
        if stream == "customers":
            return self._customer(record)
        if stream == "products":
            return self._product(record)
        raise SchemaViolation(f"unknown ERP stream {stream!r}", field="<stream>", value=stream)

    # -- documents -----------------------------------------------------------------------------------

    def _product(self, record: SourceRecord) -> list[dict[str, Any]]:
        """One ``product.updated`` for an article; each row adds its store's stock to the availability."""
        sku = text(require(record, "Артикул"))
        at = self._when(require(record, "ДатаИзменения"), "ДатаИзменения")
        path = [part.strip() for part in str(record.get("Группа") or "").split("/") if part.strip()]
        availability: dict[str, Decimal] = {}
        for n, row in enumerate(record.get("Строки") or [record]):
            store = text(row.get("КодМагазина"))
            stock = parse_decimal(row.get("Остаток"), field=f"Строки.{n}.Остаток")
            if store and stock is not None:
                availability[store] = availability.get(store, Decimal(0)) + max(stock, Decimal(0))
            at = max(at, self._when(row.get("ДатаИзменения") or record["ДатаИзменения"], "ДатаИзменения"))
        props: dict[str, Any] = {
            "sku": sku, "name": text(record.get("Наименование")), "category_path": path,
            "brand": text(record.get("Бренд")), "price": parse_decimal(record.get("Цена"), field="Цена"),
            "old_price": parse_decimal(record.get("СтараяЦена"), field="СтараяЦена"),
            "currency": self.config.currency, "availability": availability or None,
            "durable": bool(set(path) & set(self.config.durable_groups)) if self.config.durable_groups else None,
        }
        return [{"type": "product.updated", "occurred_at": at, "source_record_id": f"{sku}@{at.isoformat()}",
                 "properties": {k: v for k, v in props.items() if v is not None and v != []}}]

    def _when(self, value: Any, field: str) -> datetime:
        return parse_datetime(value, field=field, tz=self.config.timezone)

    def _feed_document(self, doc: SourceRecord) -> list[dict[str, Any]]:
        if doc.get("Posted") is False:
            return []  # a draft, not a sale yet
        client = doc.get("Клиент") or {}
        if not isinstance(client, Mapping):
            raise SchemaViolation("Клиент: the customer is not an object (expand Клиент in the OData request)",
                                  field="Клиент", value=str(client)[:80])
        store = doc.get("Магазин") or {}
        lines_in = doc.get("Товары") or []
        if not isinstance(lines_in, list):
            raise SchemaViolation("Товары: a document's lines are not a list", field="Товары")
        lines = [(f"Товары.{i}", line) for i, line in enumerate(lines_in)]
        return self._document(
            doc_id=text(doc.get("Ref_Key")) or text(require(doc, "Number")),
            number=text(require(doc, "Number")),
            kind=str(require(doc, "ВидДокумента")), kind_field="ВидДокумента",
            when=self._when(require(doc, "Date"), "Date"),
            client_code=client.get("Код"), phone=client.get("Телефон"), card=client.get("НомерКарты"),
            store_id=text(store.get("Код")) if isinstance(store, Mapping) else text(store),
            total=parse_decimal(doc.get("СуммаДокумента"), field="СуммаДокумента"),
            currency=text(doc.get("Валюта")), basis=_order_reference(doc.get("ДокументОснование")),
            deleted=bool(doc.get("DeletionMark")), lines=lines,
        )

    def _csv_document(self, doc: SourceRecord) -> list[dict[str, Any]]:
        rows = doc.get("Строки")
        # Several CSV rows assembled into one document, or a single-line receipt.
        row_list: list[tuple[str, Any]] = (
            [(f"Строки.{i}", r) for i, r in enumerate(rows)] if isinstance(rows, list) else [("", doc)])
        number = text(require(doc, "НомерДокумента"))
        return self._document(
            doc_id=number, number=number,
            kind=str(require(doc, "ВидДокумента")), kind_field="ВидДокумента",
            when=self._when(require(doc, "ДатаДокумента"), "ДатаДокумента"),
            client_code=doc.get("КодКлиента"), phone=doc.get("Телефон"), card=doc.get("НомерКарты"),
            store_id=text(doc.get("КодМагазина")),
            total=parse_decimal(doc.get("СуммаДокумента"), field="СуммаДокумента"),
            currency=None, basis=text(doc.get("ДокументОснование")),
            deleted=str(doc.get("ПометкаУдаления", "")).lower() in ("1", "да", "true"), lines=row_list,
        )

    def _document(self, *, doc_id: str | None, number: str | None, kind: str, kind_field: str,
                  when: datetime, client_code: Any, phone: Any, card: Any, store_id: str | None,
                  total: Any, currency: str | None, basis: str | None, deleted: bool,
                  lines: list[tuple[str, Any]]) -> list[dict[str, Any]]:
        if kind in RECEIPT_TYPES:
            event_type = "order.cancelled" if deleted else "order.placed"
        elif kind in RETURN_TYPES:
            event_type = "order.returned"
        else:
            raise SchemaViolation(f"{kind_field}: unknown document type {kind!r} (receipts: "
                                  f"{', '.join(sorted(RECEIPT_TYPES))}; returns: {', '.join(sorted(RETURN_TYPES))})",
                                  field=kind_field, value=kind)
        ids: list[dict[str, str]] = []
        add_identity(ids, "erp_customer_id", client_code)
        add_identity(ids, "phone", phone)
        add_identity(ids, "loyalty_card", card)
        if not ids:
            return []  # an anonymous sale: no customer to attach it to
        items = [_line_item(prefix, line) for prefix, line in lines]
        if total is None:  # CSV rows carry line sums only
            sums = [parse_decimal(line.get("Сумма"), field=f"{prefix}.Сумма" if prefix else "Сумма")
                    for prefix, line in lines]
            total = sum((s for s in sums if s is not None), Decimal(0))
        props: dict[str, Any] = {
            "order_id": (basis if event_type == "order.returned" and basis else number),
            "total": abs(total) if total is not None else None,
            "currency": currency or self.config.currency,
            "items": items, "store_id": store_id, "channel": "offline",
            "status": "deleted" if deleted else ("returned" if event_type == "order.returned" else "paid"),
            "document_number": number,
        }
        if event_type == "order.returned":
            props["return_id"] = number
        event = {"type": event_type, "source_record_id": doc_id, "occurred_at": when, "identities": ids,
                 "properties": props, "context": {"channel": "offline", "store_id": store_id}}
        if event_type == "order.placed" and kind in PAID_AT_TILL:
            return [event, {**event, "type": "order.paid"}]  # paid at the till when the receipt was printed
        return [event]

    # -- customer orders -----------------------------------------------------------------------------

    def _order(self, doc: SourceRecord) -> list[dict[str, Any]]:
        """The fulfilment steps an order has reached, one event each (see the module docstring)."""
        if doc.get("Posted") is False:
            return []  # a draft, not an order yet
        ref = text(require(doc, "Ref_Key"))
        number = text(require(doc, "Number"))
        site_number = text(doc.get("НомерНаСайте"))
        changed = self._when(require(doc, "ДатаИзменения"), "ДатаИзменения")
        client = doc.get("Клиент")
        if not isinstance(client, Mapping):
            raise SchemaViolation("Клиент: an order names no customer (expand Клиент in the OData request)",
                                  field="Клиент", value=client)
        ids: list[dict[str, str]] = []
        add_identity(ids, "erp_customer_id", client.get("Код"))
        add_identity(ids, "phone", client.get("Телефон"))
        add_identity(ids, "email", client.get("ЭлПочта"))
        add_identity(ids, "loyalty_card", client.get("НомерКарты"))
        if not ids:
            raise SchemaViolation("Клиент: the order's customer has no code, phone, e-mail or card",
                                  field="Клиент.Код")
        store = doc.get("Магазин")
        store_id = text(store.get("Код")) if isinstance(store, Mapping) else text(store)
        lines_in = doc.get("Товары") or []
        if not isinstance(lines_in, list):
            raise SchemaViolation("Товары: an order's lines are not a list", field="Товары")
        items: list[dict[str, Any]] = []
        warranties: list[tuple[dict[str, Any], int]] = []
        for i, line in enumerate(lines_in):
            p = f"Товары.{i}"
            item = _line_item(p, line)
            items.append(item)
            months = parse_decimal(line.get("ГарантияМесяцев"), field=f"{p}.ГарантияМесяцев")
            if months is not None:
                if months < 0 or months != months.to_integral_value() or months > 1200:
                    raise SchemaViolation(f"{p}.ГарантияМесяцев: not a number of months: {months}",
                                          field=f"{p}.ГарантияМесяцев", value=str(months))
                warranties.append((item, int(months)))
        props: dict[str, Any] = {
            "order_id": site_number or number, "document_number": number,
            "total": parse_decimal(doc.get("СуммаДокумента"), field="СуммаДокумента"),
            "currency": text(doc.get("Валюта")) or self.config.currency, "items": items,
            "store_id": store_id, "channel": "online" if site_number else ("offline" if store_id else None),
        }
        props = {k: v for k, v in props.items() if v is not None}
        context = {"channel": "erp", "store_id": store_id}
        events: list[dict[str, Any]] = []

        def step(kind: str, rid: str, at: datetime, **extra: Any) -> None:
            extra_props = {k: v for k, v in extra.items() if v is not None}
            events.append({"type": kind, "source_record_id": f"{ref}/{rid}", "occurred_at": at, "identities": ids,
                           "properties": {**props, **extra_props} if extra_props else props, "context": context})

        if doc.get("DeletionMark"):
            # Withdrawn in the ERP: the shop cancels its own orders; one the ERP took itself is cancelled here.
            if site_number is None:
                step("order.cancelled", "cancelled", changed, status="cancelled")
            return events
        if site_number is None:  # the ERP took the order itself: nobody else says it was placed or paid
            step("order.placed", "placed", self._when(require(doc, "Date"), "Date"), status="placed")
            if paid := doc.get("ДатаОплаты"):
                step("order.paid", "paid", self._when(paid, "ДатаОплаты"), status="paid")
        if shipped := doc.get("ДатаОтгрузки"):
            carrier = _name(doc.get("Перевозчик"))
            tracking_number = text(doc.get("ТрекНомер"))
            step("order.shipped", "shipped", self._when(shipped, "ДатаОтгрузки"), status="shipped",
                 carrier=carrier, tracking_number=tracking_number,
                 tracking_url=self._tracking_url(doc, carrier, tracking_number))
        if slot_start := doc.get("ДоставкаС"):
            # In UTC like every time of the event (the templates show them in the customer's zone).
            start = self._when(slot_start, "ДоставкаС").astimezone(UTC)
            end = self._when(doc["ДоставкаПо"], "ДоставкаПо").astimezone(UTC) if doc.get("ДоставкаПо") else None
            if end is not None and end < start:
                raise SchemaViolation(f"ДоставкаПо: the delivery window ends ({end.isoformat()}) before it starts "
                                      f"({start.isoformat()})", field="ДоставкаПо", value=str(doc["ДоставкаПо"]))
            agreed = doc.get("ДатаСогласованияДоставки")
            # A rescheduled slot is another event: the slot's start is part of its id.
            step("order.delivery_scheduled", f"slot/{start.isoformat()}",
                 self._when(agreed, "ДатаСогласованияДоставки") if agreed else changed, status="delivery_scheduled",
                 delivery_slot_start=start, delivery_slot_end=end)
        if delivered := doc.get("ДатаДоставки"):
            at = self._when(delivered, "ДатаДоставки")
            # The warranty runs from delivery; the order's is the longest of its lines (what the reminder names).
            lines = self._with_warranty(items, warranties, at)
            ends = [line["warranty_until"] for line in lines if "warranty_until" in line]
            step("order.delivered", "delivered", at, status="delivered",
                 warranty_until=max(ends) if ends else None, items=lines if ends else None)
        return events

    @staticmethod
    def _with_warranty(items: list[dict[str, Any]], warranties: list[tuple[dict[str, Any], int]],
                       delivered: datetime) -> list[dict[str, Any]]:
        """The order's lines, each with a warranty given its ``warranty_until`` (from the delivery day)."""
        months = {id(item): m for item, m in warranties if m}
        return [{**item, "warranty_until": _add_months(delivered, months[id(item)]).astimezone(UTC)}
                if id(item) in months else item for item in items]

    def _tracking_url(self, doc: SourceRecord, carrier: str | None, tracking_number: str | None) -> str | None:
        url = text(doc.get("СсылкаОтслеживания"))
        if url is not None:
            if not url.startswith(("https://", "http://")):
                raise SchemaViolation("СсылкаОтслеживания: not an http(s) URL", field="СсылкаОтслеживания",
                                      value=url)
            return url
        template = self.config.tracking_urls.get(carrier or "")
        if template and tracking_number:
            return template.replace("{tracking_number}", quote(tracking_number, safe=""))
        return None

    # -- customers -----------------------------------------------------------------------------------

    def _customer(self, row: SourceRecord) -> list[dict[str, Any]]:
        code = text(require(row, "Код"))
        ids: list[dict[str, str]] = []
        add_identity(ids, "erp_customer_id", code)
        add_identity(ids, "phone", row.get("Телефон"))
        add_identity(ids, "email", row.get("ЭлПочта"))
        add_identity(ids, "loyalty_card", row.get("НомерКарты"))
        traits: dict[str, Any] = {}
        for src, dst in (("Фамилия", "last_name"), ("Имя", "first_name"), ("Отчество", "middle_name"),
                         ("Наименование", "full_name"), ("Город", "city")):
            if value := text(row.get(src)):
                traits[dst] = value
        birth = parse_date(row.get("ДатаРождения"), field="ДатаРождения")
        if birth is not None:
            traits["birth_date"] = birth
        if g := gender(row.get("Пол")):
            traits["gender"] = g
        keep_unknown(row, _CUSTOMER_KNOWN, traits, prefix="erp_")
        changed = text(row.get("ДатаИзменения"))
        if changed is None:
            raise SchemaViolation("ДатаИзменения: required for customer master data (it orders updates)",
                                  field="ДатаИзменения")
        return [{
            "type": "customer.updated", "source_record_id": f"{code}@{changed}",
            "occurred_at": self._when(changed, "ДатаИзменения"), "identities": ids, "traits": traits,
            "context": {"channel": "offline"},
        }]


def _line_item(where: str, line: Any) -> dict[str, Any]:
    """One goods line of a receipt, a return or an order as an order item; ``where`` names the line in errors
    (``Товары.3``, ``Строки.0``, or empty for a single-row CSV receipt whose row is the line)."""
    def at(name: str) -> str:
        return f"{where}.{name}" if where else name

    if not isinstance(line, Mapping):
        raise SchemaViolation(f"{where or 'line'}: a goods line is not an object", field=where or None,
                              value=str(line)[:80])
    sku = text(line.get("Артикул")) or text(line.get("Номенклатура_Key"))
    if sku is None:
        raise SchemaViolation(f"{at('Артикул')}: line has no article", field=at("Артикул"))
    item: dict[str, Any] = {"sku": sku}
    if name := text(line.get("Номенклатура")):
        item["name"] = name
    qty = parse_decimal(line.get("Количество"), field=at("Количество"))
    if qty is not None:
        item["quantity"] = abs(qty)
    price = parse_decimal(line.get("Цена"), field=at("Цена"))
    if price is not None:
        item["price"] = price
    return item


def _order_reference(basis: Any) -> str | None:
    """The order a return names: the shop's number of an expanded order document, else its own number."""
    if isinstance(basis, Mapping):
        return text(basis.get("НомерНаСайте")) or text(basis.get("Number"))
    return text(basis)


def _name(value: Any) -> str | None:
    """A catalogue reference's name (``{"Наименование": "СДЭК"}`` when expanded) or the plain text."""
    if isinstance(value, Mapping):
        return text(value.get("Наименование")) or text(value.get("Description"))
    return text(value)


def _add_months(at: datetime, months: int) -> datetime:
    """``at`` plus calendar months; the 31st becomes the month's last day (a warranty of 1 month from Jan 31
    ends on Feb 28 or 29)."""
    month = at.month - 1 + months
    year, month = at.year + month // 12, month % 12 + 1
    return at.replace(year=year, month=month, day=min(at.day, calendar.monthrange(year, month)[1]))


def _is_product_row(row: SourceRecord) -> bool:
    """A row of a product export: an article with a stock or a price, not a document line."""
    return "Артикул" in row and "НомерДокумента" not in row and ("Остаток" in row or "Цена" in row)
