"""The delivery stage: message intents from ``cdp.messages`` become sent messages and receipt events.

    [cdp.messages] ─▶ parse ─▶ send log: insert new, claim non-final ──(final already)──▶ re-emit receipt
                                   │ claimed
                                   ▼
          profiles (merged_into → survivor), consent, addresses, suppressions      (set-based, per batch)
                                   │
                                   ▼  per message, concurrently (bounded)
          for channel in [intent.channel, *intent.fallbacks]:
              consent (schema/consent.py: opt-in marketing by default, a withdrawn purpose never)?
              address (most recent, not suppressed)? ── no ──▶ next channel
              (every channel refused by consent or hard bounces ─▶ send log ``refused``, and a
               ``message.decided`` event no_consent / suppressed + cdp_delivery_decisions, not a receipt;
               no channel with an address at all ─▶ send log ``skipped``, no event: nothing was sent)
              render template (sandbox) ── error ──▶ DLQ template_error
                (templates that call recommend(): the batch's recommendations loaded first, one query)
              circuit of the instance open? ─▶ next channel                  (delivery/circuit.py)
              pace (token bucket, slots) ─▶ channel.send (send_timeout) ─ retry 429/5xx/timeouts with backoff
                                                                  ─ still down ─▶ next channel
                                   │
                                   ▼
          send log outcomes, suppressions, dead push tokens  (one statement each)  ─▶ message.* events

A redelivered intent is never sent twice: its row is final and only its receipt is re-emitted. When the send
log cannot take the outcomes (PostgreSQL went away after the sends), the batch fails and the runner retries
it; the stage remembers what it sent until the send log has it, so the retry records those messages instead
of sending them again (only a crash in that window can send one twice; the channels pass the message id as
the provider's idempotency key). A template
error, an unexpected exception or every channel misconfigured goes to the DLQ (the row stays non-final, so a
replay sends it); a permanent failure (bad address) is a ``message.failed`` receipt, never a DLQ entry.

A provider that is down (timeouts, 5xx, refused connections, an open circuit) never dead-letters a message:
when no channel of a message could take it for such a reason, the batch records what it did send (those rows
are final), marks the rest ``deferred`` and fails with :class:`ChannelsUnavailable`; the runner retries the
batch with backoff, without committing it, and the retry sends only the deferred messages.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
)

from cdp_hub.bus.base import OutgoingMessage, Record
from cdp_hub.channel.base import Channel, OutboundMessage, Receipt
from cdp_hub.config import Settings
from cdp_hub.dlq import DeadLetter, dead_letter_from_error
from cdp_hub.errors import CdpHubError, ConfigurationError, RetriableError, SchemaViolation
from cdp_hub.pipeline.stage import Decoded, Stage, StageContext, StageOutput
from cdp_hub.schema.consent import CONSENT_CHANNELS, ConsentPolicy, ConsentStates, consent_refusal
from cdp_hub.schema.messages import MessageIntent
from cdp_hub.store import ConsentRepository, ProfileRepository, RecommendationRepository

from .batching import SendBatcher
from .circuit import CircuitBreaker, CircuitOpen
from .profiles import ProfileSnapshot, load_profiles
from .ratelimit import ChannelPacer
from .receipts import decision_event, receipt_event, receipt_message
from .recommend import template_recommendations
from .rendering import MessageSkipped, TemplateError, TemplateRenderer
from .sendlog import FINAL_STATUSES, LogRow, Outcome, SendLog

__all__ = ["ChannelProvider", "ChannelsUnavailable", "Delivered", "DeliveryOptions", "DeliveryStage", "message_locale", "template_context"]

log = logging.getLogger(__name__)


_REEMIT_STATUS = {"delivered": "sent", "opened": "sent", "clicked": "sent"}


class _Unreachable(CdpHubError):
    """No channel of a message could take it. ``transient`` names the channels that were down for a reason
    that passes (the message waits and is retried); with none, they were misconfigured (the DLQ)."""

    def __init__(self, message: str, *, transient: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.transient = list(transient)


class ChannelsUnavailable(RetriableError):
    """Messages of the batch found every one of their channels down; the batch is retried, not committed."""


@dataclass
class _Deferred:
    """A message that waits for its channels to come back."""

    channels: list[str]
    reason: str


@dataclass
class Delivered:
    """The result of one message: its log outcome, its receipt, and side effects for the batch."""

    outcome: Outcome
    receipt: Receipt | None = None
    identity: tuple[str, str] | None = None
    status_detail: str | None = None
    suppress: tuple[str, str, str, str, str] | None = None
    remove_identity: tuple[str, str] | None = None
    decision: str | None = None
    """``no_consent`` or ``suppressed`` when consent or the suppression list refused every channel: the
    message's record is a ``message.decided`` event, not a receipt."""
    decision_reason: str = ""


@dataclass
class _Batch:
    messages: list[OutgoingMessage] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    suppress: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    remove_identities: list[tuple[str, str]] = field(default_factory=list)


ChannelProvider = Callable[[str], Awaitable[Channel]]
"""A started channel instance by its configured name (raises ConfigurationError when there is none)."""


@dataclass(frozen=True)
class DeliveryOptions:
    """The delivery settings the stage uses (see :class:`~cdp_hub.config.Settings` for each)."""

    templates_dir: Path | None = None
    default_locale: str = "ru"
    default_currency: str = "RUB"
    concurrency: int = 512
    retry_attempts: int = 4
    retry_backoff: float = 0.5
    retry_max_wait: float = 30.0
    unsubscribe_url: str | None = None
    consent_policy: ConsentPolicy = "opt_in"
    send_timeout: float = 30.0
    circuit_failures: int = 5
    circuit_reset: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryOptions:
        return cls(templates_dir=settings.templates_dir, default_locale=settings.default_locale,
                   default_currency=settings.default_currency, concurrency=settings.delivery_concurrency,
                   retry_attempts=settings.delivery_retry_attempts, retry_backoff=settings.delivery_retry_backoff,
                   retry_max_wait=settings.delivery_retry_max_wait, unsubscribe_url=settings.unsubscribe_url,
                   consent_policy=settings.consent_policy,
                   send_timeout=settings.delivery_send_timeout, circuit_failures=settings.delivery_circuit_failures,
                   circuit_reset=settings.delivery_circuit_reset)


class DeliveryStage(Stage[MessageIntent]):
    """Consumes ``cdp.messages``; sends through channel plugins; publishes ``message.*`` receipts."""

    name: ClassVar[str] = "delivery"

    def __init__(self, ctx: StageContext, *, sendlog: SendLog, profiles: ProfileRepository,
                 channels: ChannelProvider, options: DeliveryOptions,
                 consents: ConsentRepository | None = None,
                 recommendations: RecommendationRepository | None = None) -> None:
        super().__init__(ctx)
        self.sendlog = sendlog
        self.profiles = profiles
        self.consents = consents
        self.recommendations = recommendations
        self.channel = channels
        self.options = options
        self.renderer = TemplateRenderer(options.templates_dir, default_locale=options.default_locale,
                                         default_currency=options.default_currency)
        self.concurrency = max(1, options.concurrency)
        self.retry_attempts = max(1, options.retry_attempts)
        self.retry_backoff = options.retry_backoff
        self.retry_max_wait = options.retry_max_wait
        self._pacers: dict[str, ChannelPacer] = {}
        self._batchers: dict[str, SendBatcher] = {}
        self._circuits: dict[str, CircuitBreaker] = {}
        self._sent_unrecorded: dict[str, Delivered] = {}
        """Messages sent whose outcome the send log has not taken yet (PostgreSQL went away after the send):
        the runner's retry of the batch records these instead of sending them again."""

    @property
    def topics(self) -> Sequence[str]:
        return [self.ctx.topics.messages]

    # -- the batch ------------------------------------------------------------------------------------

    def decode(self, record: Record) -> MessageIntent:
        intent = MessageIntent.model_validate_json(record.value)
        try:
            uuid.UUID(intent.profile_id)
        except ValueError:
            raise SchemaViolation(f"profile_id: not a UUID: {intent.profile_id[:80]!r}", field="profile_id",
                                  record_id=intent.message_id, source=intent.scenario) from None
        return intent

    async def process(self, decoded: Sequence[Decoded[MessageIntent]]) -> StageOutput:
        batch = _Batch()
        intents: dict[str, tuple[MessageIntent, Record]] = {}
        for item in decoded:
            if item.value.message_id not in intents:  # a duplicate in one batch: once
                intents[item.value.message_id] = (item.value, item.record)

        # New intents are inserted claimed (one statement); only those already logged (a redelivery, a
        # retried batch) are claimed by a second one, if they are not final.
        claimed = await self.sendlog.register_claimed([
            (i.message_id, uuid.UUID(i.profile_id), i.scenario, i.channel, i.template, i.category, i.locale,
             _uuid_or_none(i.trigger_event_id))
            for i, _ in intents.values()
        ])
        logged = [mid for mid in intents if mid not in claimed]
        if logged:
            claimed |= await self.sendlog.claim(logged)
        done = [mid for mid in intents if mid not in claimed]
        if done:
            await self._reemit(await self.sendlog.rows(done), batch, {mid: intents[mid][0] for mid in done})

        work = [intents[mid] for mid in intents if mid in claimed]
        if work:
            await self._deliver_all(work, batch)
        return StageOutput(batch.messages, batch.dead)

    async def _reemit(self, rows: dict[str, LogRow], batch: _Batch, intents: Mapping[str, MessageIntent]) -> None:
        """Receipts (or decisions) of messages already final: the crash may have come before they were
        published."""
        for row in rows.values():
            if row.status not in FINAL_STATUSES or row.status == "skipped" or not row.address or not row.address_kind:
                continue  # skipped: never sent, it had no receipt (_not_sent)
            if row.status == "refused":
                intent = intents.get(row.message_id)
                if intent is not None:
                    decision, _, reason = (row.error or "").partition(": ")
                    event = decision_event(intent, decision=decision, reason=reason,
                                           identity=(row.address_kind, row.address),
                                           at=row.final_at or datetime.now(UTC))
                    batch.messages.append(receipt_message(self.ctx.topics.events, event))
                continue
            # The send's own receipt: "sent" even when callbacks have moved the row on (they emitted theirs).
            status = _REEMIT_STATUS.get(row.status, row.status)
            receipt = Receipt(message_id=row.message_id, status=status,
                              provider=row.provider, provider_message_id=row.provider_message_id,
                              reason=row.error)
            if row.final_at is not None:
                receipt.occurred_at = row.final_at
            event = receipt_event(receipt, channel=row.channel, identity=(row.address_kind, row.address),
                                  profile_id=row.profile_id, scenario=row.scenario, template=row.template)
            batch.messages.append(receipt_message(self.ctx.topics.events, event))

    async def _deliver_all(self, work: list[tuple[MessageIntent, Record]], batch: _Batch) -> None:
        # Channels first, one at a time: the provider starts an instance on first use.
        channels: dict[str, Channel | ConfigurationError] = {}
        for intent, _ in work:
            for name in (intent.channel, *intent.fallbacks):
                if name not in channels:
                    try:
                        channels[name] = await self.channel(name)
                    except ConfigurationError as exc:
                        channels[name] = exc
        profiles = await load_profiles(self.profiles, {i.profile_id for i, _ in work})
        candidates: set[tuple[str, str]] = set()
        for intent, _ in work:
            snap = profiles.get(intent.profile_id)
            if snap is None:
                continue
            for name in (intent.channel, *intent.fallbacks):
                ch = channels[name]
                if isinstance(ch, Channel):
                    candidates.update((ch.address_kind, a) for a in snap.addresses(ch.address_kind))
        suppressed = await self.sendlog.suppressed(candidates)
        consents: dict[str, ConsentStates] = {}
        if self.consents is not None:
            survivors = {uuid.UUID(p.profile_id) for p in profiles.values()}
            consents = {str(pid): states for pid, states in (await self.consents.current(list(survivors))).items()}
        recommended = await self._recommendations_for(work, profiles)

        async def one(intent: MessageIntent, record: Record) -> Delivered | DeadLetter | _Deferred:
            remembered = self._sent_unrecorded.get(intent.message_id)
            if remembered is not None:  # sent by an earlier try of this batch: record it, do not send again
                return remembered
            try:
                snap = profiles.get(intent.profile_id)
                states = consents.get(snap.profile_id, {}) if snap is not None else {}
                return await self.deliver(intent, snap, channels, suppressed, states,
                                          recommended.get(intent.profile_id))
            except TemplateError as exc:
                return dead_letter_from_error(exc, stage=self.name, payload=record.value, record=record,
                                              source=intent.scenario)
            except _Unreachable as exc:
                if exc.transient:  # the provider is down, not the message bad: it waits
                    return _Deferred(exc.transient, str(exc))
                return dead_letter_from_error(exc, stage=self.name, payload=record.value, record=record,
                                              failure_type="delivery_error", source=intent.scenario)
            except Exception as exc:  # one message's bug never fails the batch
                log.exception("delivery of %s failed", intent.message_id)
                return dead_letter_from_error(exc, stage=self.name, payload=record.value, record=record,
                                              failure_type="delivery_error", source=intent.scenario)

        # A fixed set of workers pulling from one queue: bounded concurrency at O(1) per message (a semaphore
        # with thousands of waiters costs O(waiters) per release).
        results: list[Delivered | DeadLetter | _Deferred | None] = [None] * len(work)
        queue = iter(enumerate(work))

        async def worker() -> None:
            for index, (intent, record) in queue:
                results[index] = await one(intent, record)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(work)))))
        deferred: list[Outcome] = []
        waiting: dict[str, int] = {}
        for (intent, _), result in zip(work, results, strict=True):
            assert result is not None
            if isinstance(result, _Deferred):
                deferred.append(Outcome(intent.message_id, "deferred", intent.channel, error=result.reason[:1000]))
                for name in result.channels:
                    waiting[name] = waiting.get(name, 0) + 1
                continue
            if isinstance(result, DeadLetter):
                batch.dead.append(result)
                status = "dead" if result.failure_type == "template_error" else "deferred"
                deferred.append(Outcome(intent.message_id, status, intent.channel, error=result.error[:1000]))
                continue
            batch.outcomes.append(result.outcome)
            self.ctx.metrics.messages.labels(result.outcome.channel, result.outcome.status).inc()
            if result.suppress:
                batch.suppress.append(result.suppress)
            if result.remove_identity:
                batch.remove_identities.append(result.remove_identity)
            if result.decision is not None:
                self.ctx.metrics.delivery_decisions.labels(intent.scenario, result.decision).inc()
            if result.decision is not None and result.identity is not None:  # an event needs an identity
                decided = decision_event(intent, decision=result.decision, reason=result.decision_reason,
                                         identity=result.identity, at=result.outcome.at or datetime.now(UTC))
                batch.messages.append(receipt_message(self.ctx.topics.events, decided))
            if result.receipt is not None and result.identity is not None:
                event = receipt_event(result.receipt, channel=result.outcome.channel, identity=result.identity,
                                      profile_id=intent.profile_id, scenario=intent.scenario,
                                      template=intent.template, status_detail=result.status_detail)
                batch.messages.append(receipt_message(self.ctx.topics.events, event))
        sent_now = {intent.message_id: result for (intent, _), result in zip(work, results, strict=True)
                    if isinstance(result, Delivered)}
        if len(self._sent_unrecorded) > 100_000:  # batches this process will never retry (rebalanced away)
            self._sent_unrecorded.clear()
        self._sent_unrecorded.update(sent_now)
        await self.sendlog.record(batch.outcomes + deferred)
        await self.sendlog.suppress(batch.suppress)
        await self.sendlog.remove_identities(batch.remove_identities)
        for message_id in sent_now:
            self._sent_unrecorded.pop(message_id, None)
        if waiting:
            # What was sent is final in the send log now, so the retry re-emits its receipts and sends only
            # the messages that waited.
            names = ",".join(sorted(waiting))
            raise ChannelsUnavailable(
                f"{sum(1 for r in results if isinstance(r, _Deferred))} message(s) wait for channel(s) "
                + ", ".join(f"{n} ({c})" for n, c in sorted(waiting.items())), dependency=f"channel:{names}")

    async def _recommendations_for(self, work: list[tuple[MessageIntent, Record]],
                                   profiles: dict[str, ProfileSnapshot]) -> dict[str, dict[str, list[Any]]]:
        """Recommendations of the profiles whose templates call ``recommend()``: one query for the batch."""
        if self.recommendations is None:
            return {}
        wanted = {profiles[i.profile_id].profile_id for i, _ in work
                  if i.profile_id in profiles and self.renderer.calls_recommend(i.template)}
        if not wanted:
            return {}
        by_id = {uuid.UUID(pid): pid for pid in wanted}
        loaded = await self.recommendations.for_profiles(list(by_id), now=self.ctx.clock())
        recs = {by_id[pid]: template_recommendations(kinds) for pid, kinds in loaded.items()}
        # An intent may name a merged profile: its snapshot is the survivor's, so are its recommendations.
        return {i.profile_id: recs[profiles[i.profile_id].profile_id] for i, _ in work
                if i.profile_id in profiles and profiles[i.profile_id].profile_id in recs}

    # -- one message ----------------------------------------------------------------------------------

    async def deliver(self, intent: MessageIntent, profile: ProfileSnapshot | None,
                      channels: dict[str, Channel | ConfigurationError],
                      suppressed: set[tuple[str, str]], consent: ConsentStates | None = None,
                      recommendations: Mapping[str, list[Any]] | None = None) -> Delivered:
        """Try the intent's channels in order; return what happened. Raises :class:`TemplateError` and
        ``_Unreachable`` (both DLQ). ``consent`` is the profile's current consent (the consents table);
        the Golden Record's consent map stands in for channels it does not cover."""
        if profile is None:
            return _not_sent(intent, None, "profile not found", "failed")
        if intent.expires_at is not None and intent.expires_at < datetime.now(UTC):
            return _not_sent(intent, profile, f"expired at {intent.expires_at.isoformat()}", "skipped")
        notes: list[str] = []
        down: list[str] = []
        refusals: list[str] = []  # per channel refused by consent or hard bounces: the decision it makes
        states: dict[tuple[str, str], str] = {}
        for kind in CONSENT_CHANNELS:
            golden = profile.consent(kind)
            if golden is not None:
                states[(kind, "marketing")] = golden
        states.update(consent or {})
        transient: list[str] = []
        for name in (intent.channel, *intent.fallbacks):
            channel = channels.get(name)
            if channel is None:
                try:
                    channel = channels[name] = await self.channel(name)
                except ConfigurationError as exc:
                    channel = channels[name] = exc
            if isinstance(channel, ConfigurationError):
                notes.append(f"{name}: {channel}")
                down.append(name)
                continue
            refusal = consent_refusal(states, channel.kind, intent.category, self.options.consent_policy)
            if refusal is not None:
                notes.append(f"{name}: {refusal}")
                refusals.append("no_consent")
                continue
            addresses = profile.addresses(channel.address_kind)
            address = next((a for a in addresses if (channel.address_kind, a) not in suppressed), None)
            if address is None:
                if addresses:  # every address it has hard-bounced (or was marked undeliverable)
                    notes.append(f"{name}: every {channel.address_kind} is suppressed")
                    refusals.append("suppressed")
                else:
                    notes.append(f"{name}: no usable {channel.address_kind}")
                continue
            try:
                message = self.build_message(intent, profile, channel, name, address, recommendations)
            except MessageSkipped as skipped:  # {{ skip(...) }}: e.g. an empty recommendation, nothing to send
                notes.append(f"{name}: the template skipped it: {skipped.reason}")
                refusals.append("suppressed")
                continue
            try:
                receipt = await self.send_with_retry(channel, message)
            except RetriableError as exc:
                notes.append(f"{name}: unreachable ({exc})")
                down.append(name)
                transient.append(name)
                continue
            except ConfigurationError as exc:  # the provider refused our credentials or configuration
                notes.append(f"{name}: {exc}")
                down.append(name)
                continue
            return self._delivered(intent, channel, name, address, receipt)
        if down:
            raise _Unreachable("no channel could take the message: " + "; ".join(notes), transient=transient)
        if refusals and len(refusals) == len(notes):
            # Consent or the suppression list stopped every channel: a decision, as in the triggers stage
            # (the primary channel's reason names it when the channels were stopped for different reasons).
            return _refused(intent, profile, refusals[0], "; ".join(notes))
        return _not_sent(intent, profile, "not sent: " + "; ".join(notes), "skipped")

    def build_message(self, intent: MessageIntent, profile: ProfileSnapshot, channel: Channel,
                      instance: str, address: str,
                      recommendations: Mapping[str, list[Any]] | None = None) -> OutboundMessage:
        """Render the intent's template for ``channel`` into an :class:`OutboundMessage`."""
        settings = self.options
        unsubscribe = None
        if settings.unsubscribe_url and intent.category == "marketing":
            unsubscribe = settings.unsubscribe_url.format(message_id=intent.message_id,
                                                          profile_id=profile.profile_id, channel=instance)
        context = template_context(intent, profile, instance, unsubscribe)
        if recommendations is not None:
            context["_recommendations"] = recommendations
        locale = message_locale(intent, profile, settings.default_locale)
        rendered = self.renderer.render(intent.template, channel.kind, context, locale=locale,
                                        timezone=_str(profile.traits.get("timezone")))
        headers: dict[str, str] = {}
        if unsubscribe and channel.kind == "email":
            headers["List-Unsubscribe"] = f"<{unsubscribe}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        data: dict[str, Any] = {"category": intent.category}
        if rendered.title is not None:
            data["title"] = rendered.title
        if rendered.url:
            data["url"] = rendered.url
        return OutboundMessage(
            message_id=intent.message_id, channel=instance, profile_id=profile.profile_id, to=address,
            subject=rendered.subject, text=rendered.text, html=rendered.html, scenario=intent.scenario,
            template=intent.template, locale=locale, headers=headers, data=data,
        )

    def _batcher(self, instance: str, channel: Channel, pacer: ChannelPacer) -> SendBatcher | None:
        if channel.limits.max_batch <= 1:
            return None
        batcher = self._batchers.get(instance)
        if batcher is None:
            batcher = self._batchers[instance] = SendBatcher(channel, pacer, max_batch=channel.limits.max_batch)
        return batcher

    async def teardown(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()

    def circuit(self, instance: str) -> CircuitBreaker:
        """The circuit breaker of a channel instance."""
        breaker = self._circuits.get(instance)
        if breaker is None:
            gauge = self.ctx.metrics.channel_circuit.labels(instance)
            breaker = self._circuits[instance] = CircuitBreaker(
                instance, failures=self.options.circuit_failures, reset=self.options.circuit_reset,
                on_change=lambda is_open: gauge.set(1 if is_open else 0))
        return breaker

    def _pacer(self, instance: str, channel: Channel) -> ChannelPacer:
        pacer = self._pacers.get(instance)
        if pacer is None:
            pacer = self._pacers[instance] = ChannelPacer(channel.limits)
        return pacer

    def _first_wait(self, exc: RetriableError) -> float:
        return self._backoff_for(exc, 0)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        # The first try happened before tenacity took over: its retry n is the stage's try n + 1.
        return self._backoff_for(exc, state.attempt_number)

    def _backoff_for(self, exc: BaseException | None, retries_before: int) -> float:
        """Retry-After when the provider gave one, else exponential backoff (half of it jittered), capped."""
        if isinstance(exc, RetriableError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.retry_max_wait)
        ceiling = min(self.retry_backoff * 2.0 ** retries_before, self.retry_max_wait)
        return ceiling / 2 + random.random() * ceiling / 2

    async def send_with_retry(self, channel: Channel, message: OutboundMessage) -> Receipt:
        """``channel.send`` paced by the channel's limits, retried on :class:`RetriableError` with backoff
        (``Retry-After`` when the provider gave one); the last error is raised when every try failed."""
        limit = channel.limits.max_body_bytes
        if limit is not None:
            size = len(message.text.encode()) + len((message.html or "").encode())
            if size > limit:
                return Receipt(message_id=message.message_id, status="failed", provider=channel.name,
                               reason=f"message is {size} bytes; {channel.instance} takes at most {limit}")
        pacer = self._pacer(message.channel, channel)
        batcher = self._batcher(message.channel, channel, pacer)
        breaker = self.circuit(message.channel)
        timeout = self.options.send_timeout

        async def send() -> Receipt:
            if batcher is not None:  # the batch request is paced inside: its wait counts, it is short
                return await asyncio.wait_for(batcher.send(message), timeout)
            async with pacer:  # waiting for a pacing slot is not the provider being slow
                return await asyncio.wait_for(channel.send(message), timeout)

        send_seconds = self.ctx.metrics.channel_send_seconds.labels(message.channel)

        async def attempt() -> Receipt:
            breaker.before_send()  # CircuitOpen: not tried, and not retried here either
            started = time.perf_counter()
            try:
                receipt = await send()
            except TimeoutError as exc:
                send_seconds.observe(time.perf_counter() - started)
                error = RetriableError(f"{message.channel}: no answer within {timeout:g}s")
                breaker.failed(error)
                raise error from exc
            except RetriableError as exc:
                send_seconds.observe(time.perf_counter() - started)
                breaker.failed(exc)
                raise
            send_seconds.observe(time.perf_counter() - started)
            breaker.succeeded()
            if not receipt.message_id:
                receipt = receipt.model_copy(update={"message_id": message.message_id})
            return receipt

        try:  # the first try outside tenacity: most sends succeed, and the retry machinery is not free
            return await attempt()
        except CircuitOpen:
            raise
        except RetriableError as exc:
            if self.retry_attempts <= 1:
                raise
            first = exc
        await asyncio.sleep(self._first_wait(first))
        retrying = AsyncRetrying(retry=retry_if_exception_type(RetriableError)
                                 & retry_if_not_exception_type(CircuitOpen),
                                 stop=stop_after_attempt(self.retry_attempts - 1), wait=self._wait, reraise=True)
        async for retry in retrying:
            with retry:
                return await attempt()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _delivered(self, intent: MessageIntent, channel: Channel, instance: str, address: str,
                   receipt: Receipt) -> Delivered:
        kind = channel.address_kind
        status = receipt.status if receipt.status in ("sent", "delivered", "failed") else "sent"
        outcome = Outcome(intent.message_id, status, instance, address=address, address_kind=kind,
                          provider=receipt.provider or channel.name,
                          provider_message_id=receipt.provider_message_id, error=receipt.reason,
                          at=receipt.occurred_at)
        result = Delivered(outcome, receipt, (kind, address))
        if receipt.status == "failed" and receipt.permanent:
            result.suppress = (kind, address, instance, receipt.reason or "permanent failure", intent.message_id)
            if kind == "push_token":  # an unregistered token is gone for good: detach it from the profile
                result.remove_identity = (kind, address)
        return result


def template_context(intent: MessageIntent, profile: ProfileSnapshot, instance: str,
                     unsubscribe_url: str | None = None) -> dict[str, Any]:
    """What a template sees: ``profile``, ``event``, ``vars``, ``scenario``, ``message`` (see rendering)."""
    return {
        "profile": profile.traits,
        "event": intent.trigger_event or {},
        "vars": intent.vars,
        "scenario": intent.scenario,
        "message": {"message_id": intent.message_id, "channel": instance, "unsubscribe_url": unsubscribe_url,
                    "category": intent.category},
    }


def message_locale(intent: MessageIntent, profile: ProfileSnapshot, default: str) -> str:
    """The intent's locale, else the customer's, else the deployment's default."""
    return intent.locale or _str(profile.traits.get("locale")) or default


def _not_sent(intent: MessageIntent, profile: ProfileSnapshot | None, reason: str, status: str) -> Delivered:
    """A message no channel took: ``skipped`` (no usable address, expired) is the send log's row and its
    metric only, no receipt: nothing was sent, and the triggers stage's ``message.decided`` event already
    records the message (a receipt went through the resolver and the triggers for nothing, for most intents of
    a shop whose customers have no address on file). ``failed`` (the profile is gone) keeps its receipt."""
    identity = profile.best_identity() if profile is not None else None
    at = datetime.now(UTC)
    receipt = None if status == "skipped" else Receipt(message_id=intent.message_id, status="failed",
                                                         reason=reason[:1000], occurred_at=at)
    outcome = Outcome(intent.message_id, status, intent.channel, address=identity[1] if identity else None,
                      address_kind=identity[0] if identity else None, error=reason[:1000], at=at)
    return Delivered(outcome, receipt, identity, status_detail=status)


def _refused(intent: MessageIntent, profile: ProfileSnapshot, decision: str, reason: str) -> Delivered:
    """A message consent or the suppression list refused at send time: final in the send log as ``refused``
    (the error starts with the decision, so a replay re-emits the same decision), recorded as a decision."""
    identity = profile.best_identity()
    outcome = Outcome(intent.message_id, "refused", intent.channel, address=identity[1] if identity else None,
                      address_kind=identity[0] if identity else None, error=f"{decision}: {reason}"[:1000],
                      at=datetime.now(UTC))
    return Delivered(outcome, None, identity, decision=decision, decision_reason=reason)


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
