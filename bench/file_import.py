"""Benchmark: import of a large cp1251 ERP CSV export in bounded memory.

    python bench/file_import.py [--size-mb 1024] [--keep]

Writes (once; reused while it exists) ``bench/data/erp_receipts_<size>mb.csv``: a 1C-style receipt-line
export in cp1251 with ``;``, decimal commas and ``DD.MM.YYYY HH:MM:SS`` dates, one row per line item, a third
of the sales anonymous (no customer: no event), about 0.1% of the rows broken (an impossible phone). Then,
in one process, three passes over the same file:

1. baseline: read and decode the lines (``for line in open(..., encoding="cp1251")``);
2. parse: :func:`cdp_hub.connector.files.iter_records` (CSV dict rows);
3. import: :func:`cdp_hub.connector.files.import_file` through the ERP connector, as ``cdp-hub ingest-file``
   runs it: rows assembled into receipts, normalized, validated, serialized and handed to the bus in chunks
   of 2,000. The bus here only counts what it is given (a broker would hold it, not this process), so the
   figures are the import's own.

It prints rows/s, MB/s and the process's peak RSS after each pass. Bounded memory means the peak does not
grow with the file: compare a ``--size-mb 50`` run with the full one.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cdp_hub.bus.base import OutgoingMessage
from cdp_hub.bus.memory import MemoryBus
from cdp_hub.config import Settings
from cdp_hub.connector.files import import_file, iter_records
from cdp_hub.hub import Hub
from cdp_hub.metrics import Metrics

DATA = Path(__file__).resolve().parent / "data"
HEADER = ("ВидДокумента;НомерДокумента;ДатаДокумента;КодМагазина;КодКлиента;Телефон;НомерКарты;Артикул;"
          "Номенклатура;Количество;Цена;Сумма")
GOODS = [("MLK-032-1L", "Молоко 3,2% 1 л", 8990), ("KFR-025-900", "Кефир 2,5% 900 г", 7990),
         ("CHS-RSS-300", "Сыр Российский 300 г", 32900), ("BRD-BRD-400", "Хлеб Бородинский 400 г", 6550),
         ("CFE-ARB-1KG", "Кофе в зёрнах Арабика 1 кг", 149900), ("TEA-BLK-100", "Чай чёрный 100 г", 24900),
         ("APL-GRN-1KG", "Яблоки Гренни Смит 1 кг", 18900), ("OIL-SUN-1L", "Масло подсолнечное 1 л", 14900),
         ("SHP-HRB-400", "Шампунь травяной 400 мл", 38900), ("KTL-EL-17", "Чайник электрический 1,7 л", 249000)]


def _money(kopecks: int) -> str:
    return f"{kopecks // 100},{kopecks % 100:02d}"


def generate(path: Path, size_mb: int, seed: int = 7) -> None:
    """Write the export in cp1251 until it reaches ``size_mb`` megabytes."""
    rng = random.Random(seed)
    target = size_mb * 1024 * 1024
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    written = 0
    doc = 0
    with tmp.open("w", encoding="cp1251", newline="") as out:
        out.write(HEADER + "\r\n")
        while written < target:
            buf = []
            for _ in range(2000):
                doc += 1
                store = f"S{rng.randrange(1, 60):03d}"
                day, month = rng.randrange(1, 29), rng.randrange(1, 13)
                when = f"{day:02d}.{month:02d}.2026 {rng.randrange(8, 23):02d}:{rng.randrange(60):02d}:00"
                if rng.random() < 0.33:
                    client = phone = card = ""
                else:
                    n = rng.randrange(2_000_000)
                    client = f"{n:09d}"
                    digits = f"9{rng.randrange(10**9):09d}"
                    phone = f"8 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}-{digits[8:]}"
                    if rng.random() < 0.001:
                        phone = "8 (000) 12"
                    card = f"2775 {n:012d}"[:19] if rng.random() < 0.5 else ""
                kind = "Возврат" if rng.random() < 0.03 else "Чек"
                for _ in range(rng.choice((1, 1, 2, 3, 5))):
                    sku, name, price = rng.choice(GOODS)
                    qty = rng.choice((1, 1, 2, 3))
                    buf.append(f"{kind};{store}-{doc:09d};{when};{store};{client};{phone};{card};{sku};{name};"
                               f"{qty};{_money(price)};{_money(price * qty)}\r\n")
            chunk = "".join(buf)
            out.write(chunk)
            written += len(chunk.encode("cp1251"))
    tmp.rename(path)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class CountingBus(MemoryBus):
    """Takes the published records and keeps only counts (a broker would hold the data, not the importer)."""

    def __init__(self) -> None:
        super().__init__()
        self.records = 0
        self.bytes = 0

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> None:
        self.records += len(messages)
        self.bytes += sum(len(m.value) for m in messages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--skip-import", action="store_true", help="only the read and parse passes")
    args = parser.parse_args(argv)

    path = DATA / f"erp_receipts_{args.size_mb}mb.csv"
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.size_mb)
        print(f"generated {path} in {time.perf_counter() - started:.0f}s")
    size_mb = path.stat().st_size / 1024 / 1024
    print(f"file: {path.name}, {size_mb:,.0f} MB, cp1251, ';' ; peak RSS after start-up {peak_rss_mb():.0f} MB")

    started = time.perf_counter()
    with path.open(encoding="cp1251", newline="") as fh:
        lines = sum(1 for _ in fh) - 1
    base = time.perf_counter() - started
    print(f"  baseline read+decode lines:  {lines / base:>10,.0f} rows/s  {size_mb / base:6.1f} MB/s  "
          f"peak RSS {peak_rss_mb():.0f} MB")

    started = time.perf_counter()
    rows = sum(1 for _ in iter_records(path))
    parse = time.perf_counter() - started
    print(f"  iter_records (CSV rows):     {rows / parse:>10,.0f} rows/s  {size_mb / parse:6.1f} MB/s  "
          f"peak RSS {peak_rss_mb():.0f} MB  ({parse / base:.1f}x the baseline's time)")
    if args.skip_import:
        return 0

    async def run() -> None:
        bus = CountingBus()
        hub = Hub(Settings(bus="memory", redis_url="fakeredis://"), bus=bus, metrics=Metrics())
        await bus.start()
        try:
            connector = hub.connector("erp")
            started = time.perf_counter()
            result = await import_file(hub, connector, path, stream="receipts")
            took = time.perf_counter() - started
        finally:
            await bus.stop()
            await hub.http.aclose()
        print(f"  import (ERP receipts):       {rows / took:>10,.0f} rows/s  {size_mb / took:6.1f} MB/s  "
              f"peak RSS {peak_rss_mb():.0f} MB  ({took / base:.1f}x the baseline's time)")
        print(f"    {result.records:,} receipts, {result.events:,} events ({result.events / took:,.0f}/s), "
              f"{result.dead:,} dead letters, {bus.bytes / 1024 / 1024:,.0f} MB published, {took:.0f}s")

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
