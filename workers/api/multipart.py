"""Receiving ``multipart/form-data`` as a stream: the file part goes to an :class:`Upload`
block by block as the body arrives (never held whole); the small text fields are kept,
each capped. python-multipart's push parser does the parsing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from conf.errors import InvalidRequest
from models.files import Upload

if TYPE_CHECKING:  # python-multipart declares it for type checkers only
    from python_multipart.multipart import MultipartCallbacks

MAX_FIELD_BYTES = 4096


@dataclass
class Received:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None


class _Parts:
    """python-multipart callbacks: route each part's bytes to the upload or a field buffer."""

    def __init__(self, upload: Upload, file_field: str) -> None:
        self.upload, self.file_field, self.out = upload, file_field, Received()
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._buf = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._hfield,
            "on_header_value": self._hvalue,
            "on_header_end": self._hend,
            "on_headers_finished": self._hdone,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._name, self._is_file, self._buf = {}, None, False, bytearray()

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _hend(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _hdone(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = params.get(b"name")
        if name is None:
            raise InvalidRequest("a multipart part has no name")
        self._name = name.decode("utf-8", "replace")
        if self._name == self.file_field:
            if self.out.filename is not None:
                raise InvalidRequest(f"only one {self.file_field!r} part is accepted")
            self._is_file = True
            self.out.filename = params.get(b"filename", b"upload").decode("utf-8", "replace") or "upload"

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.upload.write(data[start:end])
            return
        self._buf += data[start:end]
        if len(self._buf) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def _end(self) -> None:
        if not self._is_file and self._name is not None:
            try:
                self.out.fields[self._name] = self._buf.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"form field {self._name!r} is not UTF-8") from None


async def receive(content_type: str, body: AsyncIterator[bytes], upload: Upload, file_field: str = "file") -> Received:
    """Parse the body into ``upload`` (its file part) and the text fields. Raises InvalidRequest
    for a body that is not multipart, TooLarge past the cap; the caller aborts the upload."""
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise InvalidRequest("expected Content-Type: multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("the multipart Content-Type has no boundary")
    parts = _Parts(upload, file_field)
    parser = MultipartParser(boundary, parts.callbacks())
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidRequest(f"malformed multipart body: {exc}") from None
    return parts.out
