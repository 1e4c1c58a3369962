"""The cheapest real call per model type: how a key is tested before it is saved, and how
scheduled revalidation checks it again.

embedding: encode one short text · chat: one short message (max 1 token) · rerank: score two
texts · image2text: describe a tiny generated PNG · speech2text: transcribe a short generated
WAV · tts: synthesize one word. The inputs are made here, in memory; nothing is read from disk.
"""

from __future__ import annotations

import io
import struct
import wave
import zlib
from collections.abc import Callable
from typing import Any

from providers.base import Usage

PROBE_TEXT = "hello"
# Probing every type of a factory costs money on some; the cheapest go first.
PROBE_ORDER = ("embedding", "rerank", "chat", "image2text", "tts", "speech2text")


def tiny_png(size: int = 8) -> bytes:
    """A ``size`` x ``size`` grey RGB PNG, made with zlib (no imaging library)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\x80\x80\x80" * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def short_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    """Half a second of 16 kHz mono silence as a WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


_PROBES: dict[str, Callable[[Any], Any]] = {
    "embedding": lambda p: p.encode([PROBE_TEXT]),
    "chat": lambda p: p.chat(None, [{"role": "user", "content": PROBE_TEXT}], {"max_tokens": 1}),
    "rerank": lambda p: p.similarity(PROBE_TEXT, [PROBE_TEXT, "goodbye"]),
    "image2text": lambda p: p.describe_with_prompt(tiny_png(), "One word: what colour is this?", "image/png"),
    "speech2text": lambda p: p.transcription(short_wav(), "probe.wav"),
    "tts": lambda p: p.tts(PROBE_TEXT),
}


def probe(provider: Any) -> Usage:
    """Make the cheapest real call for the provider's model type; raises what the call raises."""
    return _PROBES[provider.model_type](provider).usage
