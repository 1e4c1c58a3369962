"""Checks on one submitted item, shared by the producer API and the CLI's file reader.

Every check raises :class:`conf.errors.InvalidRequest` with one line that starts with
``where`` (the item: ``item 3``, ``item 'abc'``, ``notes.jsonl:7``) and names the rule or the
limit (with the setting that sets it). A message never quotes an input's text, and never
another item's: only the item's position and its (checked, bounded) custom id.

What is refused, and why:
- NUL (U+0000) anywhere: PostgreSQL cannot store it in text or JSON;
- lone surrogates (U+D800-U+DFFF): not valid Unicode, they cannot be encoded as UTF-8;
- control characters in a custom id: it is shown in errors, status lines and results;
- payload values that are not JSON (bytes, sets, objects, NaN, non-string keys): they
  cannot be stored or sent as they are; nesting deeper than ``MODELYARD_MAX_PAYLOAD_DEPTH``;
- anything over its size limit (``MODELYARD_MAX_*``).
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

from conf.errors import InvalidRequest
from conf.settings import Settings

_INT_LIMIT = 2**63  # integers beyond 64 bits are not portable JSON


@dataclass(frozen=True)
class Limits:
    text_chars: int
    custom_id_chars: int
    payload_bytes: int
    blob_bytes: int
    depth: int
    chat_messages: int

    @classmethod
    def of(cls, s: Settings) -> Limits:
        return cls(
            s.max_text_chars,
            s.max_custom_id_chars,
            s.max_payload_bytes,
            s.max_blob_bytes,
            s.max_payload_depth,
            s.max_chat_messages,
        )


def custom_id(value: Any, where: str, limits: Limits) -> str:
    """A custom id: a string of 1 to ``MODELYARD_MAX_CUSTOM_ID_CHARS`` printable characters."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{where}: custom_id must be a string, got {_kind(value)}")
    if not value:
        raise InvalidRequest(f"{where}: custom_id is empty")
    if len(value) > limits.custom_id_chars:
        raise InvalidRequest(
            f"{where}: custom_id is {len(value):,} characters; the limit is "
            f"{limits.custom_id_chars:,} (MODELYARD_MAX_CUSTOM_ID_CHARS)"
        )
    pos = _control_at(value)
    if pos is not None:
        raise InvalidRequest(
            f"{where}: custom_id holds {_char(value[pos])} at character {pos + 1}; "
            "control characters are not allowed in a custom id"
        )
    return value


def text(value: Any, where: str, limits: Limits, *, what: str = "text") -> str:
    """A text to embed or speak: a non-blank string within ``MODELYARD_MAX_TEXT_CHARS``."""
    if not isinstance(value, str):
        raise InvalidRequest(f'{where}: "{what}" must be a string, got {_kind(value)}')
    if len(value) > limits.text_chars:
        raise InvalidRequest(
            f"{where}: {what} is {len(value):,} characters; the limit is "
            f"{limits.text_chars:,} (MODELYARD_MAX_TEXT_CHARS)"
        )
    if not value.strip():
        raise InvalidRequest(f"{where}: {what} is empty")
    storable(value, where, what)
    return value


def storable(value: str, where: str, what: str) -> None:
    """No NUL and no lone surrogate: a string PostgreSQL can store and a provider can be sent."""
    pos = value.find("\x00")
    if pos >= 0:
        raise InvalidRequest(
            f"{where}: {what} holds a NUL character (U+0000) at character {pos + 1}; it cannot be stored"
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest(
                f"{where}: {what} holds a lone surrogate ({_char(value[exc.start])}) at "
                f"character {exc.start + 1}; it is not valid Unicode"
            ) from None


def payload(value: Any, where: str, limits: Limits, *, extra_bytes: int = 0) -> None:
    """A JSON object (or None) within ``MODELYARD_MAX_PAYLOAD_DEPTH`` levels and, with
    ``extra_bytes`` (the item's text), ``MODELYARD_MAX_PAYLOAD_BYTES`` bytes."""
    if value is None:
        size = 0
    else:
        if not isinstance(value, dict):
            raise InvalidRequest(f"{where}: payload must be an object, got {_kind(value)}")
        _json_only(value, where, limits.depth)
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8"))
    if size + extra_bytes > limits.payload_bytes:
        raise InvalidRequest(
            f"{where}: the item is {size + extra_bytes:,} bytes; the limit is "
            f"{limits.payload_bytes:,} (MODELYARD_MAX_PAYLOAD_BYTES)"
        )


def blob(value: Any, where: str, limits: Limits, model_type: str, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)) or not len(value):
        raise InvalidRequest(f"{where}: {model_type} needs the {what} bytes, got {_kind(value)}")
    data = bytes(value)
    if len(data) > limits.blob_bytes:
        raise InvalidRequest(
            f"{where}: the {what} is {len(data):,} bytes; the limit is {limits.blob_bytes:,} (MODELYARD_MAX_BLOB_BYTES)"
        )
    return data


def name(value: Any, what: str, *, max_chars: int = 256) -> str:
    """A tenant, model or idempotency key given by the caller: a short printable string."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{what} must be a non-empty string, got {_kind(value)}")
    if len(value) > max_chars:
        raise InvalidRequest(f"{what} is {len(value):,} characters; the limit is {max_chars:,}")
    pos = _control_at(value)
    if pos is not None:
        raise InvalidRequest(
            f"{what} holds {_char(value[pos])} at character {pos + 1}; control characters are not allowed"
        )
    return value


def _control_at(value: str) -> int | None:
    """Where the first control character (or lone surrogate) is, if any."""
    if value.isprintable():  # the common case, in C: printable excludes every Cc and Cs character
        return None
    return next((pos for pos, ch in enumerate(value) if unicodedata.category(ch) in ("Cc", "Cs")), None)


def _json_only(root: dict[str, Any], where: str, max_depth: int) -> None:
    """Walk the payload without recursion (a cycle or a deep nest ends at ``max_depth``)."""
    stack: list[tuple[Any, int, str]] = [(root, 1, "payload")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > max_depth:
                raise InvalidRequest(
                    f"{where}: {path} is nested more than {max_depth} levels deep (MODELYARD_MAX_PAYLOAD_DEPTH)"
                )
            if isinstance(value, dict):
                for key, child in value.items():
                    if not isinstance(key, str):
                        raise InvalidRequest(f"{where}: {path} has a key that is {_kind(key)}; keys must be strings")
                    storable(key, where, f"a key of {path}")
                    stack.append((child, depth + 1, f"{path}.{_short(key)}"))
            else:
                stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(value))
        elif isinstance(value, str):
            storable(value, where, path)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidRequest(f"{where}: {path} is {value}; JSON numbers must be finite")
        elif isinstance(value, int) and not isinstance(value, bool):
            if not -_INT_LIMIT < value < _INT_LIMIT:
                raise InvalidRequest(f"{where}: {path} is an integer beyond 64 bits")
        elif value is not None and not isinstance(value, bool):
            raise InvalidRequest(
                f"{where}: {path} is {_kind(value)}; a payload holds only JSON values "
                "(objects, lists, strings, numbers, true, false, null)"
            )


def _kind(value: Any) -> str:
    return "nothing (null)" if value is None else type(value).__name__


def _char(ch: str) -> str:
    return f"U+{ord(ch):04X}"


def _short(key: str) -> str:
    return key if len(key) <= 40 and key.isprintable() else f"{key[:40].encode('unicode_escape').decode()}..."
