"""Structured logs and metrics an operator can use: JSON lines with ISO 8601 UTC times and id fields, the
same format for every library, ``/metrics`` with process metrics, no ``_created`` series, zeros for the label
values the hub knows, latency histograms and sync metrics."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import respx
from prometheus_client.parser import text_string_to_metric_families

from cdp_hub.cli import main
from cdp_hub.config import ChannelInstance, ConnectorInstance
from cdp_hub.connector.sync import sync
from cdp_hub.daemon import create_app
from cdp_hub.hub import Hub
from cdp_hub.logs import JsonFormatter, TextFormatter, configure_logging, log_context
from cdp_hub.metrics import Metrics
from cdp_hub.pipeline.build import STAGE_NAMES, Pipeline
from cdp_hub.testing import MockApi
from connectors.loyalty import LoyaltyConnector


@pytest.fixture
def root_logging() -> Iterator[io.StringIO]:
    """The root handler as the CLI configures it, writing to a buffer; pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)


def _configure(buffer: io.StringIO, fmt: str) -> None:
    configure_logging("INFO", fmt)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)


def test_json_lines_carry_an_iso_time_and_the_id_fields(root_logging: io.StringIO) -> None:
    _configure(root_logging, "json")
    with log_context(stage="resolver"):
        logging.getLogger("cdp_hub.pipeline.runner").info(
            "dead letter from %s", "resolver", extra={"event_id": "e-1", "profile_id": "p-1", "dlq_id": "d-1"})
    library = logging.getLogger("uvicorn.error")
    # An earlier test in the same process may have run a dictConfig that disables existing loggers; this test
    # is about the format of a library's line on the root handler, so the logger is switched back on.
    library.disabled = False
    library.warning("uvicorn says %s", "hi")  # a library: same format
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("cdp_hub.x").exception("failed")
    first, second, third = (json.loads(line) for line in root_logging.getvalue().splitlines() if line.startswith("{"))
    assert first["message"] == "dead letter from resolver" and first["level"] == "INFO"
    assert first["logger"] == "cdp_hub.pipeline.runner"
    assert {"stage": "resolver", "event_id": "e-1", "profile_id": "p-1", "dlq_id": "d-1"}.items() <= first.items()
    assert first["time"].endswith("Z") and first["time"][10] == "T"  # 2026-11-30T19:53:18.123Z
    assert second["logger"] == "uvicorn.error" and "stage" not in second  # the context ended with the block
    assert "ValueError: boom" in third["exception"]


def test_text_lines_put_the_fields_after_the_message(root_logging: io.StringIO) -> None:
    _configure(root_logging, "text")
    with log_context(stage="delivery", instance="email"):
        logging.getLogger("cdp_hub.delivery").warning("retrying")
    line = root_logging.getvalue().strip()
    assert line.endswith("WARNING cdp_hub.delivery: retrying [stage=delivery instance=email]")
    assert line[:20].count("-") == 2 and line[10] == "T"


def test_the_log_format_is_a_flag_and_a_setting(root_logging: io.StringIO, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDP_HUB_LOG_FORMAT", raising=False)
    assert main(["--log-format", "json", "config", "show"]) == 0
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
    monkeypatch.setenv("CDP_HUB_LOG_FORMAT", "json")
    assert main(["--log-format", "text", "config", "show"]) == 0  # the flag wins over the setting
    assert isinstance(logging.getLogger().handlers[0].formatter, TextFormatter)
    assert main(["config", "show"]) == 0
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
    assert main(["--log-level", "LOUD", "config", "show"]) == 2  # a usage error: the choices are known
    assert "Invalid value for '--log-level': 'LOUD' is not one of" in capsys.readouterr().err


async def test_metrics_parse_and_hold_the_families_operators_need(hub: Hub) -> None:
    hub.settings.channels["email"] = ChannelInstance(type="outbox")
    hub.settings.connectors["club"] = ConnectorInstance(type="loyalty", config={"base_url": "https://loyalty.test"})
    metrics = Metrics()
    fresh = Hub(hub.settings, bus=hub.bus, store=hub.store, hotstate=hub.hotstate, metrics=metrics)
    Pipeline(fresh, STAGE_NAMES)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(fresh)), base_url="http://hub") as c:
        assert (await c.get("/healthz")).status_code == 200
        answer = await c.get("/metrics")
    assert answer.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    for name in ("process_resident_memory_bytes", "process_cpu_seconds", "process_open_fds", "python_info",
                 "python_gc_objects_collected", "cdp_http_request_seconds", "cdp_http_requests",
                 "cdp_channel_send_seconds", "cdp_stage_batch_seconds", "cdp_stage_records", "cdp_dlq_records",
                 "cdp_sync_records", "cdp_sync_pages", "cdp_sync_errors", "cdp_outages", "cdp_messages"):
        assert name in families, name
    samples = [s for f in families.values() for s in f.samples]
    assert not [s.name for s in samples if s.name.endswith("_created")]

    def value(name: str, **labels: str) -> float | None:
        return next((s.value for s in samples if s.name == name and labels.items() <= s.labels.items()), None)

    # Known label values are there at zero before anything happened.
    for stage in STAGE_NAMES:
        assert value("cdp_stage_records_total", stage=stage) == 0
        assert value("cdp_stage_batch_seconds_count", stage=stage) == 0
        assert value("cdp_dlq_records_total", stage=stage, failure_type="schema_violation") == 0
    assert value("cdp_outages_total", dependency="postgres") == 0
    assert value("cdp_messages_total", channel="email", status="failed") == 0
    assert value("cdp_channel_send_seconds_count", channel="email") == 0
    assert value("cdp_sync_errors_total", connector="club", stream="transactions") == 0
    assert value("cdp_http_request_seconds_count", route="/v1/events") == 0
    assert value("cdp_http_request_seconds_count", route="/healthz") == 1


async def test_a_sync_exports_records_pages_and_its_last_success(hub: Hub) -> None:
    records = [{"transaction_id": f"T{n}", "card_number": "2775000000000043", "type": "accrual", "points": n,
                "created_at": f"2026-11-0{n}T10:00:00Z"} for n in range(1, 6)]
    connector = LoyaltyConnector({"base_url": "https://loyalty.test", "page_size": 2}, instance="club",
                                 http=hub.http)
    with respx.mock(assert_all_called=False) as router:
        MockApi(connector, "transactions", records, page_size=2).install(router)
        await sync(hub, connector, stream="transactions")
    m = hub.metrics
    assert m.sync_records.labels("club", "transactions")._value.get() == 5
    assert m.sync_pages.labels("club", "transactions")._value.get() == 3
    assert m.sync_last_success.labels("club", "transactions")._value.get() > 0
    assert m.sync_lag.labels("club", "transactions")._value.get() > 0  # the last record is from 2026-11-05
