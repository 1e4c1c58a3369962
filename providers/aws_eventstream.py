"""AWS event-stream framing (``application/vnd.amazon.eventstream``), the binary frames that
Bedrock's converse-stream answers with: a 12-byte prelude (total length, headers length, CRC32),
typed headers, the payload and a CRC32 of the whole message."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator

from providers.wire import malformed_event

# Frame: total length (4 bytes), headers length (4), prelude CRC32 (4), headers, payload, message CRC32 (4).
_PRELUDE = 12
_FIXED_SIZES = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}  # byte, short, int, long, timestamp, uuid


def _frame_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    at = 0
    try:
        while at < len(raw):
            size = raw[at]
            name = raw[at + 1 : at + 1 + size].decode("utf-8")
            kind = raw[at + 1 + size]
            at += 2 + size
            if kind in (0, 1):  # booleans carry no bytes
                headers[name] = "true" if kind == 0 else "false"
            elif kind in (6, 7):  # bytes, string: 2-byte length first
                length = int.from_bytes(raw[at : at + 2], "big")
                value = raw[at + 2 : at + 2 + length]
                headers[name] = value.decode("utf-8") if kind == 7 else value.hex()
                at += 2 + length
            elif kind in _FIXED_SIZES:
                headers[name] = str(int.from_bytes(raw[at : at + _FIXED_SIZES[kind]], "big", signed=True))
                at += _FIXED_SIZES[kind]
            else:
                raise ValueError(f"header type {kind}")
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise malformed_event(str(exc)) from None
    return headers


def event_frames(chunks: Iterable[bytes]) -> Iterator[tuple[dict[str, str], bytes]]:
    """(headers, payload) of each frame in a byte stream cut anywhere; CRCs checked."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= _PRELUDE:
            total, headers_length, prelude_crc = struct.unpack(">III", buffer[:_PRELUDE])
            if zlib.crc32(buffer[:8]) != prelude_crc or headers_length > total - _PRELUDE - 4:
                raise malformed_event("bad prelude")
            if len(buffer) < total:
                break
            frame = bytes(buffer[:total])
            del buffer[:total]
            if zlib.crc32(frame[:-4]) != struct.unpack(">I", frame[-4:])[0]:
                raise malformed_event("bad message checksum")
            yield _frame_headers(frame[_PRELUDE : _PRELUDE + headers_length]), frame[_PRELUDE + headers_length : -4]
    if buffer:
        raise malformed_event(f"{len(buffer)} bytes after the last frame")
