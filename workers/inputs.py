"""Reading ``embed`` inputs as a stream: ``.txt`` (one text per line, blank lines skipped),
``.jsonl`` (``{"custom_id": ..., "text": ...}`` per line) and ``-`` (standard input, format
detected from its first non-blank line). Nothing is read ahead: a 100,000-line file is
never held in memory."""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from conf.errors import InvalidRequest, NotFound
from models.jobs import ItemRow


def read_inputs(paths: list[str]) -> Iterator[ItemRow]:
    if not paths:
        raise InvalidRequest("give at least one input file (or - for standard input)")
    for path in paths:
        if path == "-":
            yield from _read_stream(sys.stdin, "stdin", fmt=None)
            continue
        p = Path(path)
        if not p.is_file():
            raise NotFound(f"no such file: {path}")
        fmt = "jsonl" if p.suffix.lower() in (".jsonl", ".ndjson") else "txt" if p.suffix.lower() == ".txt" else None
        if fmt is None:
            raise InvalidRequest(f"{path}: expected a .txt or .jsonl file")
        with p.open(encoding="utf-8", errors="strict") as fh:
            yield from _read_stream(fh, p.name, fmt=fmt)


def _read_stream(fh: IO[str], name: str, fmt: str | None) -> Iterator[ItemRow]:
    try:
        for lineno, line in enumerate(fh, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            if fmt is None:
                fmt = "jsonl" if stripped.startswith("{") else "txt"
            if fmt == "txt":
                yield ItemRow(custom_id=f"{name}:{lineno}", text=line.rstrip("\r\n"))
            else:
                yield _jsonl_row(stripped, name, lineno)
    except UnicodeDecodeError:
        raise InvalidRequest(f"{name}: not valid UTF-8 text") from None


def _jsonl_row(line: str, name: str, lineno: int) -> ItemRow:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise InvalidRequest(f"{name}:{lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict) or "text" not in obj:
        raise InvalidRequest(f'{name}:{lineno}: expected an object with "text" (and optionally "custom_id")')
    custom_id = obj.get("custom_id", f"{name}:{lineno}")
    return ItemRow(custom_id=str(custom_id), text=obj["text"])
