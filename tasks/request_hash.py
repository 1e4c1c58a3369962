"""The canonical hash of a job request, which an idempotency key is bound to.

The same key with the same request returns the same job; with a different request it is a
conflict. "The same request" is the job type, the model (its canonical ``name@factory``),
the options that change the output (the input type; not the chunk size) and every item in order: its
custom id, text, JSON payload (keys sorted) and binary input. Items are hashed as they
stream past, so a million-item request is hashed without being held in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

from models.jobs import ItemRow

VERSION = 1


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class RequestHash:
    """sha256 over a header (type, model, options) and each item, every part length-prefixed."""

    def __init__(self, model_type: str, model: str, options: dict[str, Any]) -> None:
        self._h = hashlib.sha256()
        self._part(_canonical({"v": VERSION, "type": model_type, "model": model, "options": options}))

    def _part(self, data: bytes) -> None:
        self._h.update(len(data).to_bytes(8, "big"))
        self._h.update(data)

    def feed(self, rows: Iterable[ItemRow]) -> Iterator[ItemRow]:
        """Pass ``rows`` through, hashing each."""
        for row in rows:
            self._part(_canonical([row.custom_id, row.text, row.payload]))
            self._part(b"" if row.blob is None else b"\x01" + bytes(row.blob))
            yield row

    def hexdigest(self) -> str:
        return self._h.hexdigest()
