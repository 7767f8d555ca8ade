"""The delivery stage's send log: the ``messages`` table and the suppression list
(:class:`~cdp_hub.store.messages.MessageRepository`, which owns their SQL and documents the row's states),
plus detaching addresses that can never work again from their profiles.
"""

from __future__ import annotations

from collections.abc import Sequence

from cdp_hub.store.messages import FINAL_STATUSES, LogRow, MessageRepository, Outcome

__all__ = ["FINAL_STATUSES", "LogRow", "Outcome", "SendLog"]


class SendLog(MessageRepository):
    """Reads and writes the send log and the suppression list; detaches dead addresses."""

    async def remove_identities(self, identities: Sequence[tuple[str, str]]) -> None:
        """Detach addresses that can never work again (an unregistered push token) from their profiles."""
        if not identities:
            return
        await self.store.execute(
            """DELETE FROM identities i USING unnest($1::text[], $2::text[]) AS d(kind, value)
               WHERE i.kind = d.kind AND i.value = d.value""",
            [i[0] for i in identities], [i[1] for i in identities],
        )
