"""The store: PostgreSQL (or Greenplum) through an asyncpg pool, with versioned SQL migrations, and the
repositories that own the SQL of each table group (one class per group, constructed with the ``Store``).

    profiles/          ProfileRepository     profiles, identities, traits, merges, conflicts, suggestions
    events.py          EventRepository       events
    messages.py        MessageRepository     messages (the send log), suppressions
    timers.py          TimerRepository       scheduled_triggers
    journeys.py        JourneyRepository     journey_positions (each profile's place in each journey)
    segments/          SegmentRepository     segments, members, runs, changes (and the segment compiler)
    jobs.py            JobRepository         scheduler_runs, scheduler_emitted, job_runs
    deadletters.py     DeadLetterRepository  dead_letters
    connector_state.py ConnectorStateRepository  connector_state
    campaigns.py       CampaignRepository    campaign_runs, campaign_audience (runs and audience snapshots)
    consents.py        ConsentRepository     consents (every consent statement, with its evidence)
    products.py        ProductRepository     products, product_changes (the catalogue)
    recommendations.py RecommendationRepository  order_lines, product_pairs, product_popularity
"""

from cdp_hub.store.campaigns import CampaignRepository
from cdp_hub.store.connector_state import ConnectorStateRepository
from cdp_hub.store.consents import ConsentRepository, ConsentStatement
from cdp_hub.store.db import Store, open_store
from cdp_hub.store.deadletters import DeadLetterRepository
from cdp_hub.store.events import EventRepository
from cdp_hub.store.jobs import JobRepository
from cdp_hub.store.journeys import JourneyRepository
from cdp_hub.store.messages import MessageRepository
from cdp_hub.store.migrations import Migration, apply_migrations, load_migrations, render_sql
from cdp_hub.store.products import ProductRepository
from cdp_hub.store.profiles import ProfileRepository
from cdp_hub.store.recommendations import RecommendationRepository
from cdp_hub.store.segments import SegmentRepository
from cdp_hub.store.timers import TimerRepository

__all__ = [
    "CampaignRepository",
    "ConnectorStateRepository",
    "ConsentRepository",
    "ConsentStatement",
    "DeadLetterRepository",
    "EventRepository",
    "JobRepository",
    "JourneyRepository",
    "MessageRepository",
    "Migration",
    "ProductRepository",
    "ProfileRepository",
    "RecommendationRepository",
    "SegmentRepository",
    "Store",
    "TimerRepository",
    "apply_migrations",
    "load_migrations",
    "open_store",
    "render_sql",
]
