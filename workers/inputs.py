"""Reading ``embed`` inputs as a stream: ``.txt`` (one text per line, blank lines skipped),
``.jsonl`` (``{"custom_id": ..., "text": ...}`` per line) and ``-`` (standard input, format
detected from its first non-blank line). Nothing is read ahead: a 100,000-line file is
never held in memory, and no line longer than ``MODELYARD_MAX_PAYLOAD_BYTES`` is read whole.

Each line is checked as it is read (tasks.validation), so a refusal names the input and the
line: ``notes.jsonl:7: text holds a NUL character (U+0000) at character 12; ...``.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from conf.errors import InvalidRequest, NotFound
from conf.settings import get_settings
from models.jobs import ItemRow
from tasks import validation
from tasks.validation import Limits


def read_inputs(paths: list[str]) -> Iterator[ItemRow]:
    if not paths:
        raise InvalidRequest("give at least one input file (or - for standard input)")
    limits = Limits.of(get_settings())
    for path in paths:
        if path == "-":
            yield from _read_stream(sys.stdin.buffer, "stdin", None, limits)
            continue
        p = Path(path)
        if not p.is_file():
            raise NotFound(f"no such file: {path}")
        fmt = "jsonl" if p.suffix.lower() in (".jsonl", ".ndjson") else "txt" if p.suffix.lower() == ".txt" else None
        if fmt is None:
            raise InvalidRequest(f"{path}: expected a .txt or .jsonl file")
        with p.open("rb") as fh:
            yield from _read_stream(fh, p.name, fmt, limits)


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
    except ValueError as exc:
        raise InvalidRequest(f"{where}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise InvalidRequest(f"{where}: the JSON is nested more than {limits.depth} levels deep "
                             "(MODELYARD_MAX_PAYLOAD_DEPTH)") from None
    if not isinstance(obj, dict) or "text" not in obj:
        raise InvalidRequest(f'{where}: expected an object with "text" (and optionally "custom_id")')
    if "custom_id" not in obj:
        return ItemRow(custom_id=where, text=validation.text(obj["text"], where, limits))
    custom_id = validation.custom_id(obj["custom_id"], where, limits)
    return ItemRow(custom_id=custom_id, text=validation.text(obj["text"], f"{where} (item {custom_id!r})", limits))
