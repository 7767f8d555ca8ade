"""Paginators: how a REST stream gets from one page to the next.

A paginator is stateless (one instance may sit in a class attribute); the position travels in the
:class:`PageRequest` it returns::

    first = paginator.first(base_request, page_size)
    while request:
        response = send(request); records = parse(response)
        request = paginator.next(request, response, records, page_size)

==============================  ==========================================================================
:class:`SinglePage`             one request, no pagination
:class:`PageNumberPaginator`    ``?page=1&per_page=100``, ``page=2``, ... until a short page (or the total)
:class:`OffsetPaginator`        ``?offset=0&limit=100`` (``$skip``/``$top`` for OData) until a short page
:class:`CursorPaginator`        a token from the body (``paging.next.after``) or a header, sent as a param
:class:`LinkHeaderPaginator`    the ``Link: <...>; rel="next"`` header's URL (Shopify, GitHub)
==============================  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from cdp_hub.connector.mapping import dig

__all__ = [
    "CursorPaginator",
    "LinkHeaderPaginator",
    "OffsetPaginator",
    "PageNumberPaginator",
    "PageRequest",
    "Paginator",
    "SinglePage",
]


@dataclass(frozen=True)
class PageRequest:
    """One page's request: the URL and its query parameters (and a JSON body for POST searches)."""

    url: str
    params: Mapping[str, Any] = field(default_factory=dict)
    json: Any = None
    number: int = 1

    def with_params(self, **params: Any) -> PageRequest:
        return replace(self, params={**self.params, **params}, number=self.number + 1)


def _with_page_size(request: PageRequest, size_param: str | None, page_size: int) -> PageRequest:
    """The first request with the page size asked for, when the API takes one."""
    if size_param:
        return replace(request, params={**request.params, size_param: page_size})
    return request


class Paginator:
    """Base class. :meth:`first` may add parameters; :meth:`next` returns the next request or ``None``."""

    def first(self, request: PageRequest, page_size: int) -> PageRequest:
        return request

    def next(self, request: PageRequest, response: httpx.Response, records: Sequence[Any],
             page_size: int) -> PageRequest | None:
        raise NotImplementedError


class SinglePage(Paginator):
    """The endpoint returns everything in one response."""

    def next(self, request: PageRequest, response: httpx.Response, records: Sequence[Any],
             page_size: int) -> PageRequest | None:
        return None


@dataclass(frozen=True)
class PageNumberPaginator(Paginator):
    """Page numbers. Stops on a short page, or when ``total_pages_path`` in the body says it was the last."""

    page_param: str = "page"
    size_param: str | None = "per_page"
    start: int = 1
    total_pages_path: str | None = None

    def first(self, request: PageRequest, page_size: int) -> PageRequest:
        params = {**request.params, self.page_param: self.start}
        if self.size_param:
            params[self.size_param] = page_size
        return replace(request, params=params)

    def next(self, request: PageRequest, response: httpx.Response, records: Sequence[Any],
             page_size: int) -> PageRequest | None:
        page = int(request.params.get(self.page_param, self.start))
        if self.total_pages_path:
            total = dig(_json(response), self.total_pages_path)
            if total is not None:
                return request.with_params(**{self.page_param: page + 1}) if page < int(total) else None
        if len(records) < page_size or not records:
            return None
        return request.with_params(**{self.page_param: page + 1})


@dataclass(frozen=True)
class OffsetPaginator(Paginator):
    """Offset and limit. Stops on a short page."""

    offset_param: str = "offset"
    limit_param: str = "limit"

    def first(self, request: PageRequest, page_size: int) -> PageRequest:
        return replace(request, params={**request.params, self.offset_param: 0, self.limit_param: page_size})

    def next(self, request: PageRequest, response: httpx.Response, records: Sequence[Any],
             page_size: int) -> PageRequest | None:
        if len(records) < page_size or not records:
            return None
        offset = int(request.params.get(self.offset_param, 0))
        return request.with_params(**{self.offset_param: offset + len(records)})


@dataclass(frozen=True)
class CursorPaginator(Paginator):
    """An opaque next-page token from the body (``token_path``) or a header, sent back as ``param``."""

    token_path: str | None = "next"
    header: str | None = None
    param: str = "cursor"
    size_param: str | None = "limit"

    def first(self, request: PageRequest, page_size: int) -> PageRequest:
        return _with_page_size(request, self.size_param, page_size)

    def next(self, request: PageRequest, response: httpx.Response, records: Sequence[Any],
             page_size: int) -> PageRequest | None:
        token = response.headers.get(self.header) if self.header else None
        if token is None and self.token_path:
            token = dig(_json(response), self.token_path)
        if token in (None, "") or token == request.params.get(self.param):
            return None  # no token, or the same token again (a server bug that would loop forever)
        return request.with_params(**{self.param: token})


@dataclass(frozen=True)
class LinkHeaderPaginator(Paginator):
    """Follow the ``Link`` header's ``rel="next"`` URL, which carries every parameter itself."""

    rel: str = "next"
    size_param: str | None = "limit"

    def first(self, request: PageRequest, page_size: int) -> PageRequest:
        return _with_page_size(request, self.size_param, page_size)

    def next(self, request: PageRequest, response: httpx.Response, records: Sequence[Any],
             page_size: int) -> PageRequest | None:
        link = response.links.get(self.rel)
        url = link.get("url") if link else None
        if not url:
            return None
        return PageRequest(url=str(response.url.join(url)), params={}, number=request.number + 1)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
