"""The send log (``messages`` table) and the suppression list: every statement on them, in set-based SQL.

One row per message intent, keyed by its deterministic ``message_id``:

    queued ─claim─▶ sending ─▶ sent ─callback─▶ delivered ─▶ opened ─▶ clicked
    (new intents are inserted as ``sending`` at once: register_claimed)
                      │  └───▶ failed | skipped | refused      (final: never sent again)
                      └──────▶ deferred | dead                 (not final: a DLQ replay sends it)

``refused``: consent or the suppression list stopped it at send time (a ``message.decided`` event says why).

A redelivered intent whose row is final is not sent again; its receipt is re-emitted from the row (the event
id is deterministic, so downstream it is a no-op). A row left in ``sending`` by a crash is sent again, with
the same ``message_id`` as the provider's idempotency key where the provider has one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdp_hub.store.db import Store

__all__ = ["FINAL_STATUSES", "LogRow", "MessageRepository", "Outcome"]

FINAL_STATUSES = ("sent", "delivered", "opened", "clicked", "failed", "skipped", "refused")
# Order of receipts from callbacks: a status only moves forward (a late "delivered" never undoes "opened").
_PROGRESS = ("queued", "sending", "deferred", "dead", "sent", "delivered", "opened", "clicked")


@dataclass(frozen=True, slots=True)
class LogRow:
    """One send-log row as delivery and callbacks read it."""

    message_id: str
    profile_id: str | None
    scenario: str | None
    channel: str
    status: str
    template: str | None
    address: str | None
    address_kind: str | None
    provider: str | None
    provider_message_id: str | None
    error: str | None
    final_at: datetime | None = None
    """When the row became final: a re-emitted receipt carries this time, so its event is the same event."""

    @classmethod
    def from_record(cls, r: Any) -> LogRow:
        return cls(
            message_id=r["message_id"], profile_id=str(r["profile_id"]) if r["profile_id"] else None,
            scenario=r["scenario"], channel=r["channel"], status=r["status"], template=r["template"],
            address=r["address"], address_kind=r["address_kind"], provider=r["provider"],
            provider_message_id=r["provider_message_id"], error=r["error"], final_at=r["final_at"],
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one claimed message, written back in one statement per batch."""

    message_id: str
    status: str
    channel: str
    address: str | None = None
    address_kind: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None
    at: datetime | None = None
    """When it happened (the receipt's time); stored so that a re-emitted receipt is the same event."""


_COLUMNS = ("message_id, profile_id, scenario, channel, status, template, address, address_kind, provider, "
            "provider_message_id, error, coalesce(sent_at, updated_at) AS final_at")

_CLAIM = """
UPDATE messages SET status = 'sending', attempts = attempts + 1, updated_at = now()
 WHERE message_id = ANY($1::text[]) AND NOT (status = ANY($2::text[]))
RETURNING message_id
"""
_ROWS = f"SELECT {_COLUMNS} FROM messages WHERE message_id = ANY($1::text[])"
_RECORD = """
UPDATE messages AS m
   SET status = u.status, channel = u.channel, address = u.address, address_kind = u.address_kind,
       provider = u.provider, provider_message_id = u.provider_message_id, error = u.error,
       sent_at = CASE WHEN u.status = 'sent' THEN coalesce(u.at, now()) ELSE m.sent_at END,
       updated_at = coalesce(u.at, now())
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
              $8::text[], $9::timestamptz[])
       AS u(message_id, status, channel, address, address_kind, provider, provider_message_id, error, at)
 WHERE m.message_id = u.message_id AND m.status = 'sending'
"""
# A callback names messages by our id or by the provider's: two index lookups (primary key, and
# messages_provider_idx), not one OR that a planner may answer with a scan of the whole log.
_FIND_FOR_CALLBACK = f"""
SELECT {_COLUMNS} FROM messages WHERE message_id = ANY($1::text[])
UNION
SELECT {_COLUMNS} FROM messages WHERE provider = $2 AND provider_message_id = ANY($3::text[])
"""
_FAIL_ON_RECEIPT = """
UPDATE messages SET status = 'failed', error = $2, updated_at = now()
 WHERE message_id = $1 AND status IN ('sending', 'sent', 'delivered')
"""
_LOGGED_INTENTS = """
SELECT m.profile_id, m.scenario, m.message_id FROM messages m
  JOIN unnest($1::uuid[], $2::text[]) AS o(profile_id, scenario)
    ON m.profile_id = o.profile_id AND m.scenario = o.scenario
"""


class MessageRepository:
    """Reads and writes the send log and the suppression list."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def register(self, rows: Sequence[tuple[str, uuid.UUID, str, str, str, str, str | None,
                                                   uuid.UUID | None]]) -> None:
        """Insert new intents ``(message_id, profile_id, scenario, channel, template, category, locale,
        trigger_event_id)``; existing ones are left as they are."""
        if not rows:
            return
        cols = list(zip(*rows, strict=True))
        await self.store.execute(
            """INSERT INTO messages (message_id, profile_id, scenario, channel, template, category, locale,
                                     trigger_event_id)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                                    $7::text[], $8::uuid[])
               ON CONFLICT (message_id) DO NOTHING""",
            *(list(c) for c in cols),
        )

    async def register_claimed(self, rows: Sequence[tuple[str, uuid.UUID, str, str, str, str, str | None,
                                                           uuid.UUID | None]]) -> set[str]:
        """:meth:`register` and :meth:`claim` in one statement for the new intents: they are inserted claimed
        (``sending``, attempt 1) and their ids returned. Existing ones are left as they are (not returned):
        the caller claims those with :meth:`claim`. Most intents are new, so a batch is usually one statement
        and each row one write instead of an insert and an update."""
        if not rows:
            return set()
        cols = list(zip(*rows, strict=True))
        records = await self.store.fetch(
            """INSERT INTO messages (message_id, profile_id, scenario, channel, template, category, locale,
                                     trigger_event_id, status, attempts)
               SELECT *, 'sending', 1 FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                                                  $6::text[], $7::text[], $8::uuid[])
               ON CONFLICT (message_id) DO NOTHING
               RETURNING message_id""",
            *(list(c) for c in cols),
        )
        return {r["message_id"] for r in records}

    async def claim(self, message_ids: Sequence[str]) -> set[str]:
        """Mark the non-final ones ``sending`` (one more attempt); return their ids."""
        if not message_ids:
            return set()
        rows = await self.store.fetch(_CLAIM, list(message_ids), list(FINAL_STATUSES))
        return {r["message_id"] for r in rows}

    async def rows(self, message_ids: Sequence[str]) -> dict[str, LogRow]:
        """The rows of ``message_ids`` that exist, by message id."""
        if not message_ids:
            return {}
        records = await self.store.fetch(_ROWS, list(message_ids))
        return {r["message_id"]: LogRow.from_record(r) for r in records}

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """Write the outcomes of claimed messages. A row a callback already moved on is left alone."""
        if not outcomes:
            return
        await self.store.execute(
            _RECORD,
            [o.message_id for o in outcomes], [o.status for o in outcomes], [o.channel for o in outcomes],
            [o.address for o in outcomes], [o.address_kind for o in outcomes], [o.provider for o in outcomes],
            [o.provider_message_id for o in outcomes], [o.error for o in outcomes], [o.at for o in outcomes],
        )

    async def find_for_callback(self, message_ids: Sequence[str], provider: str,
                                provider_message_ids: Sequence[str]) -> list[LogRow]:
        """Rows named by a callback, by our id or by ``provider``'s. Two index lookups (primary key, and
        ``messages_provider_idx``), not one OR that a planner may answer with a scan of the whole log."""
        records = await self.store.fetch(_FIND_FOR_CALLBACK, list(message_ids), provider,
                                         list(provider_message_ids))
        return [LogRow.from_record(r) for r in records]

    async def apply_receipt(self, message_id: str, status: str, reason: str | None) -> None:
        """Move a row forward on a callback receipt (a ``failed`` one only from sending/sent/delivered)."""
        if status == "failed":
            await self.store.execute(_FAIL_ON_RECEIPT, message_id, reason)
            return
        column = {"delivered": "delivered_at", "opened": "opened_at", "clicked": "clicked_at"}.get(status)
        if column is None:
            return
        await self.store.execute(
            f"""UPDATE messages
                SET {column} = COALESCE({column}, now()), updated_at = now(),
                    status = CASE WHEN array_position($3::text[], status) < array_position($3::text[], $2::text)
                                  THEN $2 ELSE status END
                WHERE message_id = $1""",
            message_id, status, list(_PROGRESS),
        )

    async def logged_intents(self, pairs: Sequence[tuple[uuid.UUID, str]]) -> dict[tuple[uuid.UUID, str], set[str]]:
        """The message ids logged for each ``(profile_id, scenario)`` pair (pairs without any are absent):
        the durable half of the once-per-profile rule, which holds when Redis has lost its keys."""
        if not pairs:
            return {}
        rows = await self.store.fetch(
            _LOGGED_INTENTS,
            [p[0] for p in pairs], [p[1] for p in pairs])
        logged: dict[tuple[uuid.UUID, str], set[str]] = {}
        for r in rows:
            logged.setdefault((r["profile_id"], r["scenario"]), set()).add(r["message_id"])
        return logged

    async def outcome_counts(self, scenario: str, trigger_event_id: uuid.UUID) -> dict[str, int]:
        """Send-log rows of one scenario and trigger by status (a campaign run's messages: the run id is
        their trigger)."""
        rows = await self.store.fetch(
            """SELECT status, count(*) AS n FROM messages WHERE scenario = $1 AND trigger_event_id = $2
                GROUP BY status""", scenario, trigger_event_id)
        return {r["status"]: r["n"] for r in rows}

    async def status_counts(self) -> list[dict[str, Any]]:
        """``{"channel", "status", "n"}`` for every channel and status in the log (the demo's summary)."""
        rows = await self.store.fetch(
            "SELECT channel, status, count(*) AS n FROM messages GROUP BY channel, status ORDER BY channel, status")
        return [dict(r) for r in rows]

    # -- suppressions ---------------------------------------------------------------------------------

    async def suppressed(self, addresses: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The ``(kind, value)`` addresses among ``addresses`` that are on the suppression list."""
        pairs = list(set(addresses))
        if not pairs:
            return set()
        rows = await self.store.fetch(
            """SELECT s.kind, s.value FROM suppressions s
               JOIN unnest($1::text[], $2::text[]) AS a(kind, value) ON s.kind = a.kind AND s.value = a.value""",
            [p[0] for p in pairs], [p[1] for p in pairs],
        )
        return {(r["kind"], r["value"]) for r in rows}

    async def suppress(self, entries: Sequence[tuple[str, str, str, str, str]]) -> None:
        """Add ``(kind, value, channel, reason, message_id)`` entries; an existing one is kept."""
        if not entries:
            return
        cols = list(zip(*entries, strict=True))
        await self.store.execute(
            """INSERT INTO suppressions (kind, value, channel, reason, message_id)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
               ON CONFLICT (kind, value) DO NOTHING""",
            *(list(c) for c in cols),
        )

    async def unsuppress(self, kind: str, value: str) -> bool:
        """Take an address off the suppression list; False when it was not on it."""
        return (await self.store.execute("DELETE FROM suppressions WHERE kind = $1 AND value = $2",
                                         kind, value)) != "DELETE 0"
