"""Wire helpers shared by the provider families: reading a response whose shape is not what the
provider documents, usage as reported or estimated, the text inside chat messages, server-sent
events, and tool-call arguments."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import json_repair

from providers.base import Usage
from providers.errors import ErrorCode, ProviderError

DEFAULT_IMAGE_PROMPT = "Describe this image in detail."


@dataclass
class PendingCall:
    """A tool call being assembled from a stream's fragments: its id, name and argument pieces."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@contextmanager
def reading(path: str) -> Iterator[None]:
    """Turn a response that lacks the fields we need into a ProviderError (SERVER)."""
    try:
        yield
    except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise ProviderError(
            f"/{path} answered in an unexpected shape ({type(exc).__name__}: {exc})", code=ErrorCode.SERVER
        ) from None


def count(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def reported_usage(raw: Any) -> Usage | None:
    """Usage as the server reported it (prompt/completion or input/output names), None if it did not.
    Tokens reported only as a total count as prompt tokens."""
    if not isinstance(raw, dict):
        return None
    prompt = count(raw.get("prompt_tokens")) or count(raw.get("input_tokens"))
    completion = count(raw.get("completion_tokens")) or count(raw.get("output_tokens"))
    total = count(raw.get("total_tokens")) or prompt + completion
    if not total:
        return None
    return Usage(prompt or (total - completion), completion, total)


def estimated(prompt: int, completion: int = 0) -> Usage:
    return Usage(prompt, completion, prompt + completion, estimated=True)


def message_text(messages: Iterable[dict[str, Any]]) -> str:
    """The text inside chat messages (string contents and text parts), for estimates."""
    parts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(parts)


def parse_arguments(raw: Any) -> dict[str, Any]:
    """A tool call's ``arguments``: a JSON object in a string, repaired when a model botched it."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = json_repair.loads(raw)
    return parsed if isinstance(parsed, dict) else {}


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event (multi-line data joined), up to ``[DONE]``."""
    buffer: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            buffer.append(line[5:].removeprefix(" "))
        elif not line.strip() and buffer:
            data, buffer = "\n".join(buffer), []
            if data.strip() == "[DONE]":
                return
            yield data
    if buffer and "\n".join(buffer).strip() != "[DONE]":
        yield "\n".join(buffer)
