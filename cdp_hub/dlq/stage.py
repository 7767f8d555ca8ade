"""The DLQ archiver stage: ``cdp.dlq`` -> ``dead_letters`` (PostgreSQL), where list and replay find them.

    [cdp.dlq] ─▶ DeadLetterStage ─▶ dead_letters table ─▶ `cdp-hub dlq list` / GET /v1/dlq   (dlq.replay)
                                                       └▶ `cdp-hub dlq replay` ─▶ original topic, or the
                                                          connector again for raw source records
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from cdp_hub.bus.base import Record
from cdp_hub.dlq.envelope import DeadLetter
from cdp_hub.pipeline.stage import Decoded, Stage, StageContext, StageOutput
from cdp_hub.store.deadletters import DeadLetterRepository, DeadLetterRow

__all__ = ["DeadLetterStage"]


class DeadLetterStage(Stage[DeadLetter]):
    """Archives every dead letter in PostgreSQL (idempotent by ``dlq_id``)."""

    name = "dlq"

    def __init__(self, ctx: StageContext, *, letters: DeadLetterRepository) -> None:
        super().__init__(ctx)
        self.letters = letters

    @property
    def topics(self) -> Sequence[str]:
        return [self.ctx.topics.dlq]

    def decode(self, record: Record) -> DeadLetter:
        try:
            return DeadLetter.model_validate_json(record.value)
        except ValueError:
            # Not our envelope (someone else wrote to the topic): keep it anyway, as raw text. A dead letter
            # of a dead letter would only loop.
            return DeadLetter(failure_type="processing_error", stage="unknown", error="unparseable DLQ entry",
                              payload=record.value.decode("utf-8", "replace"))

    async def process(self, batch: Sequence[Decoded[DeadLetter]]) -> StageOutput:
        rows = []
        for item in batch:
            d = item.value
            rows.append(DeadLetterRow(d.dlq_id, d.failure_type, d.stage, d.source, d.record_id, d.error, d.field,
                                      orjson.loads(d.model_dump_json()), d.failed_at))
        await self.letters.archive(rows)
        return StageOutput()
