"""Files uploaded through the HTTP API (OpenAI's ``/v1/files``): a row in ``api_files`` and
the bytes in ``<data dir>/files/<tenant>/<file id>``.

An upload is written as it arrives (:class:`Upload`), never held whole; it is counted as it
goes, so one over the cap stops at the cap and leaves nothing behind. The row is written
only once the bytes are complete: a file id always names a whole file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from conf.errors import InvalidRequest, NotFound
from conf.settings import get_settings
from models.tables import api_files

PURPOSES = ("batch",)


class TooLarge(InvalidRequest):
    """An upload went past ``MODELYARD_API_MAX_UPLOAD_BYTES``."""


def _path(tenant_id: str, file_id: str) -> Path:
    return get_settings().data_dir / "files" / tenant_id / file_id


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


class Upload:
    """One file being received: ``write`` parts as they arrive, then ``finish`` (or ``abort``)."""

    def __init__(self, tenant_id: str, max_bytes: int) -> None:
        self.tenant_id, self.max_bytes = tenant_id, max_bytes
        self.id = new_file_id()
        self.size = 0
        path = _path(tenant_id, self.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = path.with_suffix(".part")
        self._fh: IO[bytes] | None = open(self._partial, "wb")  # noqa: SIM115 - closed in finish/abort

    def write(self, data: bytes) -> None:
        assert self._fh is not None
        self.size += len(data)
        if self.size > self.max_bytes:
            self.abort()
            raise TooLarge(
                f"the file is larger than the upload limit of {self.max_bytes:,} bytes (MODELYARD_API_MAX_UPLOAD_BYTES)"
            )
        self._fh.write(data)

    def finish(self, session: Session, filename: str, purpose: str) -> dict[str, Any]:
        assert self._fh is not None
        if purpose not in PURPOSES:
            self.abort()
            raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}; got {purpose[:40]!r}")
        self._fh.close()
        self._fh = None
        os.replace(self._partial, _path(self.tenant_id, self.id))
        session.execute(
            api_files.insert().values(
                id=self.id, tenant_id=self.tenant_id, filename=filename[:512], purpose=purpose, bytes=self.size
            )
        )
        return get_file(session, self.tenant_id, self.id)

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._partial.unlink(missing_ok=True)


def get_file(session: Session, tenant_id: str, file_id: str) -> dict[str, Any]:
    """The file's row; another tenant's file is not found, like one that does not exist."""
    row = session.execute(
        select(api_files).where(api_files.c.id == file_id, api_files.c.tenant_id == tenant_id)
    ).first()
    if row is None:
        raise NotFound(f"no file {file_id!r}")
    return dict(row._mapping)


def list_files(session: Session, tenant_id: str, limit: int = 10_000) -> list[dict[str, Any]]:
    rows = session.execute(
        select(api_files)
        .where(api_files.c.tenant_id == tenant_id)
        .order_by(api_files.c.created_at.desc(), api_files.c.id)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


def open_file(tenant_id: str, file_id: str) -> IO[bytes]:
    """The stored bytes (the caller checked the row with :func:`get_file`)."""
    return open(_path(tenant_id, file_id), "rb")  # the caller closes it


def iter_bytes(tenant_id: str, file_id: str, size: int = 64 * 1024) -> Iterator[bytes]:
    with open_file(tenant_id, file_id) as fh:
        while block := fh.read(size):
            yield block


def delete_file(session: Session, tenant_id: str, file_id: str) -> None:
    get_file(session, tenant_id, file_id)
    session.execute(delete(api_files).where(api_files.c.id == file_id, api_files.c.tenant_id == tenant_id))
    _path(tenant_id, file_id).unlink(missing_ok=True)
