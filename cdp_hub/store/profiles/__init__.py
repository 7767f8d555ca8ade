"""The profile tables' one owner: :class:`ProfileRepository` and the plain records it takes and returns.

    repository.py   ProfileRepository: reads through the pool (profile views, golden records, counts)
    resolve.py      the identity graph's batch, merge and unmerge statements (on the caller's connection)
    bulk.py         the bulk import's staging and set-wise statements (on the import's connection)
    suggestions.py  fuzzy matching's reads and merge_suggestions
    matcher_index.py  the fuzzy matcher's index between runs (matcher_profiles, matcher_keys)
    records.py      the small dataclasses in and out
"""

from cdp_hub.store.profiles.records import (
    BirthdayCandidate,
    GoldenState,
    IdentityLookup,
    Key,
    LastMerge,
    LockedProfile,
    MergeStep,
    ProfileConstraints,
    ProfileLink,
    Suggestion,
)
from cdp_hub.store.profiles.repository import ProfileRepository
from cdp_hub.store.profiles.resolve import LOCK_NS_IDENTITY

__all__ = [
    "LOCK_NS_IDENTITY",
    "BirthdayCandidate",
    "GoldenState",
    "IdentityLookup",
    "Key",
    "LastMerge",
    "LockedProfile",
    "MergeStep",
    "ProfileConstraints",
    "ProfileLink",
    "ProfileRepository",
    "Suggestion",
]
