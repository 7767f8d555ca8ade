"""Campaign checks beyond the shape, the same way scenarios are checked (:mod:`cdp_hub.triggers.checks`).

    campaign files (campaigns_dir or the paths given) ─▶ parse (JSON Schema, pydantic) ─▶ for each campaign:
        audience.segment, audience.exclude   known segments (built-in and segments_dir)
        channel, fallbacks, audience.channels  configured channel instances (a missing fallback: a warning)
        template                              a template for every channel kind used, in the deployment's locales
    ─▶ problems, each ``file:line: $.json.path: message``

``cdp-hub campaigns validate`` prints them; launch refuses a campaign with an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cdp_hub.campaigns.model import CAMPAIGN_FILES, Campaign
from cdp_hub.errors import ConfigurationError
from cdp_hub.triggers.checks import Installed, Problem, _did_you_mean, _lines

__all__ = ["check_campaign_files"]


_Doc = tuple[str, Any, dict[tuple[str | int, ...], int], tuple[int, ...]]
"""A document: its file, its data, the line of each JSON path, its index in a list file (or none)."""


def _documents(paths: Sequence[Path]) -> list[_Doc]:
    texts: list[tuple[str, str]] = []
    for path in paths:
        if not path.exists():
            raise ConfigurationError(f"campaigns: {path} does not exist")
        files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
        texts.extend((str(f), f.read_text(encoding="utf-8")) for f in files)
    docs: list[_Doc] = []
    for origin, text in texts:
        try:
            data = yaml.safe_load(text)
            node = yaml.compose(text)
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{origin}: not valid YAML: {exc}") from None
        lines = _lines(node) if node is not None else {}
        if isinstance(data, list):
            docs.extend((origin, d, lines, (i,)) for i, d in enumerate(data))
        else:
            docs.append((origin, data, lines, ()))
    return docs


def check_campaign_files(paths: Sequence[Path], installed: Installed) -> tuple[list[Campaign], list[Problem]]:
    """Parse and check every campaign of ``paths``; a later id replaces an earlier one. Returns the campaigns
    and the problems found (errors and warnings)."""
    problems: list[Problem] = []
    by_id: dict[str, tuple[Campaign, str, dict[tuple[str | int, ...], int], tuple[int, ...]]] = {}
    for origin, data, lines, prefix in _documents(paths):
        try:
            campaign = CAMPAIGN_FILES.parse(data, origin=f"{origin}[{prefix[0]}]" if prefix else origin)
        except ConfigurationError as exc:
            problems.append(Problem(origin, lines.get(prefix), "$", str(exc)))
            continue
        by_id[campaign.id] = (campaign, origin, lines, prefix)
    for campaign, origin, lines, prefix in by_id.values():
        problems.extend(_check(campaign, origin, lines, prefix, installed))
    return [c for c, *_ in by_id.values()], problems


def _check(campaign: Campaign, origin: str, lines: dict[tuple[str | int, ...], int], prefix: tuple[int, ...],
           installed: Installed) -> list[Problem]:
    problems: list[Problem] = []

    def problem(path: tuple[str | int, ...], message: str, severity: str = "error") -> None:
        full = (*prefix, *path)
        line = None
        for cut in range(len(full), -1, -1):
            line = lines.get(full[:cut])
            if line is not None:
                break
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
        problems.append(Problem(origin, line, where, message, severity))

    segments = [(("audience", "segment"), campaign.audience.segment),
                *((("audience", "exclude", i), s) for i, s in enumerate(campaign.audience.exclude))]
    for path, segment in segments:
        if segment not in installed.segments:
            problem(path, f"unknown segment {segment!r}{_did_you_mean(segment, installed.segments)}")

    kinds: list[str] = []
    for path, name in [(("channel",), campaign.channel),
                       *((("fallbacks", i), n) for i, n in enumerate(campaign.fallbacks))]:
        kind = installed.channel_kind(name)
        if kind is None:
            problem(path, f"channel {name!r} is not configured (add [channels.{name}] to the config)",
                    "error" if path == ("channel",) else "warning")
        else:
            kinds.append(kind)
    sending = {campaign.channel, *campaign.fallbacks}
    for i, name in enumerate(campaign.audience.channels or ()):
        if name not in sending:
            problem(("audience", "channels", i), f"channel {name!r} is neither the campaign's channel nor a "
                                                 "fallback: nobody would get the message there")
    for kind in dict.fromkeys(kinds):
        for locale in installed.locales:
            if not installed.template_exists(campaign.template, kind, locale):
                problem(("template",), f"no template {campaign.template!r} for {kind} in locale {locale!r} "
                                       f"(add {campaign.template}/{kind}.j2 to templates_dir)")
    return problems
