"""The dead-letter queue: the typed envelope of a record that failed (``envelope``), the stage that archives
``cdp.dlq`` into PostgreSQL, and replay (``stage``)."""

from cdp_hub.dlq.envelope import DeadLetter, FailureType, Origin, dead_letter_from_error

__all__ = ["DeadLetter", "FailureType", "Origin", "dead_letter_from_error"]
