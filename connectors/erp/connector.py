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
==========  ===================================================  ===============================================

Pull: ``receipts`` and ``returns`` from the 1C OData service (``$filter=Date ge datetime'...'``,
``$orderby=Date``, ``$skip``/``$top`` pages, basic auth); the OData entity names the document type, which
:meth:`_OData.post_process` writes into ``ВидДокумента``. Files: ``cdp-hub ingest-file erp export.csv``
(cp1251, ``;``), receipt lines and product rows assembled by :meth:`ErpConnector.assemble`.

A receipt with no customer (no code, phone or card) is an anonymous sale, not a customer event: it maps to no
event. Times are local to ``config.timezone`` (Moscow by default) and converted to UTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import Field

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
from cdp_hub.connector.rest import HttpConnector, HttpConnectorConfig, RestStream
from cdp_hub.errors import SchemaViolation

__all__ = ["ErpConfig", "ErpConnector", "Receipts", "Returns"]

RECEIPT_TYPES = frozenset({"ЧекККМ", "Чек", "Продажа", "РеализацияТоваровУслуг"})
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


class _OData(RestStream):
    """A 1C OData document list, filtered and ordered by the document date (local time)."""

    records_path = "value"
    cursor_field = "Date"
    primary_key = "Ref_Key"
    paginator = OffsetPaginator(offset_param="$skip", limit_param="$top")
    document_type: ClassVar[str] = ""

    def format_cursor(self, start: Any) -> str:
        local = start.astimezone(self.cursor_key("2000-01-01T00:00:00").tzinfo)  # 1C filters in its local time
        return f"datetime'{local:%Y-%m-%dT%H:%M:%S}'"

    def request_params(self, start: Any | None) -> dict[str, Any]:
        params: dict[str, Any] = {"$format": "json", "$orderby": "Date asc", "$expand": "Клиент,Магазин"}
        if start is not None:
            params["$filter"] = f"Date ge {self.format_cursor(start)} and Posted eq true"
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


class ErpConnector(HttpConnector):
    """ERP (1C-like): offline store receipts and returns, customer master data; CSV exports and a feed."""

    name: ClassVar[str] = "erp"
    title: ClassVar[str] = "ERP (1C-like)"
    config_model: ClassVar[type[ConnectorConfig]] = ErpConfig
    record_id_field: ClassVar[str | None] = "Ref_Key"
    streams = (Receipts, Returns)
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
        if "Ref_Key" in record or "Товары" in record:
            return "documents"
        if "НомерДокумента" in record:
            return "receipts"
        if _is_product_row(record):
            return "products"
        return "customers"

    def normalize(self, record: SourceRecord, *, stream: str | None = None) -> list[dict[str, Any]]:
        stream = stream or self.stream_of(record)
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
        store = doc.get("Магазин") or {}
        lines = [(f"Товары.{i}", line) for i, line in enumerate(doc.get("Товары") or ())]
        return self._document(
            doc_id=text(doc.get("Ref_Key")) or text(require(doc, "Number")),
            number=text(require(doc, "Number")),
            kind=str(require(doc, "ВидДокумента")), kind_field="ВидДокумента",
            when=self._when(require(doc, "Date"), "Date"),
            client_code=client.get("Код"), phone=client.get("Телефон"), card=client.get("НомерКарты"),
            store_id=text(store.get("Код")) if isinstance(store, Mapping) else text(store),
            total=parse_decimal(doc.get("СуммаДокумента"), field="СуммаДокумента"),
            currency=text(doc.get("Валюта")), basis=text(doc.get("ДокументОснование")),
            deleted=bool(doc.get("DeletionMark")), lines=lines,
        )

    def _csv_document(self, doc: SourceRecord) -> list[dict[str, Any]]:
        rows = doc.get("Строки")
        # Several CSV rows assembled into one document, or a single-line receipt.
        row_list: list[tuple[str, Mapping[str, Any]]] = (
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
                  lines: list[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
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
        items = []
        for prefix, line in lines:
            p = f"{prefix}." if prefix else ""
            sku = text(line.get("Артикул")) or text(line.get("Номенклатура_Key"))
            if sku is None:
                raise SchemaViolation(f"{p}Артикул: line has no article", field=f"{p}Артикул")
            item: dict[str, Any] = {"sku": sku, "name": text(line.get("Номенклатура"))}
            qty = parse_decimal(line.get("Количество"), field=f"{p}Количество")
            if qty is not None:
                item["quantity"] = abs(qty)
            price = parse_decimal(line.get("Цена"), field=f"{p}Цена")
            if price is not None:
                item["price"] = price
            items.append(item)
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
        return [{
            "type": event_type, "source_record_id": doc_id, "occurred_at": when, "identities": ids,
            "properties": props, "context": {"channel": "offline", "store_id": store_id},
        }]

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


def _is_product_row(row: SourceRecord) -> bool:
    """A row of a product export: an article with a stock or a price, not a document line."""
    return "Артикул" in row and "НомерДокумента" not in row and ("Остаток" in row or "Цена" in row)
