"""Parse once, step by step: CPU per event of what each stage does with a record before its own work, the
trusted fast path against full validation, in one process, interleaved.

    python bench/parse_once.py [--events 5000] [--rounds 7]

The records are what the hub writes: bench/resolver_stream.py's CRM/shop events and bench/ingest_http.py's
tracking events (through the edge's fast path), each validated once and sealed; bench/triggers.py's profile
events as the resolver writes them. Each step runs ``--rounds`` times over all the events, and the median CPU
time (``time.process_time``) per event is printed with the ratios. The stages' whole CPU per event,
with their database work, is what bench/resolver_stream.py and bench/triggers.py measure (``--full-validation``);
on a shared machine those move by ±20% run to run, these by a few per cent.

No database or broker is needed: the resolver's decode runs against an identity graph whose block list is
empty (``usable_keys`` only reads the rules).
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from ingest_http import bodies  # bench/ is the script's directory
from resolver_stream import synthetic_events
from triggers import profile_event

from cdp_hub.bus.base import Record
from cdp_hub.bus.events import event_dict_message, event_message
from cdp_hub.bus.provenance import EVENT_SCHEMA, RecordSeal, RecordTrust
from cdp_hub.connector.tracking import TrackingConnector
from cdp_hub.resolver.graph import event_json_with_profile
from cdp_hub.resolver.stage import parse_keeping_good_identities
from cdp_hub.schema.events import DEFAULT_OPTIONS, Event, parse_event
from cdp_hub.schema.fastpath import event_dict
from cdp_hub.schema.trusted import trusted_event


def _median_us(work: Callable[[], object], count: int, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.process_time()
        work()
        times.append(time.process_time() - started)
    return statistics.median(times) / count * 1e6


def _tracking(n: int) -> list[bytes]:
    connector = TrackingConnector({}, instance="web")
    received = datetime.now(UTC)
    out = []
    for batch in bodies(max(1, n // 100), 100, seed=3):
        for message in batch:
            for draft in connector.drafts(copy.deepcopy(message)):
                fast = event_dict(draft, DEFAULT_OPTIONS, received)
                out.append(event_dict_message("cdp.events", fast).value if fast is not None
                           else event_message("cdp.events", parse_event(draft)).value)
    return out[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    n, rounds = args.events, args.rounds
    seal = RecordSeal()
    trust = RecordTrust(frozenset({"cdp.profile-events"}), seal)
    rng = random.Random(5)
    sets = {
        "CRM/shop events (resolver_stream)": [event_message("cdp.events", parse_event(v)).value
                                              for v in synthetic_events(n, 7)],
        "tracking events (the edge's)": _tracking(n),
        "profile events (triggers)": [profile_event(uuid.UUID(int=i), i, rng, datetime.now(UTC)) for i in range(n)],
    }
    print(f"parse once, per event (median of {rounds} rounds, CPU time; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores)")
    for name, values in sets.items():
        _measure(name, values, seal, trust, rounds)


def _measure(name: str, values: list[bytes], seal: RecordSeal, trust: RecordTrust, rounds: int) -> None:
    n = len(values)
    sealed = seal.seal([event_message("cdp.events", parse_event(v)) for v in values])
    records = [Record("cdp.events", 0, i, None, m.value, m.headers) for i, m in enumerate(sealed)]
    size = statistics.mean(len(v) for v in values)
    full_resolver = _median_us(lambda: [parse_keeping_good_identities(v, DEFAULT_OPTIONS) for v in values], n, rounds)
    full_triggers = _median_us(lambda: [Event.model_validate_json(v) for v in values], n, rounds)
    fast = _median_us(lambda: [trusted_event(v) for v in values], n, rounds)
    check = _median_us(lambda: [trust.trusts(r, EVENT_SCHEMA) for r in records], n, rounds)
    sealing = _median_us(lambda: seal.seal(sealed), n, rounds)
    print(f"  {name}: {n} events, {size:.0f} bytes each")
    print(f"    full validation: resolver's parse {full_resolver:5.1f} us, triggers' model_validate_json "
          f"{full_triggers:5.1f} us")
    print(f"    trusted fast path {fast:5.1f} us + trust check (headers, seal) {check:4.1f} us = {fast + check:5.1f} us: "
          f"{(fast + check) / full_resolver:.2f}x the resolver's, {(fast + check) / full_triggers:.2f}x the triggers'")
    print(f"    sealing on publish {sealing:4.1f} us per record")
    raws = [v for v in values if b'"profile_id"' not in v]
    events = [trusted_event(v) for v in raws]
    if events:
        pid = uuid.uuid4()
        serialize = _median_us(lambda: [event_json_with_profile(e, pid) for e in events], len(events), rounds)
        splice = _median_us(lambda: [event_json_with_profile(e, pid, r) for e, r in zip(events, raws, strict=True)],
                            len(events), rounds)
        print(f"    resolver's JSON with profile_id: serialized {serialize:4.1f} us, spliced into the bytes "
              f"{splice:4.1f} us ({splice / serialize:.2f}x)")


if __name__ == "__main__":
    main()
