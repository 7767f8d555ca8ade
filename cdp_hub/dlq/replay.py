"""Dead letters read back: list them, and replay them into the flow once the cause is fixed.

    dead_letters table ─▶ list_dead_letters ─▶ `cdp-hub dlq list` / GET /v1/dlq
                       └▶ replay_dead_letters ─▶ the original topic, or the connector again for raw source
                          records (a record that fails again becomes a new dead letter)
                          ─▶ settle() ─▶ mark the letters replayed (only once what was published is safe)

On the in-process bus ``settle`` (:func:`cdp_hub.pipeline.embedded.downstream`) waits until the stages of this
process have stored the replayed records; a letter marked replayed is never one whose record vanished.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from cdp_hub.dlq.envelope import DeadLetter
from cdp_hub.errors import ConfigurationError
from cdp_hub.store.deadletters import DeadLetterRepository

if TYPE_CHECKING:
    from cdp_hub.hub import Hub

__all__ = ["ReplayResult", "list_dead_letters", "replay_dead_letters"]


async def list_dead_letters(hub: Hub, *, limit: int = 100, failure_type: str | None = None,
                            source: str | None = None, include_replayed: bool = False) -> list[dict[str, Any]]:
    rows = await DeadLetterRepository(hub.store).recent(limit=limit, failure_type=failure_type, source=source,
                                                        include_replayed=include_replayed)
    out = []
    for r in rows:
        item = dict(r.envelope)
        item["replayed_at"] = r.replayed_at.isoformat() if r.replayed_at else None
        item["replay_result"] = r.replay_result
        out.append(item)
    return out


@dataclass
class ReplayResult:
    replayed: int = 0
    failed_again: int = 0
    skipped: int = 0
    details: list[str] = field(default_factory=list)


async def replay_dead_letters(
    hub: Hub,
    *,
    ids: Sequence[str] = (),
    failure_type: str | None = None,
    source: str | None = None,
    fixes: Mapping[str, Any] | None = None,
    again: bool = False,
    dry_run: bool = False,
    settle: Callable[[], Awaitable[None]] | None = None,
) -> ReplayResult:
    """Put dead letters back: raw source records through their connector, others onto their topic.

    ``fixes`` maps a ``dlq_id`` to a corrected payload (a JSON object or string) that replaces the original.
    A record that fails again becomes a new dead letter; the old one is marked replayed either way, after
    ``settle`` returned (the in-process bus: once the stages have stored what was published).
    """
    from cdp_hub.connector.ingest import Ingestor

    letters = DeadLetterRepository(hub.store)
    rows = await letters.to_replay(ids=ids, failure_type=failure_type, source=source, again=again)
    result = ReplayResult()
    fixes = fixes or {}
    ingestor = Ingestor(hub)
    outcomes: list[tuple[str, str]] = []  # (dlq_id, result), marked once what was published is safe
    for _, envelope in rows:
        d = DeadLetter.model_validate(envelope)
        fixed = fixes.get(d.dlq_id)
        if fixed is not None:
            payload = fixed.encode() if isinstance(fixed, str) else orjson.dumps(fixed)
        else:
            payload = d.payload_bytes()
        if dry_run:
            result.details.append(f"{d.dlq_id}: would replay to {d.replay_topic or '?'}")
            continue
        if d.replay_topic == "connector":
            if not d.connector:
                result.skipped += 1
                result.details.append(f"{d.dlq_id}: no connector recorded; cannot replay")
                continue
            connector = _connector_for(hub, d)
            res = await ingestor.ingest(connector, [orjson.loads(payload)], stream=d.stream)
            ok = res.dead == 0
        elif d.replay_topic:
            await hub.bus.publish(d.replay_topic, payload, key=(d.source or "").encode() or None)
            ok = True  # it goes through its stage again; a new failure is a new dead letter
        else:
            result.skipped += 1
            result.details.append(f"{d.dlq_id}: no replay topic")
            continue
        if ok:
            result.replayed += 1
        else:
            result.failed_again += 1
        outcomes.append((d.dlq_id, "replayed" if ok else "failed again"))
    if outcomes and settle is not None:
        await settle()
    for dlq_id, outcome in outcomes:
        await letters.mark_replayed(dlq_id, outcome)
    return result


def _connector_for(hub: Hub, d: DeadLetter) -> Any:
    assert d.connector is not None
    if d.source and d.source in hub.settings.connectors:
        return hub.connector(d.source)
    try:
        cls = hub.registry.connector(d.connector)
    except ConfigurationError:
        raise
    return cls({}, instance=d.source or d.connector, http=hub.http, normalization=hub.settings.normalization)
