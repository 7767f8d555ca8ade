"""Identity resolution and the Golden Record.

    cdp.events ─▶ ResolverStage ─▶ IdentityGraph.resolve(batch)   (identities, profiles, merges, conflicts)
                                    └─ survivorship ─▶ profiles.golden (+ provenance in profile_traits)
               ─▶ cdp.profile-events  (events with profile_id, profile.created, profile.merged)

Read profiles with :func:`load_profile` / :func:`find_profile`; merge and split them on purpose with
:func:`merge_profiles` / :func:`unmerge_profile` (publish the returned event with
:func:`publish_profile_event`); rules are :class:`IdentityRules`. The bulk import is
:class:`cdp_hub.resolver.bulk.BulkImporter`, the dry run :func:`cdp_hub.resolver.dryrun.dry_run`.
"""

from cdp_hub.resolver.graph import BatchResult, IdentityGraph, ResolutionError
from cdp_hub.resolver.merge import (
    MergeOutcome,
    MergeRefused,
    UnmergeError,
    UnmergeOutcome,
    merge_profiles,
    publish_profile_event,
    unmerge_profile,
)
from cdp_hub.resolver.profiles import ProfileView, find_profile, load_profile
from cdp_hub.resolver.rules import IdentityRules, KindRule, TraitRule, load_rules
from cdp_hub.resolver.stage import ResolverStage

__all__ = [
    "BatchResult",
    "IdentityGraph",
    "IdentityRules",
    "KindRule",
    "MergeOutcome",
    "MergeRefused",
    "ProfileView",
    "ResolutionError",
    "ResolverStage",
    "TraitRule",
    "UnmergeError",
    "UnmergeOutcome",
    "find_profile",
    "load_profile",
    "load_rules",
    "merge_profiles",
    "publish_profile_event",
    "unmerge_profile",
]
