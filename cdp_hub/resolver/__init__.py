"""Identity resolution and the Golden Record.

    cdp.events ─▶ ResolverStage ─▶ IdentityGraph.resolve(batch)   (identities, profiles, merges, conflicts)
                                    └─ survivorship ─▶ profiles.golden (+ provenance in profile_traits)
               ─▶ cdp.profile-events  (events with profile_id, profile.created, profile.merged)

Read profiles with :func:`load_profile` / :func:`find_profile`; rules are :class:`IdentityRules`.
"""

from cdp_hub.resolver.graph import BatchResult, IdentityGraph, ResolutionError
from cdp_hub.resolver.profiles import ProfileView, find_profile, load_profile
from cdp_hub.resolver.rules import IdentityRules, KindRule, TraitRule, load_rules

__all__ = [
    "BatchResult",
    "IdentityGraph",
    "IdentityRules",
    "KindRule",
    "ProfileView",
    "ResolutionError",
    "TraitRule",
    "find_profile",
    "load_profile",
    "load_rules",
]
