"""E-commerce connector: a Shopify/WooCommerce-like online shop.

Record shapes (the shop's REST Admin API and its webhooks send the same objects):

=============  ==============================================  =================================================
stream         record                                           events
=============  ==============================================  =================================================
customers      ``{id, email, phone, first_name, ...,            ``customer.updated``; ``consent.changed`` from
               updated_at, default_address{city, zip,           ``email_marketing_consent`` /
               country_code}, email_marketing_consent{...}}``   ``sms_marketing_consent``
orders         ``{id, name, email, phone, customer{...}|null,   ``order.placed`` (``payment_url`` while unpaid);
               created_at, financial_status, cancelled_at,      ``order.paid`` (financial status paid/refunded,
               currency, total_price, line_items[...],          at ``paid_at``/``date_paid``);
               refunds[...], payment_url?, paid_at?}``          ``order.cancelled``; ``order.returned`` per refund
checkouts      ``{id, token, email, phone, customer, line_items, ``cart.updated`` (abandoned-cart triggers);
               total_price, abandoned_checkout_url,             none once ``completed_at`` is set (the order
               updated_at, completed_at}``                      says it)
storefront     storefront pixel events ``{id, name, timestamp,  by ``name``: ``product_viewed`` ->
(webhooks)     clientId, customerId?, data{...}}``; custom       ``product.viewed``; ``search_submitted`` ->
               events put their payload in ``customData``       ``search.performed`` (``searchResult.query``,
                                                                the number of ``productVariants`` found);
                                                                ``cart_viewed`` -> ``cart.updated`` (the whole
                                                                ``cart``: lines, prices, total);
                                                                ``product_added_to_wishlist`` (the wishlist
                                                                app's custom event) -> ``wishlist.added``
products       ``{id, title, product_type: "Мебель > Диваны",  ``product.updated`` per variant (its SKU): price,
               vendor, handle, status, updated_at, image{src},  ``compare_at_price`` as the old price, stock as
               variants[{sku, title, price, compare_at_price,   availability ``{"online": n}``; no person in it,
               inventory_quantity}], tags}``                    so no identity (the catalogue, not a customer)
=============  ==============================================  =================================================

Pull: ``customers``, ``orders``, ``checkouts`` and ``products`` by ``updated_at`` (``updated_at_min``), ``Link`` header
pagination, API key in ``X-Shop-Access-Token``. Push: webhooks signed with HMAC-SHA256 (base64) over
``"{timestamp}.{body}"`` in ``X-Shop-Hmac-Sha256``, the timestamp in ``X-Shop-Triggered-At`` and the topic
(``orders/create``, ``checkouts/update``, ...) in ``X-Shop-Topic``.

Storefront events arrive only as webhooks (``X-Shop-Topic: pixel/<name>``; the stream is ``storefront``, its
old name ``product_views`` still works): the shop's web pixel forwards them. Their own ``id`` names the event, so
a forwarded event sent twice is stored once. An event name the connector does not map is a record error (field
``name``), so a pixel subscribed to more than it should shows in the dead-letter queue.

An order's ``payment_url`` (WooCommerce's field; a Shopify shop puts its invoice link there) is sent on
``order.placed`` only while the order is not paid (``financial_status`` pending, authorized, partially paid or
unpaid): the catalogue's payment reminder starts from it. Each status an order reached is its own event with an
id derived from the order and the type, so syncing an order again after it changed sends only the new steps.

Guest checkouts have no ``customer``: the order's ``email`` or ``phone`` identifies the person. A record with
no identity at all cannot be attributed and goes to the dead-letter queue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import Field

from cdp_hub.connector.base import ConnectorConfig, SourceRecord
from cdp_hub.connector.mapping import add_identity, keep_unknown, parse_datetime, parse_decimal, require, text
from cdp_hub.connector.pagination import LinkHeaderPaginator
from cdp_hub.connector.rest import HttpConnector, HttpConnectorConfig, RestStream
from cdp_hub.connector.webhooks import WebhookSpec
from cdp_hub.errors import SchemaViolation

__all__ = ["Checkouts", "Customers", "EcommerceConfig", "EcommerceConnector", "Orders", "Products"]

_PAID_STATUSES = frozenset({"paid", "partially_refunded", "refunded"})
_ORDER_KNOWN = frozenset({
    "id", "name", "order_number", "email", "phone", "contact_email", "customer", "created_at", "updated_at",
    "processed_at", "paid_at", "cancelled_at", "cancel_reason", "closed_at", "financial_status",
    "fulfillment_status", "currency", "total_price", "subtotal_price", "total_tax", "total_discounts",
    "line_items", "refunds", "source_name", "billing_address", "shipping_address", "location_id",
    "browser_ip", "client_details", "landing_site", "referring_site", "admin_graphql_api_id", "test",
    "token", "cart_token", "checkout_token", "number", "note_attributes", "discount_codes", "tags",
    "payment_url", "date_paid", "needs_payment",
})
_UNPAID_STATUSES = frozenset({"pending", "authorized", "partially_paid", "unpaid"})
_STOREFRONT_STREAMS = frozenset({"storefront", "product_views"})
_CUSTOMER_KNOWN = frozenset({
    "id", "email", "phone", "first_name", "last_name", "created_at", "updated_at", "default_address",
    "addresses", "email_marketing_consent", "sms_marketing_consent", "admin_graphql_api_id", "state",
    "verified_email", "currency", "tax_exempt", "multipass_identifier", "last_order_id", "last_order_name",
})
_CONSENT_STATES = {"subscribed": "opted_in", "unsubscribed": "opted_out"}


class EcommerceConfig(HttpConnectorConfig):
    """Options of the e-commerce connector."""

    base_url: str = Field("http://localhost:8081", description="base URL of the shop's Admin API")
    api_version: str = Field("2024-10", description="Admin API version in the URL path")
    currency: str = Field("RUB", pattern=r"^[A-Z]{3}$", description="currency when an order names none")
    storefront_url: str | None = Field(None, description="the shop's public URL; product links are "
                                       "{storefront_url}/products/{handle}")
    durable_categories: list[str] = Field(
        default_factory=list, description="product types (any level of 'A > B') of goods bought once in years "
        "(a sofa): recommendations leave their category out after a purchase")


class _ShopStream(RestStream):
    cursor_field = "updated_at"
    cursor_param = "updated_at_min"
    paginator = LinkHeaderPaginator(size_param="limit")
    params = {"order": "updated_at asc"}


class Customers(_ShopStream):
    name = "customers"
    path = "/admin/api/{api_version}/customers.json"
    records_path = "customers"


class Orders(_ShopStream):
    name = "orders"
    path = "/admin/api/{api_version}/orders.json"
    records_path = "orders"
    params = {"status": "any", "order": "updated_at asc"}


class Checkouts(_ShopStream):
    name = "checkouts"
    path = "/admin/api/{api_version}/checkouts.json"
    records_path = "checkouts"


class Products(_ShopStream):
    name = "products"
    path = "/admin/api/{api_version}/products.json"
    records_path = "products"


class EcommerceConnector(HttpConnector):
    """Online shop (Shopify/WooCommerce-like): customers, orders, abandoned checkouts, product views."""

    name: ClassVar[str] = "ecommerce"
    title: ClassVar[str] = "E-commerce shop"
    config_model: ClassVar[type[ConnectorConfig]] = EcommerceConfig
    record_id_field: ClassVar[str | None] = "id"
    streams = (Orders, Customers, Checkouts, Products)
    webhook = WebhookSpec(
        signature_header="X-Shop-Hmac-Sha256", timestamp_header="X-Shop-Triggered-At", encoding="base64",
        prefix="", topic_header="X-Shop-Topic",
        topics={"orders/create": "orders", "orders/updated": "orders", "orders/paid": "orders",
                "orders/cancelled": "orders", "orders/fulfilled": "orders", "customers/create": "customers",
                "customers/update": "customers", "checkouts/create": "checkouts", "checkouts/update": "checkouts",
                "pixel/product_viewed": "storefront", "pixel/search_submitted": "storefront",
                "pixel/cart_viewed": "storefront", "pixel/product_added_to_wishlist": "storefront",
                "products/create": "products", "products/update": "products"},
    )
    config: EcommerceConfig

    def stream_of(self, record: SourceRecord) -> str:
        """Which stream a record belongs to, from its shape (webhooks and demo data carry no stream name)."""
        if "line_items" in record:
            if "financial_status" in record or "order_number" in record or "cancelled_at" in record:
                return "orders"
            return "checkouts"
        if "clientId" in record or record.get("name") in _STOREFRONT_EVENTS:
            return "storefront"
        if "variants" in record:
            return "products"
        return "customers"

    def normalize(self, record: SourceRecord, *, stream: str | None = None) -> list[dict[str, Any]]:
        stream = stream or self.stream_of(record)
        if stream == "orders":
            return self._order(record)
        if stream == "customers":
            return self._customer(record)
        if stream == "checkouts":
            return self._checkout(record)
        if stream in _STOREFRONT_STREAMS:
            return self._storefront(record)
        if stream == "products":
            return self._products(record)
        raise SchemaViolation(f"unknown e-commerce stream {stream!r}", field="<stream>", value=stream)

    # -- helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _identities(record: SourceRecord) -> list[dict[str, str]]:
        customer = record.get("customer") or {}
        ids: list[dict[str, str]] = []
        add_identity(ids, "ecom_customer_id", customer.get("id"))
        add_identity(ids, "email", record.get("email") or record.get("contact_email") or customer.get("email"))
        phone = record.get("phone") or customer.get("phone")
        if not phone:
            billing = record.get("billing_address") or {}
            phone = billing.get("phone")
        add_identity(ids, "phone", phone)
        if not ids:
            raise SchemaViolation("no email, phone or customer id: the record cannot be attributed",
                                  field="email", value=None)
        return ids

    @staticmethod
    def _traits(person: Mapping[str, Any], address: Mapping[str, Any] | None) -> dict[str, Any]:
        traits: dict[str, Any] = {}
        if first := text(person.get("first_name")):
            traits["first_name"] = first
        if last := text(person.get("last_name")):
            traits["last_name"] = last
        if address:
            if city := text(address.get("city")):
                traits["city"] = city
            if postal := text(address.get("zip")):
                traits["postal_code"] = postal
            country = text(address.get("country_code"))
            if country and len(country) == 2:
                traits["country"] = country.upper()
            if street := text(address.get("address1")):
                traits["address"] = street
        return traits

    def _items(self, lines: Any, field: str) -> list[dict[str, Any]]:
        items = []
        for i, line in enumerate(lines or ()):
            sku = text(line.get("sku")) or text(line.get("variant_id")) or text(line.get("product_id"))
            if sku is None:
                raise SchemaViolation(f"{field}.{i}: line item has no sku, variant or product id",
                                      field=f"{field}.{i}.sku", value=None)
            item: dict[str, Any] = {"sku": sku, "quantity": line.get("quantity", 1)}
            if name := text(line.get("title") or line.get("name")):
                item["name"] = name
            price = line.get("price")
            if price is not None and price != "":
                # The payload model parses the decimal (and names properties.items.N.price if it cannot).
                item["price"] = price if type(price) is str else parse_decimal(price, field=f"{field}.{i}.price")
            if category := text(line.get("product_type")):
                item["category"] = category
            items.append(item)
        return items

    # -- streams -------------------------------------------------------------------------------------

    def _order(self, order: SourceRecord) -> list[dict[str, Any]]:
        order_id = text(require(order, "id"))
        assert order_id is not None
        placed_at = parse_datetime(require(order, "created_at"), field="created_at")
        identities = self._identities(order)
        customer = order.get("customer") or {}
        billing = order.get("billing_address") or order.get("shipping_address")
        traits = self._traits(customer or billing or {}, billing or customer.get("default_address"))
        currency = text(order.get("currency")) or self.config.currency
        props: dict[str, Any] = {
            "order_id": order_id,
            "total": parse_decimal(order.get("total_price"), field="total_price"),
            "currency": currency,
            "items": self._items(order.get("line_items"), "line_items"),
            "channel": text(order.get("source_name")),
            "status": text(order.get("financial_status")),
        }
        if number := text(order.get("name") or order.get("order_number")):
            props["order_number"] = number
        unpaid = order.get("financial_status") in _UNPAID_STATUSES or order.get("needs_payment") is True
        if unpaid and not order.get("cancelled_at") and (payment_url := text(order.get("payment_url"))):
            if not payment_url.startswith(("https://", "http://")):
                raise SchemaViolation("payment_url: not an http(s) URL", field="payment_url", value=payment_url)
            placed_props: dict[str, Any] | None = {"payment_url": payment_url}
        else:
            placed_props = None
        discount = parse_decimal(order.get("total_discounts"), field="total_discounts")
        if discount:
            props["discount"] = discount
        if codes := order.get("discount_codes"):
            props["discount_codes"] = [text(c.get("code")) for c in codes if isinstance(c, Mapping)]
        keep_unknown(order, _ORDER_KNOWN, props)
        context: dict[str, Any] = {"channel": "ecommerce"}
        if ip := text(order.get("browser_ip")):
            context["ip"] = ip
        client = order.get("client_details") or {}
        if ua := text(client.get("user_agent")):
            context["user_agent"] = ua

        base = {"identities": identities, "traits": traits, "context": context}
        events = [{**base, "type": "order.placed", "occurred_at": placed_at,
                   "properties": {**props, **placed_props} if placed_props else props}]
        if order.get("financial_status") in _PAID_STATUSES:
            paid_at = (order.get("paid_at") or order.get("date_paid") or order.get("processed_at")
                       or order["created_at"])
            events.append({**base, "type": "order.paid", "properties": props,
                           "occurred_at": parse_datetime(paid_at, field="paid_at")})
        if cancelled := order.get("cancelled_at"):
            cancelled_props = {**props, "reason": text(order.get("cancel_reason"))}
            events.append({**base, "type": "order.cancelled", "properties": cancelled_props,
                           "occurred_at": parse_datetime(cancelled, field="cancelled_at")})
        for i, refund in enumerate(order.get("refunds") or ()):
            events.append(self._refund(order_id, currency, refund, i, base))
        return events

    def _refund(self, order_id: str, currency: str, refund: Mapping[str, Any], i: int,
                base: dict[str, Any]) -> dict[str, Any]:
        field = f"refunds.{i}"
        refund_id = text(refund.get("id"))
        if refund_id is None:
            raise SchemaViolation(f"{field}: refund has no id", field=f"{field}.id", value=None)
        lines = refund.get("refund_line_items") or ()
        items = self._items([{**(r.get("line_item") or {}), "quantity": r.get("quantity", 1)} for r in lines],
                            f"{field}.refund_line_items")
        total = parse_decimal(refund.get("amount"), field=f"{field}.amount")
        if total is None and lines:
            total = sum((parse_decimal(r.get("subtotal"), field=f"{field}.subtotal") or Decimal(0)
                         for r in lines), Decimal(0))
        props = {"order_id": order_id, "total": total, "currency": currency, "items": items,
                 "reason": text(refund.get("note")), "refund_id": refund_id}
        return {**base, "type": "order.returned", "source_record_id": f"{order_id}/refunds/{refund_id}",
                "occurred_at": parse_datetime(require(refund, "created_at"), field=f"{field}.created_at"),
                "properties": props}

    def _customer(self, customer: SourceRecord) -> list[dict[str, Any]]:
        cid = text(require(customer, "id"))
        updated = require(customer, "updated_at")
        ids: list[dict[str, str]] = []
        add_identity(ids, "ecom_customer_id", cid)
        add_identity(ids, "email", customer.get("email"))
        add_identity(ids, "phone", customer.get("phone"))
        traits = self._traits(customer, customer.get("default_address"))
        keep_unknown(customer, _CUSTOMER_KNOWN, traits, prefix="shop_")
        events: list[dict[str, Any]] = [{
            "type": "customer.updated", "source_record_id": f"{cid}@{updated}",
            "occurred_at": parse_datetime(updated, field="updated_at"),
            "identities": ids, "traits": traits, "context": {"channel": "ecommerce"},
        }]
        for key, channel in (("email_marketing_consent", "email"), ("sms_marketing_consent", "sms")):
            consent = customer.get(key)
            if not isinstance(consent, Mapping):
                continue
            status = _CONSENT_STATES.get(str(consent.get("state")))
            if status is None:
                continue  # "not_subscribed"/"pending": no decision by the customer yet
            when = consent.get("consent_updated_at") or updated
            events.append({
                "type": "consent.changed", "source_record_id": f"{cid}/{channel}_consent@{when}",
                "occurred_at": parse_datetime(when, field=f"{key}.consent_updated_at"),
                "identities": ids, "properties": {
                    "channel": channel, "status": status, "opt_in_level": text(consent.get("opt_in_level")),
                    # The evidence the consents table keeps: a confirmed opt-in is the shop's double opt-in.
                    "evidence": {"method": "double_opt_in" if consent.get("opt_in_level") == "confirmed_opt_in"
                                 else "form", "reference": f"{self.instance}:{key}"}},
                "context": {"channel": "ecommerce"},
            })
        return events

    def _checkout(self, checkout: SourceRecord) -> list[dict[str, Any]]:
        if checkout.get("completed_at"):
            return []  # converted into an order; order.placed carries it
        cart_id = text(checkout.get("token")) or text(require(checkout, "id"))
        updated = require(checkout, "updated_at")
        customer = checkout.get("customer") or {}
        props: dict[str, Any] = {
            "cart_id": cart_id,
            "total": parse_decimal(checkout.get("total_price"), field="total_price"),
            "currency": text(checkout.get("currency")) or self.config.currency,
            "items": self._items(checkout.get("line_items"), "line_items"),
            "checkout_url": text(checkout.get("abandoned_checkout_url")),
        }
        return [{
            "type": "cart.updated", "source_record_id": f"{cart_id}@{updated}",
            "occurred_at": parse_datetime(updated, field="updated_at"),
            "identities": self._identities(checkout), "traits": self._traits(customer, None),
            "properties": props, "context": {"channel": "ecommerce"},
        }]

    def _products(self, product: SourceRecord) -> list[dict[str, Any]]:
        """One ``product.updated`` per variant with a SKU (the unit a customer buys and a shop stocks)."""
        at = parse_datetime(require(product, "updated_at"), field="updated_at")
        path = [part.strip() for part in str(product.get("product_type") or "").split(">") if part.strip()]
        durable = bool(set(path) & set(self.config.durable_categories)) if self.config.durable_categories else None
        image = text((product.get("image") or {}).get("src"))
        url = (f"{self.config.storefront_url.rstrip('/')}/products/{product['handle']}"
               if self.config.storefront_url and text(product.get("handle")) else None)
        status = text(product.get("status"))
        out = []
        for n, variant in enumerate(product.get("variants") or []):
            sku = text(variant.get("sku"))
            if sku is None:
                continue  # a variant the shop does not stock by SKU cannot be matched to orders
            title, vtitle = text(product.get("title")), text(variant.get("title"))
            props: dict[str, Any] = {
                "sku": sku,
                "name": f"{title} ({vtitle})" if title and vtitle and vtitle != "Default Title" else title or vtitle,
                "category_path": path, "brand": text(product.get("vendor")),
                "price": parse_decimal(variant.get("price"), field=f"variants.{n}.price"),
                "old_price": parse_decimal(variant.get("compare_at_price"), field=f"variants.{n}.compare_at_price"),
                "currency": self.config.currency, "image_url": image, "product_url": url,
                "durable": durable, "active": status == "active" if status else None,
            }
            if variant.get("inventory_quantity") is not None:
                qty = parse_decimal(variant["inventory_quantity"], field=f"variants.{n}.inventory_quantity")
                props["availability"] = {"online": max(qty or Decimal(0), Decimal(0))}
            out.append({"type": "product.updated", "occurred_at": at,
                        "source_record_id": f"{sku}@{at.isoformat()}",
                        "properties": {k: v for k, v in props.items() if v is not None and v != []}})
        return out

    # -- storefront (web pixel) events ----------------------------------------------------------------

    def _storefront(self, event: SourceRecord) -> list[dict[str, Any]]:
        """One pixel event: who (``customerId``, the browser's ``clientId``), when, and by ``name`` what."""
        name = text(require(event, "name"))
        mapper = _STOREFRONT_EVENTS.get(name or "")
        if mapper is None:
            raise SchemaViolation(f"name: unmapped storefront event {name!r} (mapped: "
                                  f"{', '.join(sorted(_STOREFRONT_EVENTS))})", field="name", value=name)
        ids: list[dict[str, str]] = []
        add_identity(ids, "ecom_customer_id", event.get("customerId"))
        add_identity(ids, "anonymous_id", event.get("clientId"))
        if not ids:
            raise SchemaViolation(f"{name} event has neither clientId nor customerId", field="clientId")
        data = event.get("customData") if event.get("data") is None else event.get("data")
        if not isinstance(data, Mapping):
            raise SchemaViolation(f"{name} event has no data object", field="data", value=data)
        page = _object(event.get("context"))
        href = text(_object(_object(page.get("document")).get("location")).get("href"))
        context: dict[str, Any] = {"channel": "web", "page_url": href}
        if ua := text(_object(page.get("navigator")).get("userAgent")):
            context["user_agent"] = ua
        event_type, props = mapper(self, data, href)
        return [{
            "type": event_type,
            "occurred_at": parse_datetime(require(event, "timestamp"), field="timestamp"),
            "identities": ids, "properties": props, "context": context,
        }]

    @staticmethod
    def _variant(variant: Any, field: str) -> dict[str, Any]:
        """A pixel ``ProductVariant`` as a product line: sku (else the variant id), name, price, category."""
        if not isinstance(variant, Mapping):
            raise SchemaViolation(f"{field}: no product variant", field=field, value=variant)
        product = _object(variant.get("product"))
        sku = text(variant.get("sku")) or text(variant.get("id"))
        if sku is None:
            raise SchemaViolation(f"{field}: names no variant sku or id", field=f"{field}.sku")
        price = _object(variant.get("price"))
        return {"sku": sku, "name": text(product.get("title")) or text(variant.get("title")),
                "price": parse_decimal(price.get("amount"), field=f"{field}.price.amount"),
                "currency": text(price.get("currencyCode")), "category": text(product.get("type"))}

    def _product_viewed(self, data: Mapping[str, Any], href: str | None) -> tuple[str, dict[str, Any]]:
        line = self._variant(data.get("productVariant"), "data.productVariant")
        return "product.viewed", {**line, "url": href}

    def _wishlist_added(self, data: Mapping[str, Any], href: str | None) -> tuple[str, dict[str, Any]]:
        line = self._variant(data.get("productVariant"), "data.productVariant")
        del line["category"]  # a wish names the product; its category comes from the catalogue
        return "wishlist.added", {**line, "url": href}

    def _search_submitted(self, data: Mapping[str, Any], href: str | None) -> tuple[str, dict[str, Any]]:
        result = data.get("searchResult")
        if not isinstance(result, Mapping):
            raise SchemaViolation("data.searchResult: a search event has no result", field="data.searchResult")
        query = text(result.get("query"))
        if query is None:
            raise SchemaViolation("data.searchResult.query: a search event has no query",
                                  field="data.searchResult.query")
        found = result.get("productVariants")
        if found is not None and not isinstance(found, list):
            raise SchemaViolation("data.searchResult.productVariants: not a list",
                                  field="data.searchResult.productVariants")
        # The pixel lists the variants the results page showed: their number is the results count it knows.
        return "search.performed", {"query": query, "results_count": None if found is None else len(found),
                                    "url": href}

    def _cart_viewed(self, data: Mapping[str, Any], href: str | None) -> tuple[str, dict[str, Any]]:
        cart = data.get("cart")
        if not isinstance(cart, Mapping):
            raise SchemaViolation("data.cart: a cart event has no cart", field="data.cart")
        cart_id = text(cart.get("id"))
        if cart_id is None:
            raise SchemaViolation("data.cart.id: the cart has no id", field="data.cart.id")
        lines = cart.get("lines") or []
        if not isinstance(lines, list):
            raise SchemaViolation("data.cart.lines: not a list", field="data.cart.lines")
        items = []
        for n, line in enumerate(lines):
            if not isinstance(line, Mapping):
                raise SchemaViolation(f"data.cart.lines.{n}: not a cart line", field=f"data.cart.lines.{n}")
            item = self._variant(line.get("merchandise"), f"data.cart.lines.{n}.merchandise")
            item.pop("currency")
            quantity = parse_decimal(line.get("quantity"), field=f"data.cart.lines.{n}.quantity")
            item["quantity"] = Decimal(1) if quantity is None else quantity
            items.append({k: v for k, v in item.items() if v is not None})
        total = _object(_object(cart.get("cost")).get("totalAmount"))
        checkout = f"{self.config.storefront_url.rstrip('/')}/cart" if self.config.storefront_url else None
        return "cart.updated", {
            "cart_id": cart_id, "items": items,
            "total": parse_decimal(total.get("amount"), field="data.cart.cost.totalAmount.amount"),
            "currency": text(total.get("currencyCode")) or self.config.currency, "checkout_url": checkout}


def _object(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else an empty one: optional nested parts of a pixel event (its page,
    a price) that a broken or hostile sender may give as anything."""
    return value if isinstance(value, Mapping) else {}


_StorefrontMapper = Callable[[EcommerceConnector, Mapping[str, Any], str | None], tuple[str, dict[str, Any]]]
_STOREFRONT_EVENTS: dict[str, _StorefrontMapper] = {
    "product_viewed": EcommerceConnector._product_viewed,
    "search_submitted": EcommerceConnector._search_submitted,
    "cart_viewed": EcommerceConnector._cart_viewed,
    "product_added_to_wishlist": EcommerceConnector._wishlist_added,
}
"""Pixel event name -> its mapper (an event name not here is a record error)."""
