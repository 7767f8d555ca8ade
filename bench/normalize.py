"""Benchmark: normalization + validation of the e-commerce order stream, per core.

    python bench/normalize.py [--records 20000] [--phones e164|local] [--repeat 5]

Each source record (a Shopify-like order, as the shop API sends it: raw JSON bytes) goes the whole way a
sync takes it: ``json.loads`` -> ``EcommerceConnector.to_events`` (mapping, identity normalization, pydantic
validation against cdp.event/1) -> ``Event.to_json()`` (the bytes published to Kafka); the record is parsed
with orjson, as the hub does. The baseline, in the same run on the same records, is plain ``json.loads``. Every record has its own id, e-mail and
phone, so no cache flatters the figures. One process, one thread: the figure is per core. The best of
``--repeat`` runs is reported (the machine may be shared).

``--phones e164`` writes phones as the shop API returns them (``+79161234567``); ``--phones local`` writes
them as people type them (``8 (916) 123-45-67``), which costs a full libphonenumber parse per record.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdp_hub.demo.data import generate
from cdp_hub.errors import RecordError
from cdp_hub.schema.identities import normalize_phone
from connectors.ecommerce import EcommerceConnector


def make_orders(n: int, phones: str, seed: int = 7) -> list[bytes]:
    """``n`` distinct order records (raw JSON), varied from the demo data's orders."""
    rng = random.Random(seed)
    templates = [r for r in generate(800, seed=seed)["ecommerce"] if "financial_status" in r]
    out = []
    for i in range(n):
        order: dict[str, Any] = copy.deepcopy(templates[i % len(templates)])
        order["id"] = 6_000_000_000 + i
        order["name"] = f"#{100000 + i}"
        digits = f"9{rng.randrange(10**9):09d}"
        phone = f"+7{digits}" if phones == "e164" else \
            f"8 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}-{digits[8:]}"
        if order.get("email"):
            local, _, domain = order["email"].partition("@")
            order["email"] = f"{local}.{i}@{domain}"
        billing = order.get("billing_address") or {}
        if billing.get("phone") or not order.get("email"):
            billing["phone"] = phone
        if order.get("phone"):
            order["phone"] = phone
        if order.get("customer"):
            order["customer"]["id"] = 7_200_000_000 + i
        out.append(json.dumps(order, ensure_ascii=False).encode())
    return out


def run_baseline(raw: list[bytes]) -> float:
    loads = json.loads
    started = time.perf_counter()
    for item in raw:
        loads(item)
    return time.perf_counter() - started


def run_pipeline(raw: list[bytes], connector: EcommerceConnector) -> tuple[float, int, int]:
    # The hub parses source JSON with orjson (HTTP bodies, files, the bus), so the pipeline does too.
    loads, to_events = orjson.loads, connector.to_events
    events = dead = 0
    normalize_phone.cache_clear()  # every run parses its phones afresh, like a first sync
    started = time.perf_counter()
    for item in raw:
        try:
            produced = to_events(loads(item))
        except RecordError:
            dead += 1
            continue
        for event in produced:
            event.to_json()
        events += len(produced)
    return time.perf_counter() - started, events, dead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--phones", choices=("e164", "local"), default="e164")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--target", type=float, default=25_000.0, help="records/s to reach")
    args = parser.parse_args(argv)

    raw = make_orders(args.records, args.phones)
    connector = EcommerceConnector(instance="shop")
    run_pipeline(raw[:500], connector)  # warm-up: imports, pydantic schema caches
    base = min(run_baseline(raw) for _ in range(args.repeat))
    best, events, dead = min((run_pipeline(raw, connector) for _ in range(args.repeat)), key=lambda r: r[0])
    n = len(raw)
    rate = n / best
    print(f"e-commerce order stream: {n} records ({sum(map(len, raw)) / n:.0f} bytes avg), phones {args.phones}, "
          f"best of {args.repeat}")
    print(f"  baseline json.loads:            {n / base:>10,.0f} records/s  ({base / n * 1e6:6.1f} us/record)")
    print(f"  normalize+validate+serialize:   {rate:>10,.0f} records/s  ({best / n * 1e6:6.1f} us/record), "
          f"{events / best:,.0f} events/s, {events / n:.2f} events/record, {dead} dead letters")
    print(f"  ratio pipeline/json.loads:      {best / base:.1f}x the time of json.loads")
    print(f"  target {args.target:,.0f} records/s per core: {'MET' if rate >= args.target else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
