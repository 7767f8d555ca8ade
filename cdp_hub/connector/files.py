"""File import: CSV and JSON Lines exports (plain or gzip), streamed in bounded memory.

    file ─▶ gzip? ─▶ decode (utf-8 / utf-8 BOM / cp1251 / given) ─▶ csv.DictReader | JSON lines ─▶ dict rows
                                                                                                │
        import_file():  connector.assemble(rows) ─▶ chunks of N ─▶ Ingestor ─▶ [cdp.events] / [cdp.dlq]

:func:`iter_records` is a plain generator that the resolver's bulk import reuses. It reads one buffer at a
time, so a multi-gigabyte export needs no more memory than a small one. Format, encoding and delimiter are
detected when not given: ``.jsonl``/``.ndjson`` (or a first character ``{``) mean JSON Lines; a UTF-8 BOM
means ``utf-8-sig``; bytes that are not UTF-8 mean ``cp1251`` (Russian 1C exports); the delimiter is the
most frequent of ``; , TAB |`` in the header line.

A malformed line (bad JSON, a CSV row with more fields than the header) is a :class:`FileRecordError`
naming the file and line; :func:`import_file` sends it to the dead-letter queue with the raw line and goes on.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import orjson

from cdp_hub.connector.ingest import MAX_KEPT_ERRORS, Ingestor, IngestResult
from cdp_hub.dlq import dead_letter_from_error
from cdp_hub.errors import ConfigurationError, SchemaViolation

if TYPE_CHECKING:
    from cdp_hub.connector.base import Connector, SourceRecord
    from cdp_hub.hub import Hub

__all__ = ["FileFormat", "FileRecordError", "FileSniff", "import_file", "iter_records", "sniff"]

FileFormat = Literal["csv", "jsonl"]
_GZIP_MAGIC = b"\x1f\x8b"
_HEAD_BYTES = 64 * 1024
_DELIMITERS = (";", ",", "\t", "|")
_BUFFER = 1 << 20

# A CSV field may be long (a JSON blob in an ERP column); the default 128 KiB limit is too tight.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class FileRecordError(SchemaViolation):
    """One line of a file cannot be read as a record. ``raw`` is the line as text."""

    def __init__(self, message: str, *, path: str, line: int, raw: str) -> None:
        super().__init__(f"{path}:{line}: {message}", field=f"line {line}", value=raw[:200], record_id=f"line {line}")
        self.path = path
        self.line = line
        self.raw = raw


@dataclass(frozen=True)
class FileSniff:
    """What :func:`sniff` found out about a file."""

    format: FileFormat
    encoding: str
    delimiter: str
    gzip: bool

_POSITION_EVERY = 1000  # records between two reports of the byte position (a tell() is not free)

@contextlib.contextmanager
def _open_binary(path: Path) -> Iterator[tuple[IO[bytes], bool, Callable[[], int]]]:
    """The file's bytes, gunzipped when it starts with the gzip magic number, and how many bytes of the file
    (compressed ones for gzip) have been read so far."""
    with io.BufferedReader(io.FileIO(path, "rb"), buffer_size=_BUFFER) as raw:
        if raw.peek(2)[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield io.BufferedReader(gz, buffer_size=_BUFFER), True, raw.tell
        else:
            yield raw, False, raw.tell


def _detect_encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "cp1251"
    return "utf-8"


def _norm_encoding(encoding: str, head: bytes) -> str:
    # "utf-8" given for a file with a BOM: strip the BOM rather than glue it to the first column name.
    if codecs.lookup(encoding).name == "utf-8" and head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    return encoding


def sniff(path: str | os.PathLike[str], format: FileFormat | None = None, encoding: str | None = None,
          delimiter: str | None = None) -> FileSniff:
    """Detect format, encoding and delimiter from the name and the first 64 KiB (given values win)."""
    p = Path(path)
    with _open_binary(p) as (stream, gz, _):
        head = stream.read(_HEAD_BYTES)
    name = p.name.lower().removesuffix(".gz").removesuffix(".gzip")
    fmt: FileFormat
    if format is not None:
        if format not in ("csv", "jsonl"):
            raise ConfigurationError(f"unknown file format {format!r}; use csv or jsonl")
        fmt = format
    elif name.endswith((".jsonl", ".ndjson", ".json")):
        fmt = "jsonl"
    elif name.endswith((".csv", ".tsv", ".txt")):
        fmt = "csv"
    else:
        fmt = "jsonl" if head.lstrip(codecs.BOM_UTF8 + b" \t\r\n")[:1] == b"{" else "csv"
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ConfigurationError(f"unknown encoding {encoding!r} (try utf-8, utf-8-sig or cp1251)") from None
    enc = _norm_encoding(encoding, head) if encoding else _detect_encoding(head)
    delim = delimiter or ""
    if fmt == "csv" and not delim:
        first = head.split(b"\n", 1)[0].decode(enc, errors="replace")
        delim = "\t" if name.endswith(".tsv") else max(_DELIMITERS, key=first.count)
    return FileSniff(fmt, enc, delim, gz)


def iter_records(path: str | os.PathLike[str], format: FileFormat | None = None, encoding: str | None = None,
                 delimiter: str | None = None, *,
                 on_error: Callable[[FileRecordError], None] | None = None,
                 position: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the records of a CSV or JSON Lines file (plain or gzip) one by one, in bounded memory.

    CSV rows are dicts of strings keyed by the (stripped) header; JSON lines are whatever objects they
    hold. A malformed line raises :class:`FileRecordError`, or is passed to ``on_error`` and skipped.
    ``position`` is told how many bytes of the file have been read (every ``_POSITION_EVERY`` records, and
    the file's size at the end): progress against the file's size, gzip too.
    """
    info = sniff(path, format, encoding, delimiter)
    name = str(path)
    with _open_binary(Path(path)) as (stream, _, read_so_far):
        if info.format == "jsonl":
            records = _jsonl(stream, info.encoding, name, on_error)
        else:
            text = io.TextIOWrapper(stream, encoding=info.encoding, newline="", errors="strict")
            records = _csv(text, info.delimiter, name, on_error)
        if position is None:
            yield from records
            return
        for n, record in enumerate(records, 1):
            yield record
            if n % _POSITION_EVERY == 0:
                position(read_so_far())
        position(os.path.getsize(path))


def _fail(err: FileRecordError, on_error: Callable[[FileRecordError], None] | None) -> None:
    if on_error is None:
        raise err
    on_error(err)


def _jsonl(stream: IO[bytes], encoding: str, name: str,
           on_error: Callable[[FileRecordError], None] | None) -> Iterator[dict[str, Any]]:
    utf8 = codecs.lookup(encoding).name == "utf-8"
    for lineno, line in enumerate(stream, 1):
        if lineno == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[3:]
        if not line.strip():
            continue
        try:
            data = orjson.loads(line if utf8 else line.decode(encoding))
        except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
            _fail(FileRecordError(f"not JSON: {exc}", path=name, line=lineno,
                                  raw=line.decode(encoding, errors="replace").rstrip("\r\n")), on_error)
            continue
        if not isinstance(data, dict):
            _fail(FileRecordError(f"a line must hold a JSON object, not {type(data).__name__}", path=name,
                                  line=lineno, raw=line.decode(encoding, errors="replace").rstrip()), on_error)
            continue
        yield data


def _csv(text: io.TextIOWrapper, delimiter: str, name: str,
         on_error: Callable[[FileRecordError], None] | None) -> Iterator[dict[str, Any]]:
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{name}: cannot decode the header with {text.encoding}: {exc}; "
                                 "pass --encoding") from None
    fields = [h.strip().lstrip("\ufeff") for h in header]
    width = len(fields)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise ConfigurationError(f"{name}: line {reader.line_num + 1} is not {text.encoding}: {exc}; "
                                     "pass --encoding") from None
        except csv.Error as exc:
            _fail(FileRecordError(f"CSV error: {exc}", path=name, line=reader.line_num, raw=""), on_error)
            continue
        if len(row) == width:
            yield dict(zip(fields, row, strict=True))
        elif not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        elif len(row) < width:
            # Trailing empty columns are often cut off by exporters: the missing fields are empty.
            yield dict(zip(fields, [*row, *([""] * (width - len(row)))], strict=True))
        else:
            _fail(FileRecordError(f"{len(row)} fields where the header has {width}", path=name,
                                  line=reader.line_num, raw=delimiter.join(row)), on_error)


async def import_file(hub: Hub, connector: Connector, paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
                      *, stream: str | None = None, format: FileFormat | None = None, encoding: str | None = None,
                      delimiter: str | None = None, chunk_size: int = 2000,
                      mute_triggers: bool = False,
                      progress: Callable[[int, int | None], None] | None = None) -> IngestResult:
    """Import files through ``connector``: rows ─▶ assemble ─▶ normalize ─▶ publish, ``chunk_size`` at a time.

    Options not given come from the connector's :meth:`~cdp_hub.Connector.file_options` (the ERP connector's
    config says cp1251 and ``;``), then from detection. Bad lines and bad records go to the DLQ.
    ``mute_triggers``: a history import; profiles update, no scenario fires. ``progress(bytes read, bytes in
    all the files)`` is called after every chunk.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    defaults = connector.file_options()
    ingestor = Ingestor(hub, mute_triggers=mute_triggers)
    total = IngestResult()
    missing = [str(p) for p in paths if not os.path.isfile(p)]  # noqa: ASYNC240 - a stat, before any work
    if missing:
        raise ConfigurationError(f"no such file: {', '.join(missing)}")
    size = sum(os.path.getsize(p) for p in paths)  # noqa: ASYNC240 - stats, before any work
    finished = 0  # bytes of the files done
    read = [0]  # bytes read of the current file

    def report() -> None:
        if progress is not None:
            progress(finished + read[0], size)

    for path in paths:
        bad: list[FileRecordError] = []
        read[0] = 0
        rows = iter_records(path, format, encoding or defaults.get("encoding"),
                            delimiter or defaults.get("delimiter"), on_error=bad.append,
                            position=lambda at: read.__setitem__(0, at))
        for chunk in _chunks(connector.assemble(rows, stream=stream), chunk_size):
            total.add(await ingestor.ingest(connector, chunk, stream=stream))
            if bad:
                await _dead_lines(hub, connector, stream, bad, total)
                bad = []
            report()
        if bad:
            await _dead_lines(hub, connector, stream, bad, total)
        finished += os.path.getsize(path)  # noqa: ASYNC240 - a stat
        read[0] = 0
        report()
    return total


async def _dead_lines(hub: Hub, connector: Connector, stream: str | None, bad: list[FileRecordError],
                      result: IngestResult) -> None:
    # The payload is JSON naming the file, line and raw text, so that `dlq replay` of an unfixed line fails
    # cleanly as a record error, and a fix given as the corrected row (a JSON object) goes through the connector.
    letters = [dead_letter_from_error(err, stage="ingest", payload={"file": err.path, "line": err.line,
                                                                    "raw": err.raw},
                                      source=connector.instance, replay_topic="connector",
                                      connector=connector.name, stream=stream)
               for err in bad]
    await hub.bus.publish_many([d.to_message(hub.topics.dlq) for d in letters])
    for d in letters:
        hub.metrics.dlq.labels("ingest", d.failure_type).inc()
    result.records += len(bad)
    result.dead += len(bad)
    result.errors.extend(letters[:MAX_KEPT_ERRORS - len(result.errors)])


def _chunks(rows: Iterable[SourceRecord], size: int) -> Iterator[list[SourceRecord]]:
    chunk: list[SourceRecord] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
