"""Segments in the store: the compiler of segment definitions to SQL over ``profiles`` and ``events``, and
the repository of the segment tables (``segments``, ``segment_runs``, ``segment_changes``,
``segment_members``)."""

from cdp_hub.store.segments.compiler import CompiledSegment, SegmentDefinition, compile_segment
from cdp_hub.store.segments.repository import AppliedRun, PendingRun, SegmentChange, SegmentRepository

__all__ = [
    "AppliedRun",
    "CompiledSegment",
    "PendingRun",
    "SegmentChange",
    "SegmentDefinition",
    "SegmentRepository",
    "compile_segment",
]
