"""A campaign audience seeded set-wise (one statement per table, fast for 50,000 or 1,000,000 profiles).

Customer ``g`` (1..n) has profile ``md5('<tag>:g')::uuid``, an e-mail identity and golden record, and is a
member of segment ``spring_buyers``; ``extra`` more customers are not members (none of them may get anything).
Who may get the campaign, by design:

    g % 10 == 0          in the exclusion segment ``complainers``            ─▶ not in the audience
    g % 5  == 1          no consent statement at all                           ─▶ no_consent (policy opt_in)
    g % 7  == 3          opted in, then opted out later                        ─▶ no_consent
    otherwise            opted in to e-mail marketing                          ─▶ one message

Used by tests/test_campaigns.py and bench/campaign.py.
"""

from __future__ import annotations

import uuid
from typing import Any

SEGMENT = "spring_buyers"
EXCLUDED = "complainers"


def profile_id(tag: str, g: int) -> uuid.UUID:
    import hashlib

    return uuid.UUID(hashlib.md5(f"{tag}:{g}".encode()).hexdigest())


def eligible(g: int) -> bool:
    return g % 10 != 0 and g % 5 != 1 and g % 7 != 3


def in_audience(g: int) -> bool:
    return g % 10 != 0


async def seed(store: Any, n: int, *, tag: str = "c", extra: int = 0, timezone: str = "UTC") -> None:
    """Seed ``n`` members (and ``extra`` non-members) set-wise; ``store`` is a started Store."""
    total = n + extra
    await store.execute(
        """INSERT INTO profiles (profile_id, golden)
           SELECT md5($1 || ':' || g)::uuid,
                  jsonb_build_object('email', 'c' || g || '@example.ru', 'first_name', 'Анна',
                                     'locale', 'ru', 'timezone', $3::text)
             FROM generate_series(1, $2) AS g""", tag, total, timezone)
    await store.execute(
        """INSERT INTO identities (kind, value, profile_id, source)
           SELECT 'email', $1 || '-c' || g || '@example.ru', md5($1 || ':' || g)::uuid, 'seed'
             FROM generate_series(1, $2) AS g""", tag, total)
    await store.execute(
        """INSERT INTO segment_members (profile_id, segment_id)
           SELECT md5($1 || ':' || g)::uuid, $3 FROM generate_series(1, $2) AS g""", tag, n, SEGMENT)
    await store.execute(
        """INSERT INTO segment_members (profile_id, segment_id)
           SELECT md5($1 || ':' || g)::uuid, $3 FROM generate_series(1, $2) AS g WHERE g % 10 = 0""",
        tag, n, EXCLUDED)
    # Consent: everyone but g % 5 = 1 opted in a month ago; g % 7 = 3 opted out a week ago. Non-members opted in.
    await store.execute(
        """INSERT INTO consents (profile_id, channel, purpose, status, occurred_at, source, event_id, evidence)
           SELECT md5($1 || ':' || g)::uuid, 'email', 'marketing', 'opted_in', now() - interval '30 days', 'shop',
                  md5($1 || ':consent:' || g)::uuid, '{"method": "double_opt_in"}'::jsonb
             FROM generate_series(1, $2) AS g WHERE g % 5 <> 1 OR g > $3""", tag, total, n)
    await store.execute(
        """INSERT INTO consents (profile_id, channel, purpose, status, occurred_at, source, event_id, evidence)
           SELECT md5($1 || ':' || g)::uuid, 'email', 'marketing', 'opted_out', now() - interval '7 days', 'shop',
                  md5($1 || ':optout:' || g)::uuid, '{"method": "unsubscribe"}'::jsonb
             FROM generate_series(1, $2) AS g WHERE g % 7 = 3""", tag, n)
