"""Campaigns as data: YAML files validated against a JSON Schema (the shared data-file loader), then pydantic.

    id: spring_sale
    audience:
      segment: active_buyers            # who: the segment's members at launch ...
      exclude: [complained_recently]    # ... minus the members of these segments
      channels: [email]                 # ... who may get marketing on one of these (default: channel + fallbacks)
    schedule: {cron: "0 10 * * MON", timezone: Europe/Moscow}   # or {at: "2026-04-01T10:00:00+03:00"}
    channel: email
    fallbacks: [sms]
    template: spring_sale
    rate_limit: 200                     # messages per second on the campaign's channel
    purpose: marketing                  # consent, caps and quiet hours apply

A campaign file holds one campaign or a list of them; ``cdp-hub campaigns validate`` reports errors as
``file:line: $.json.path: message`` (see :mod:`cdp_hub.campaigns.checks`). docs/campaigns.md explains each
field and how a run goes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cdp_hub.datafiles import DataFiles
from cdp_hub.triggers.experiments import Experiment, refuse_goto
from cdp_hub.triggers.scenario import FrequencyCap, QuietHours

__all__ = ["CAMPAIGN_FILES", "Audience", "Campaign", "Schedule", "campaign_json_schema", "load_campaigns"]

SCENARIO_PREFIX = "campaign:"
"""Intents, send-log rows and decisions of a campaign name ``campaign:<id>`` as their scenario."""


class Audience(BaseModel):
    """Who a run sends to: the segment's members at launch, minus the exclusion segments' members, who may
    get the campaign's purpose on one of ``channels``."""

    model_config = ConfigDict(extra="forbid")

    segment: str = Field(description="the segment whose members are the audience (snapshotted at launch)")
    exclude: list[str] = Field(default_factory=list, description="segments whose members are left out")
    channels: list[str] | None = Field(
        default=None, description="send only to profiles with consent on one of these channels "
        "(default: the campaign's channel and fallbacks)")


class Schedule(BaseModel):
    """Once at a time (``at``), or recurring by ``cron`` in ``timezone``."""

    model_config = ConfigDict(extra="forbid")

    at: datetime | None = Field(default=None, description="launch once at this time (with a UTC offset)")
    cron: str | None = Field(default=None, description="launch at every slot of this cron expression")
    timezone: str = Field("Europe/Moscow", description="the time zone of the cron expression's wall clock")

    @model_validator(mode="after")
    def _one_of(self) -> Schedule:
        if (self.at is None) == (self.cron is None):
            raise ValueError("a schedule has either 'at' (once) or 'cron' (recurring)")
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError("schedule.at needs a UTC offset, e.g. 2026-04-01T10:00:00+03:00")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ValueError(f"schedule.cron {self.cron!r} is not a cron expression")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self

    def last_slot(self, now: datetime, *, within: timedelta) -> datetime | None:
        """The latest launch time in ``(now - within, now]``, in UTC; None when there is none."""
        if self.at is not None:
            return self.at if now - within < self.at <= now else None
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        wall = now.astimezone(zone)
        slot: datetime = croniter(self.cron, wall).get_prev(datetime)
        if slot.tzinfo is None:
            slot = slot.replace(tzinfo=zone)
        return slot if now - within < slot <= now else None


class Campaign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    description: str = ""
    enabled: bool = True
    audience: Audience
    schedule: Schedule | None = Field(
        default=None, description="when runs launch by themselves (in `cdp-hub run`); none: only by hand")
    channel: str
    fallbacks: list[str] = Field(default_factory=list)
    template: str
    vars: dict[str, Any] = Field(default_factory=dict, description="variables for the template")
    rate_limit: float = Field(gt=0, le=100_000, description="messages per second on the campaign's channel")
    purpose: Literal["marketing", "transactional", "service"] = Field(
        "marketing", description="marketing needs consent; caps and quiet hours apply to it")
    frequency_cap: FrequencyCap | None = None
    quiet_hours: QuietHours | None = None
    experiment: Experiment | None = Field(
        default=None, description="variants with weights and a control group that receives nothing "
        "(docs/experiments.md)")

    @field_validator("fallbacks")
    @classmethod
    def _distinct_channels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a fallback channel is listed twice")
        return value

    @model_validator(mode="after")
    def _no_branches(self) -> Campaign:
        refuse_goto(self.experiment)
        return self

    @property
    def scenario(self) -> str:
        """The name intents, the send log and decisions carry for this campaign."""
        return SCENARIO_PREFIX + self.id

    @property
    def consent_channels(self) -> list[str]:
        """The channels a profile needs consent on (any one of them)."""
        return self.audience.channels or [self.channel, *self.fallbacks]


CAMPAIGN_FILES: DataFiles[Campaign] = DataFiles(Campaign, what="campaign", schema_name="campaign.schema.json",
                                                 package="cdp_hub.campaigns", folder="builtin")


def campaign_json_schema() -> dict[str, Any]:
    return CAMPAIGN_FILES.json_schema()


def load_campaigns(paths: Iterable[Path] = ()) -> list[Campaign]:
    """Every campaign in ``paths`` (files or folders of ``*.yaml``); a later id replaces an earlier one.
    There are no built-in campaigns: a broadcast is always the deployment's own."""
    return CAMPAIGN_FILES.load(paths, builtin=False)
