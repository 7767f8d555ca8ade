"""One lifecycle for every long-lived client: ``start()``, idempotent ``stop()``, ``async with``."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["AsyncLifecycle"]


class AsyncLifecycle:
    """Mixin: ``async with thing:`` starts it and stops it, whatever happens inside."""

    async def start(self) -> None:
        """Open connections. Calling it on a started object does nothing."""

    async def stop(self) -> None:
        """Close them. Idempotent."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
