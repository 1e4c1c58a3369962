"""Reading ``embed`` inputs as a stream: ``.txt`` (one text per line, blank lines skipped),
``.jsonl`` (``{"custom_id": ..., "text": ...}`` per line, or OpenAI's batch-request line
``{"custom_id", "method", "url": "/v1/embeddings", "body": {"input": ...}}``), ``.csv`` /
``.tsv`` (a header row; the text from ``--text-column``, default ``text``, the id from
``--id-column``, default ``custom_id`` when there is one), ``.parquet`` (the same columns; the
``parquet`` extra) and ``-`` (standard input, format detected from its first non-blank line).
Nothing is read ahead: a million-row file is never held in memory, and no line longer than
``MODELYARD_MAX_PAYLOAD_BYTES`` is read whole.

Each line is checked as it is read (tasks.validation), so a refusal names the input and the
line: ``notes.jsonl:7: text holds a NUL character (U+0000) at character 12; ...``.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from conf.errors import InvalidRequest, NotFound
from conf.settings import get_settings
from models.jobs import ItemRow
from tasks import validation
from tasks.validation import Limits

FORMATS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Columns:
    """Which columns of a table (.csv, .tsv, .parquet) hold the text and the custom id."""

    text: str | None = None  # None: "text"
    id: str | None = None  # None: "custom_id" if the table has one, else the row's position


def read_inputs(paths: list[str], columns: Columns = Columns()) -> Iterator[ItemRow]:
    if not paths:
        raise InvalidRequest("give at least one input file (or - for standard input)")
    limits = Limits.of(get_settings())
    for path in paths:
        if path == "-":
            yield from _read_stream(sys.stdin.buffer, "stdin", None, limits)
            continue
        p = Path(path)
        fmt = FORMATS.get(p.suffix.lower())
        if fmt is None:
            raise InvalidRequest(f"{path}: expected a .txt, .jsonl, .csv, .tsv or .parquet file")
        if not p.is_file():
            raise NotFound(f"no such file: {path}")
        if fmt == "parquet":
            yield from _read_parquet(p, columns, limits)
            continue
        with p.open("rb") as fh:
            if fmt in ("csv", "tsv"):
                yield from _read_table(fh, p.name, "\t" if fmt == "tsv" else ",", columns, limits)
            else:
                yield from _read_stream(fh, p.name, fmt, limits)


def _pick(header: list[str], columns: Columns, name: str) -> tuple[int, int | None]:
    """Positions of the text and id columns in ``header``."""
    text_col = columns.text or "text"
    if text_col not in header:
        raise InvalidRequest(
            f"{name}: no column {text_col!r} (columns: {', '.join(header)[:300]}); "
            "name the text's column with --text-column"
        )
    if columns.id is not None and columns.id not in header:
        raise InvalidRequest(f"{name}: no column {columns.id!r} (columns: {', '.join(header)[:300]}) for --id-column")
    id_col = columns.id or ("custom_id" if "custom_id" in header else None)
    return header.index(text_col), header.index(id_col) if id_col else None


def _table_row(text: object, custom_id: object, where: str, limits: Limits) -> ItemRow:
    if custom_id is None:
        return ItemRow(custom_id=where, text=validation.text(text, where, limits))
    cid = validation.custom_id(custom_id if isinstance(custom_id, str) else str(custom_id), where, limits)
    return ItemRow(custom_id=cid, text=validation.text(text, f"{where} (item {cid!r})", limits))


def _read_table(fh: BinaryIO, name: str, delimiter: str, columns: Columns, limits: Limits) -> Iterator[ItemRow]:
    """A CSV / TSV file with a header row, read a record at a time (quoted fields may span lines)."""
    csv.field_size_limit(limits.payload_bytes)
    reader = csv.reader(io.TextIOWrapper(fh, encoding="utf-8-sig", newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        text_at, id_at = _pick(header, columns, name)
        for record in reader:
            where = f"{name}:{reader.line_num}"
            if not record or not any(field.strip() for field in record):
                continue
            if len(record) != len(header):
                raise InvalidRequest(f"{where}: {len(record)} fields where the header has {len(header)}")
            yield _table_row(record[text_at], None if id_at is None else record[id_at], where, limits)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"{name}:{reader.line_num + 1}: not valid UTF-8 (byte {exc.start + 1} of a block)"
        ) from None
    except csv.Error as exc:
        raise InvalidRequest(
            f"{name}:{reader.line_num}: {exc} (a field is limited to {limits.payload_bytes:,} bytes, "
            "MODELYARD_MAX_PAYLOAD_BYTES)"
        ) from None


def _read_parquet(path: Path, columns: Columns, limits: Limits) -> Iterator[ItemRow]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidRequest(
            f"{path.name}: reading Parquet needs the parquet extra: pip install 'modelyard[parquet]' (pyarrow)"
        ) from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a file that is not Parquet vary
        raise InvalidRequest(f"{path.name}: not a Parquet file ({type(exc).__name__})") from None
    header = table.schema_arrow.names
    text_at, id_at = _pick(header, columns, path.name)
    wanted = [header[text_at]] + ([header[id_at]] if id_at is not None else [])
    row = 0
    for batch in table.iter_batches(batch_size=10_000, columns=wanted):
        texts = batch.column(0).to_pylist()
        ids = batch.column(1).to_pylist() if id_at is not None else None
        for i, text in enumerate(texts):
            row += 1
            if id_at is not None and ids is not None and ids[i] is None:
                raise InvalidRequest(f"{path.name}:row {row}: custom_id is empty")
            yield _table_row(text, None if ids is None else ids[i], f"{path.name}:row {row}", limits)


def _read_stream(fh: BinaryIO, name: str, fmt: str | None, limits: Limits) -> Iterator[ItemRow]:
    cap = limits.payload_bytes
    lineno = 0
    while raw := fh.readline(cap + 1):
        lineno += 1
        where = f"{name}:{lineno}"
        if len(raw) > cap and not raw.endswith(b"\n"):
            raise InvalidRequest(f"{where}: the line is longer than {cap:,} bytes (MODELYARD_MAX_PAYLOAD_BYTES)")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"{where}: not valid UTF-8 (byte {exc.start + 1} of the line)") from None
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
        stripped = line.strip()
        if not stripped:
            continue
        if fmt is None:
            fmt = "jsonl" if stripped.startswith("{") else "txt"
        if fmt == "txt":
            yield ItemRow(custom_id=where, text=validation.text(line.rstrip("\r\n"), where, limits))
        else:
            yield _jsonl_row(stripped, where, limits)


def _jsonl_row(line: str, where: str, limits: Limits) -> ItemRow:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{where}: not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # well-formed, but a number longer than Python converts (4,300 digits)
        raise InvalidRequest(f"{where}: not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidRequest(
            f"{where}: the JSON is nested more than {limits.depth} levels deep (MODELYARD_MAX_PAYLOAD_DEPTH)"
        ) from None
    if isinstance(obj, dict) and "text" not in obj and isinstance(obj.get("body"), dict):
        return _batch_request_row(obj, where, limits)
    if not isinstance(obj, dict) or "text" not in obj:
        raise InvalidRequest(
            f'{where}: expected an object with "text" (and optionally "custom_id"), or an OpenAI '
            'batch request line ("custom_id", "body": {"input": ...})'
        )
    if "custom_id" not in obj:
        return ItemRow(custom_id=where, text=validation.text(obj["text"], where, limits))
    custom_id = validation.custom_id(obj["custom_id"], where, limits)
    return ItemRow(custom_id=custom_id, text=validation.text(obj["text"], f"{where} (item {custom_id!r})", limits))


def _batch_request_row(obj: dict[str, Any], where: str, limits: Limits) -> ItemRow:
    """OpenAI's batch-request line: ``{"custom_id", "method": "POST", "url": "/v1/embeddings",
    "body": {"model", "input"}}``; ``--model`` chooses the model, not the line's ``body.model``."""
    url = obj.get("url", "/v1/embeddings")
    if url != "/v1/embeddings":
        raise InvalidRequest(f"{where}: a batch request for {str(url)[:60]!r}; embed takes /v1/embeddings requests")
    value = obj["body"].get("input")
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidRequest(
                f'{where}: "body.input" holds {len(value)} texts; give one text per line '
                "(each line is one item with its own custom_id)"
            )
        value = value[0]
    if "custom_id" not in obj:
        raise InvalidRequest(f'{where}: a batch request line needs "custom_id"')
    custom_id = validation.custom_id(obj["custom_id"], where, limits)
    return ItemRow(
        custom_id=custom_id, text=validation.text(value, f"{where} (item {custom_id!r})", limits, what="body.input")
    )
