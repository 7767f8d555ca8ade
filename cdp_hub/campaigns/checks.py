"""Campaign checks beyond the shape, the same way scenarios are checked (:mod:`cdp_hub.triggers.checks`).

    campaign files (campaigns_dir or the paths given) ─▶ parse (JSON Schema, pydantic) ─▶ for each campaign:
        experiment                            as scenarios' (triggers/checks.py: check_experiment)
        audience.segment, audience.exclude   known segments (built-in and segments_dir)
        channel, fallbacks, audience.channels  configured channel instances (a missing fallback: a warning)
        template                              a template for every channel kind used, in the deployment's locales
    ─▶ problems, each ``file:line: $.json.path: message``

``cdp-hub campaigns validate`` prints them; launch refuses a campaign with an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cdp_hub.campaigns.model import CAMPAIGN_FILES, Campaign
from cdp_hub.datafiles import LocatedDocument, located_documents
from cdp_hub.errors import ConfigurationError
from cdp_hub.triggers.checks import Installed, Problem, check_sending, did_you_mean, located_problems

__all__ = ["check_campaign_files"]


def check_campaign_files(paths: Sequence[Path], installed: Installed) -> tuple[list[Campaign], list[Problem]]:
    """Parse and check every campaign of ``paths``; a later id replaces an earlier one. Returns the campaigns
    and the problems found (errors and warnings)."""
    problems: list[Problem] = []
    by_id: dict[str, tuple[Campaign, LocatedDocument]] = {}
    for doc in located_documents(paths, what="campaigns"):
        early = located_problems(doc)
        if early:
            problems.extend(early)
            continue
        try:
            campaign = CAMPAIGN_FILES.parse(doc.data, origin=f"{doc.origin}[{doc.prefix[0]}]" if doc.prefix
                                            else doc.origin)
        except ConfigurationError as exc:
            problems.append(Problem(doc.origin, doc.lines.get(doc.prefix), "$", str(exc)))
            continue
        by_id[campaign.id] = (campaign, doc)
    for campaign, doc in by_id.values():
        problems.extend(_check(campaign, doc, installed))
    return [c for c, *_ in by_id.values()], problems


def _check(campaign: Campaign, doc: LocatedDocument, installed: Installed) -> list[Problem]:
    problems: list[Problem] = []

    def problem(path: tuple[str | int, ...], message: str, severity: str = "error") -> None:
        problems.append(Problem.at(doc, path, message, severity))

    segments = [(("audience", "segment"), campaign.audience.segment),
                *((("audience", "exclude", i), s) for i, s in enumerate(campaign.audience.exclude))]
    for path, segment in segments:
        if segment not in installed.segments:
            problem(path, f"unknown segment {segment!r}{did_you_mean(segment, installed.segments)}")

    sending = {campaign.channel, *campaign.fallbacks}
    for i, name in enumerate(campaign.audience.channels or ()):
        if name not in sending:
            problem(("audience", "channels", i), f"channel {name!r} is neither the campaign's channel nor a "
                                                 "fallback: nobody would get the message there")
    problems.extend(check_sending(doc, installed, channel=campaign.channel, fallbacks=campaign.fallbacks,
                                  template=campaign.template, experiment=campaign.experiment))
    return problems
