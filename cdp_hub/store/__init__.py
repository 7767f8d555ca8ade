"""The store: PostgreSQL (or Greenplum) through an asyncpg pool, with versioned SQL migrations, and the
repositories that own the SQL of each table group (one class per group, constructed with the ``Store``)."""

from cdp_hub.store.connector_state import ConnectorStateRepository
from cdp_hub.store.db import Store, open_store
from cdp_hub.store.deadletters import DeadLetterRepository
from cdp_hub.store.jobs import JobRepository
from cdp_hub.store.messages import MessageRepository
from cdp_hub.store.migrations import Migration, apply_migrations, load_migrations, render_sql
from cdp_hub.store.segments import SegmentRepository
from cdp_hub.store.timers import TimerRepository

__all__ = [
    "ConnectorStateRepository",
    "DeadLetterRepository",
    "JobRepository",
    "MessageRepository",
    "Migration",
    "SegmentRepository",
    "Store",
    "TimerRepository",
    "apply_migrations",
    "load_migrations",
    "open_store",
    "render_sql",
]
