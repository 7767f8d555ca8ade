"""A respx-backed fake of a REST stream's upstream API, built from the stream's own declaration.

    api = MockApi(connector, "orders", records, page_size=2)
    with respx.mock() as router:
        api.install(router)
        ...   # the connector pages through `records` exactly as its paginator expects

The fake serves ``records`` filtered by the stream's ``cursor_param`` (records at or after the requested
cursor, like a real API), cut into pages of ``page_size``, and answers in the shape the stream's paginator
reads (page numbers, offsets, cursor tokens, ``Link`` headers; the records under ``records_path``). It can
also misbehave on purpose: queue responses (429 with ``Retry-After``, 5xx bursts, 401), fail from a page
on (a network error), or cancel the sync at a page (the process killed half way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import respx

from cdp_hub.connector.base import Connector
from cdp_hub.connector.pagination import (
    CursorPaginator,
    LinkHeaderPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    SinglePage,
)
from cdp_hub.connector.rest import RestStream

__all__ = ["MockApi"]


def _nest(path: str | None, value: Any, extra: Mapping[str, Any] | None = None) -> Any:
    if not path:
        return value
    body: dict[str, Any] = dict(extra or {})
    target = body
    parts = path.split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    return body


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    target = body
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


class MockApi:
    """The upstream API of one stream. ``calls`` records every request it answered."""

    def __init__(self, connector: Connector, stream: str, records: Sequence[Mapping[str, Any]], *,
                 page_size: int) -> None:
        stream_obj = connector.stream(stream)
        if not isinstance(stream_obj, RestStream):
            raise TypeError(f"MockApi fakes REST streams; {type(stream_obj).__name__} is not one")
        self.stream: RestStream = stream_obj
        self.records = list(records)
        self.page_size = page_size
        self.calls: list[httpx.Request] = []
        self.queued: list[httpx.Response | Exception] = []
        """Answers returned (or raised) before any normal page, one per request, first in first out."""
        self.fail_from_page: int | None = None
        """From this page index on, every request fails with a network error."""
        self.kill_at_page: int | None = None
        """Cancel the caller when it asks for this page index (a sync killed half way); once."""
        self.status: int | None = None
        """When set, every request is answered with this status (e.g. 401 for bad credentials)."""

    def install(self, router: respx.MockRouter) -> respx.Route:
        # httpx.URL percent-encodes a non-ASCII path (1C's Cyrillic entity names) the way requests carry it.
        return router.route(method=self.stream.method, url__startswith=str(httpx.URL(self.stream.url()))).mock(
            side_effect=self._answer)

    # -- serving ---------------------------------------------------------------------------------------

    def _visible(self, request: httpx.Request) -> list[Mapping[str, Any]]:
        stream = self.stream
        start = request.url.params.get(stream.cursor_param) if stream.cursor_param else None
        if start is None:
            return self.records
        key = stream.cursor_key(start)
        return [r for r in self.records if stream.cursor_value(r) is not None
                and stream.cursor_key(stream.cursor_value(r)) >= key]

    def _page_index(self, request: httpx.Request) -> int:
        p = self.stream.paginator
        params = request.url.params
        if isinstance(p, PageNumberPaginator):
            return int(params.get(p.page_param, p.start)) - p.start
        if isinstance(p, OffsetPaginator):
            return int(params.get(p.offset_param, 0)) // self.page_size
        if isinstance(p, CursorPaginator):
            token = params.get(p.param)
            return int(token[1:]) if token else 0
        if isinstance(p, LinkHeaderPaginator):
            token = params.get("page_info")
            return int(token[1:]) if token else 0
        return 0

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.queued:
            answer = self.queued.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        if self.status is not None:
            return httpx.Response(self.status, json={"error": "refused"})
        index = self._page_index(request)
        if self.kill_at_page is not None and index == self.kill_at_page:
            self.kill_at_page = None
            raise asyncio.CancelledError("the sync process was killed")
        if self.fail_from_page is not None and index >= self.fail_from_page:
            raise httpx.ConnectError("connection refused (the API went away)", request=request)
        visible = self._visible(request)
        paginator = self.stream.paginator
        size = len(visible) if isinstance(paginator, SinglePage) else self.page_size
        page = visible[index * size:(index + 1) * size]
        more = (index + 1) * size < len(visible)
        headers: dict[str, str] = {}
        body = _nest(self.stream.records_path, page)
        if isinstance(paginator, PageNumberPaginator) and paginator.total_pages_path and isinstance(body, dict):
            _set(body, paginator.total_pages_path, max(1, -(-len(visible) // size)))
        if isinstance(paginator, CursorPaginator) and more:
            if paginator.header:
                headers[paginator.header] = f"p{index + 1}"
            elif paginator.token_path and isinstance(body, dict):
                _set(body, paginator.token_path, f"p{index + 1}")
        if isinstance(paginator, LinkHeaderPaginator) and more:
            nxt = request.url.copy_with(params={"page_info": f"p{index + 1}", "limit": str(size)})
            headers["Link"] = f'<{nxt}>; rel="{paginator.rel}"'
        return httpx.Response(200, json=body, headers=headers)
