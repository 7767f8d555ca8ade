"""The delivery stage's send log: the ``messages`` table and the suppression list
(:class:`~cdp_hub.store.messages.MessageRepository`, which owns their SQL and documents the row's states),
plus detaching addresses that can never work again from their profiles.
"""

from __future__ import annotations

from collections.abc import Sequence

from cdp_hub.store import ProfileRepository
from cdp_hub.store.messages import FINAL_STATUSES, LogRow, MessageRepository, Outcome

__all__ = ["FINAL_STATUSES", "LogRow", "Outcome", "SendLog"]


class SendLog(MessageRepository):
    """Reads and writes the send log and the suppression list; detaches dead addresses."""

    async def remove_identities(self, identities: Sequence[tuple[str, str]]) -> None:
        """Detach addresses that can never work again (an unregistered push token) from their profiles."""
        if not identities:
            return
        await ProfileRepository(self.store).remove_identities(identities)
