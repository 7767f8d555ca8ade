"""Segments (rules over the Golden Record and the stored events) and date-based triggers.

    segments/*.yaml ─▶ Segment (model) ─▶ compile_segment ─▶ one SQL statement ─▶ segment_members diff
                                     └─▶ Segment.evaluate (trait-only, real time in the triggers stage)
    entering / leaving ─▶ segment.entered / segment.exited on cdp.events ─▶ scenarios (e.g. win_back)
    BirthdayScheduler (daily, in the customer's time zone) ─▶ profile.birthday ─▶ the birthday scenario
"""

from cdp_hub.segments.daily import BirthdayScan, BirthdayScheduler
from cdp_hub.segments.engine import RecomputeResult, SegmentEngine
from cdp_hub.segments.model import (
    AggregateRule,
    EventFact,
    Group,
    Segment,
    TraitRule,
    load_segments,
    parse_segment,
    segment_json_schema,
)
from cdp_hub.store.segments import CompiledSegment, compile_segment

__all__ = [
    "AggregateRule",
    "BirthdayScan",
    "BirthdayScheduler",
    "CompiledSegment",
    "EventFact",
    "Group",
    "RecomputeResult",
    "Segment",
    "SegmentEngine",
    "TraitRule",
    "compile_segment",
    "load_segments",
    "parse_segment",
    "segment_json_schema",
]
