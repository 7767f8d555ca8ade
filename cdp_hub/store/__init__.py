"""The store: PostgreSQL (or Greenplum) through an asyncpg pool, with versioned SQL migrations."""

from cdp_hub.store.db import Store, open_store
from cdp_hub.store.events import EventRepository
from cdp_hub.store.migrations import Migration, apply_migrations, load_migrations, render_sql
from cdp_hub.store.profiles import ProfileRepository

__all__ = [
    "EventRepository",
    "Migration",
    "ProfileRepository",
    "Store",
    "apply_migrations",
    "load_migrations",
    "open_store",
    "render_sql",
]
