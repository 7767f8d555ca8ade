"""The channel conformance kit: inherit :class:`ChannelTests` and a channel plugin's test is a few lines.

    from cdp_hub.testing.channels import ChannelTests
    from my_channel import MyChannel

    class TestMyChannel(ChannelTests):
        channel_class = MyChannel
        config = {"base_url": "https://api.example.com", "api_key": "k"}
        recipient = "+79161234567"

        def simulate(self, provider, outcome):
            # provider is a respx router; make the fake API answer the next send with `outcome`
            status = {"sent": 200, "transient": 503, "permanent": 400}[outcome]
            provider.post("https://api.example.com/send").respond(status, json={"id": "p-1"})

Inherited tests check the plugin contract: name, kind and address kind; a config model that refuses unknown
options; sane limits; ``start``/``stop`` idempotent; ``send`` returns a receipt naming the message for a
success, raises :class:`~cdp_hub.errors.RetriableError` for a transient failure, returns a permanent
``failed`` receipt for a bad address; ``parse_callback`` turns each of ``callback_samples`` into the expected
receipts and rejects garbage with a :class:`~cdp_hub.errors.RecordError` (or ``PermissionError`` for a bad
signature) instead of crashing.

HTTP providers are simulated with respx (``provider`` fixture; nothing leaves the process). A channel that
talks another protocol overrides the ``channel_config`` fixture to point at a local server and implements
``simulate`` against that server (see the SMTP tests of cdp-hub).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, get_args

import httpx
import pytest

from cdp_hub.channel.base import (
    Channel,
    ChannelConfig,
    ChannelKind,
    ChannelLimits,
    OutboundMessage,
    Receipt,
    ReceiptStatus,
)
from cdp_hub.errors import ConfigurationError, RecordError, RetriableError
from cdp_hub.plugins import PLUGIN_NAME_RE, PLUGIN_NAME_RULE

__all__ = ["OUTCOMES", "CallbackSample", "ChannelTests"]

OUTCOMES = ("sent", "transient", "permanent")
_KINDS: tuple[str, ...] = get_args(ChannelKind)


@dataclass(frozen=True)
class CallbackSample:
    """A provider callback and the receipt statuses it must produce, in order."""

    body: bytes
    statuses: tuple[ReceiptStatus, ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    message_ids: tuple[str, ...] | None = None
    """When given: the receipts' ``message_id`` values (empty string where the callback names only the
    provider's id)."""
    permanent: tuple[bool, ...] | None = None
    """When given: the receipts' ``permanent`` flags."""


class ChannelTests:
    """Base class of a channel plugin's conformance tests. Set the class attributes, implement
    :meth:`simulate`; every ``test_*`` method below is inherited."""

    channel_class: ClassVar[type[Channel]]
    """The channel under test."""
    config: ClassVar[dict[str, Any]] = {}
    """A valid configuration (override the ``channel_config`` fixture when it depends on other fixtures)."""
    recipient: ClassVar[str] = "someone@example.com"
    """A valid recipient address of the channel's ``address_kind``."""
    simulated: ClassVar[frozenset[str]] = frozenset(OUTCOMES)
    """Outcomes :meth:`simulate` can produce; the tests of the others are skipped with a reason."""
    callback_samples: ClassVar[list[CallbackSample]] = []
    """Callbacks the provider sends, with the receipts each must produce."""

    # -- to implement ----------------------------------------------------------------------------------

    def simulate(self, provider: Any, outcome: str) -> None:
        """Make the simulated provider answer the next :meth:`Channel.send` with ``outcome``: ``"sent"``
        (accepted), ``"transient"`` (429/5xx: worth a retry) or ``"permanent"`` (the address is bad for good).

        ``provider`` is a ``respx.MockRouter`` that intercepts every ``httpx`` request of the test."""
        raise NotImplementedError(f"{type(self).__name__}.simulate: make the fake provider answer {outcome!r}")

    def message(self, **overrides: Any) -> OutboundMessage:
        """A rendered message to :attr:`recipient` (override to add what the channel needs)."""
        values: dict[str, Any] = {
            "message_id": str(uuid.uuid4()), "channel": self.channel_class.name, "to": self.recipient,
            "subject": "Hello", "text": "Hello from the conformance kit", "html": "<p>Hello</p>",
            "profile_id": str(uuid.uuid4()), "scenario": "conformance", "template": "welcome",
            "data": {"title": "Hello"},
        }
        values.update(overrides)
        return OutboundMessage(**values)

    # -- fixtures --------------------------------------------------------------------------------------

    @pytest.fixture
    def channel_config(self) -> dict[str, Any]:
        return dict(self.config)

    @pytest.fixture
    def provider(self) -> Any:
        try:
            import respx
        except ImportError:  # pragma: no cover - depends on the install
            pytest.fail("the channel kit simulates HTTP providers with respx: pip install respx", pytrace=False)
        with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
            yield router

    @pytest.fixture
    async def channel(self, channel_config: dict[str, Any], provider: Any) -> AsyncIterator[Channel]:
        async with httpx.AsyncClient() as http:
            ch = self.channel_class(channel_config, instance=f"test_{self.channel_class.name}", http=http)
            await ch.start()
            try:
                yield ch
            finally:
                await ch.stop()

    def _need(self, outcome: str) -> None:
        if outcome not in self.simulated:
            pytest.skip(f"{self.channel_class.__name__}: the test cannot simulate a {outcome!r} answer")

    # -- the contract ----------------------------------------------------------------------------------

    def test_declares_name_kind_and_address_kind(self) -> None:
        cls = self.channel_class
        assert issubclass(cls, Channel), f"{cls!r} must subclass cdp_hub.Channel"
        assert PLUGIN_NAME_RE.fullmatch(cls.name), f"name {cls.name!r}: {PLUGIN_NAME_RULE}"
        assert cls.kind in _KINDS, f"kind {cls.kind!r} is not one of {_KINDS}"
        assert isinstance(cls.address_kind, str) and cls.address_kind, "address_kind names an identity kind"
        assert (cls.__doc__ or "").strip(), "a one-line docstring is the description `cdp-hub plugins` shows"

    def test_config_model_refuses_unknown_options(self, channel_config: dict[str, Any]) -> None:
        model = self.channel_class.config_model
        assert issubclass(model, ChannelConfig)
        assert model.model_config.get("extra") == "forbid", "unknown options must be an error, not ignored"
        with pytest.raises(ConfigurationError, match="no_such_option"):
            self.channel_class({**channel_config, "no_such_option": 1})
        assert isinstance(model.model_json_schema(), dict)

    def test_limits_are_sane(self, channel_config: dict[str, Any]) -> None:
        limits = self.channel_class(channel_config).limits
        assert isinstance(limits, ChannelLimits)
        assert limits.max_concurrency >= 1 and limits.max_batch >= 1
        assert limits.rate_per_second is None or limits.rate_per_second > 0

    async def test_start_and_stop_are_idempotent(self, channel: Channel) -> None:
        await channel.start()
        await channel.stop()
        await channel.stop()

    async def test_send_success_returns_a_receipt_naming_the_message(self, channel: Channel,
                                                                      provider: Any) -> None:
        self._need("sent")
        self.simulate(provider, "sent")
        message = self.message()
        receipt = await channel.send(message)
        assert isinstance(receipt, Receipt)
        assert receipt.status in ("sent", "delivered"), f"expected sent, got {receipt.status}: {receipt.reason}"
        assert receipt.message_id == message.message_id
        assert receipt.provider, "name the provider in the receipt"

    async def test_transient_failure_raises_retriable_error(self, channel: Channel, provider: Any) -> None:
        self._need("transient")
        self.simulate(provider, "transient")
        with pytest.raises(RetriableError):
            await channel.send(self.message())

    async def test_permanent_failure_is_a_permanent_failed_receipt(self, channel: Channel,
                                                                   provider: Any) -> None:
        self._need("permanent")
        self.simulate(provider, "permanent")
        message = self.message()
        receipt = await channel.send(message)
        assert receipt.status == "failed" and receipt.permanent, receipt
        assert receipt.message_id == message.message_id
        assert receipt.reason, "say why it failed"

    async def test_callbacks_become_receipts(self, channel: Channel) -> None:
        if not self.callback_samples:
            pytest.skip(f"{self.channel_class.__name__} declares no callback_samples")
        for sample in self.callback_samples:
            receipts = await channel.parse_callback(dict(sample.headers), sample.body)
            assert tuple(r.status for r in receipts) == sample.statuses, receipts
            assert all(r.status in get_args(ReceiptStatus) for r in receipts)
            assert all(r.message_id or r.provider_message_id for r in receipts), "name the message somehow"
            if sample.message_ids is not None:
                assert tuple(r.message_id for r in receipts) == sample.message_ids
            if sample.permanent is not None:
                assert tuple(r.permanent for r in receipts) == sample.permanent

    async def test_garbage_callback_is_refused_cleanly(self, channel: Channel) -> None:
        headers = dict(self.callback_samples[0].headers) if self.callback_samples else {}
        try:
            receipts = await channel.parse_callback(headers, b"\x00not json{")
        except (RecordError, PermissionError):
            return
        assert receipts == [], "garbage must raise RecordError (400) or PermissionError (401), or yield nothing"
