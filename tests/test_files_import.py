"""File import: CSV (cp1251, UTF-8 BOM, any delimiter), JSON Lines, gzip; bad lines to the DLQ."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest

from cdp_hub.connector.files import FileRecordError, import_file, iter_records, sniff
from cdp_hub.errors import ConfigurationError
from cdp_hub.hub import Hub

ERP_HEADER = "ВидДокумента;НомерДокумента;ДатаДокумента;КодМагазина;КодКлиента;Телефон;НомерКарты;Артикул;" \
             "Номенклатура;Количество;Цена;Сумма"
ERP_ROWS = [
    "Чек;S001-1;12.11.2026 14:03:05;S001;000010042;8 (916) 123-45-67;;MLK;Молоко 3,2%;2;89,90;179,80",
    "Чек;S001-1;12.11.2026 14:03:05;S001;000010042;8 (916) 123-45-67;;BRD;Хлеб «Бородинский»;1;65,50;65,50",
    "Чек;S001-2;12.11.2026 15:00:00;S001;;;;MLK;Молоко 3,2%;1;89,90;89,90",               # anonymous sale
    "Возврат;S001-3;13.11.2026 10:00:00;S001;000010042;8 (916) 123-45-67;;MLK;Молоко 3,2%;1;89,90;89,90",
    "Чек;S001-4;13.11.2026 11:00:00;S001;000010077;8 (000) 12;;MLK;Молоко;1;89,90;89,90",  # impossible phone
]


def write(path: Path, text: str, encoding: str) -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_cp1251_semicolon_export_is_detected(tmp_path: Path) -> None:
    path = write(tmp_path / "export.csv", "\r\n".join([ERP_HEADER, *ERP_ROWS]) + "\r\n", "cp1251")
    info = sniff(path)
    assert (info.format, info.encoding, info.delimiter, info.gzip) == ("csv", "cp1251", ";", False)
    rows = list(iter_records(path))
    assert len(rows) == 5 and rows[1]["Номенклатура"] == "Хлеб «Бородинский»" and rows[0]["Цена"] == "89,90"


def test_utf8_bom_comma_csv_and_gzip(tmp_path: Path) -> None:
    text = "\ufeffemail , city\nanna@example.ru,Казань\nivan@example.ru,\"Нижний Новгород, центр\"\n"
    path = write(tmp_path / "people.csv", text, "utf-8")
    assert sniff(path).encoding == "utf-8-sig"
    assert list(iter_records(path, encoding="utf-8")) == [  # an explicit utf-8 still drops the BOM
        {"email": "anna@example.ru", "city": "Казань"},
        {"email": "ivan@example.ru", "city": "Нижний Новгород, центр"}]
    gz = tmp_path / "people.csv.gz"
    gz.write_bytes(gzip.compress(text.encode("utf-8")))
    assert sniff(gz).gzip and list(iter_records(gz))[1]["city"] == "Нижний Новгород, центр"
    tabbed = write(tmp_path / "data.tsv", "a\tb\n1\t2\n", "utf-8")
    assert list(iter_records(tabbed)) == [{"a": "1", "b": "2"}]


def test_json_lines_gzip_and_bad_lines(tmp_path: Path) -> None:
    lines = [json.dumps({"id": 1}), "", "{broken", "[1, 2]", json.dumps({"id": 2, "name": "Анна"})]
    path = tmp_path / "dump.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode("utf-8")))
    with pytest.raises(FileRecordError, match=r"dump.jsonl.gz:3: not JSON"):
        list(iter_records(path))
    bad: list[FileRecordError] = []
    assert list(iter_records(path, on_error=bad.append)) == [{"id": 1}, {"id": 2, "name": "Анна"}]
    assert [(e.line, e.raw) for e in bad] == [(3, "{broken"), (4, "[1, 2]")]
    plain = write(tmp_path / "noext", "{\"a\": 1}\n", "utf-8")
    assert sniff(plain).format == "jsonl"


def test_csv_short_and_long_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", "a;b;c\n1;2\n1;2;3;4\n\n5;6;7\n", "utf-8")
    bad: list[FileRecordError] = []
    assert list(iter_records(path, on_error=bad.append)) == [{"a": "1", "b": "2", "c": ""},
                                                              {"a": "5", "b": "6", "c": "7"}]
    assert bad[0].line == 3 and "4 fields where the header has 3" in str(bad[0])


def test_wrong_encoding_is_a_configuration_error(tmp_path: Path) -> None:
    path = write(tmp_path / "x.csv", "имя;город\nАнна;Тверь\n", "cp1251")
    with pytest.raises(ConfigurationError, match="--encoding"):
        list(iter_records(path, encoding="utf-8"))
    with pytest.raises(ConfigurationError, match="unknown encoding"):
        sniff(path, encoding="klingon")


def test_reading_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as fh:
        fh.write("n\n")
        for i in range(200_000):
            fh.write(f"{i}\n")
    rows = iter_records(path)
    assert next(rows) == {"n": "0"} and next(rows) == {"n": "1"}  # nothing waits for the whole file
    rows.close()  # type: ignore[attr-defined]


async def test_erp_export_through_the_connector(tmp_path: Path, hub: Hub) -> None:
    path = write(tmp_path / "receipts.csv", "\r\n".join([ERP_HEADER, *ERP_ROWS, "Чек;S001-5;oops"]) + "\r\n",
                 "cp1251")
    result = await import_file(hub, hub.connector("erp"), path, stream="receipts")
    # 4 documents (S001-1 has two lines) + 1 short line -> assembled; S001-2 anonymous; S001-4 bad phone
    # a till receipt ("Чек") is placed and paid at once; the return is a return
    assert result.by_type == {"order.placed": 1, "order.paid": 1, "order.returned": 1}
    assert result.dead == 2
    events = [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.events)]
    placed = next(e for e in events if e["type"] == "order.placed")
    assert placed["properties"]["total"] == "245.30" and len(placed["properties"]["items"]) == 2
    assert placed["occurred_at"].startswith("2026-11-12T11:03:05")  # Moscow time -> UTC
    letters = [orjson.loads(r.value) for r in await hub.bus.read_all(hub.topics.dlq)]
    assert sorted(x["field"] for x in letters) == ["identities.1.value", "ДатаДокумента"]


async def test_customer_master_data_file(tmp_path: Path, hub: Hub) -> None:
    text = ("Код;Наименование;Фамилия;Имя;Телефон;ЭлПочта;ДатаРождения;Пол;Город;ДатаИзменения\n"
            "000010042;Петрова Анна;Петрова;Анна;8 916 123-45-67;;07.03.1990;Ж;Тверь;01.11.2026 09:30:00\n")
    path = tmp_path / "clients.csv.gz"
    path.write_bytes(gzip.compress(text.encode("cp1251")))
    result = await import_file(hub, hub.connector("erp"), [path])
    assert result.by_type == {"customer.updated": 1} and result.dead == 0
    with pytest.raises(ConfigurationError, match="no such file"):
        await import_file(hub, hub.connector("erp"), [tmp_path / "missing.csv"])


def test_iter_records_reports_the_bytes_read_of_a_gzip_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for n in range(2500):
            fh.write(json.dumps({"id": n, "note": "x" * (n % 50)}) + "\n")
    seen: list[int] = []
    rows = list(iter_records(path, position=seen.append))
    assert len(rows) == 2500
    # Every 1000 records, then the whole file: bytes of the compressed file, never backwards.
    assert len(seen) == 3 and seen == sorted(seen) and seen[-1] == path.stat().st_size
