"""``/v1/files``: upload (streamed to storage, capped), metadata, content, delete. A batch's
output and error files are files too (ids ``file-batch-<job>-output|errors``), made from the
job's items when read."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from conf.errors import InvalidRequest, NotFound
from conf.settings import get_settings
from models import files as store
from models.db import session_scope
from workers.api import batch_files
from workers.api.auth import jobs_tenant
from workers.api.errors import ERROR_RESPONSES, ApiError
from workers.api.schemas import FileDeleted, FileList, FileObject

router = APIRouter(prefix="/v1/files", tags=["files"], responses=ERROR_RESPONSES)
BATCH_FILE = re.compile(r"^file-batch-([0-9a-f]{16})-(output|errors)$")
UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": list(store.PURPOSES)},
                    },
                }
            }
        },
    }
}


def file_object(row: dict[str, Any]) -> FileObject:
    return FileObject(
        id=row["id"],
        bytes=row["bytes"],
        created_at=int(row["created_at"].timestamp()),
        filename=row["filename"],
        purpose=row["purpose"],
    )


@router.post(
    "",
    response_model=FileObject,
    openapi_extra=UPLOAD_SCHEMA,
    summary="Upload a JSONL file (purpose batch), streamed to storage",
)
async def upload_file(request: Request, tenant_id: str = Depends(jobs_tenant)) -> FileObject:
    from workers.api.multipart import receive

    cap = get_settings().api_max_upload_bytes
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > cap + 64 * 1024:  # the parts' headers take a few hundred bytes
        raise ApiError(
            413,
            f"the upload is larger than the limit of {cap:,} bytes (MODELYARD_API_MAX_UPLOAD_BYTES)",
            "file_too_large",
        )
    upload = store.Upload(tenant_id, cap)
    try:
        received = await receive(request.headers.get("content-type", ""), request.stream(), upload)
        if received.filename is None:
            raise InvalidRequest('no "file" part in the form')
        purpose = received.fields.get("purpose")
        if purpose is None:
            raise InvalidRequest('no "purpose" field in the form')
        row = await run_in_threadpool(_finish, upload, received.filename, purpose)
    except InvalidRequest as exc:
        upload.abort()
        if "Content-Type" in str(exc):
            raise ApiError(415, str(exc), "unsupported_media_type") from None
        raise
    except BaseException:
        upload.abort()
        raise
    return file_object(row)


def _finish(upload: store.Upload, filename: str, purpose: str) -> dict[str, Any]:
    with session_scope() as session:
        return upload.finish(session, filename, purpose)


@router.get("", response_model=FileList, summary="The tenant's uploaded files")
def list_files(tenant_id: str = Depends(jobs_tenant)) -> FileList:
    with session_scope() as session:
        return FileList(data=[file_object(r) for r in store.list_files(session, tenant_id)])


@router.get("/{file_id}", response_model=FileObject)
def get_file(file_id: str, tenant_id: str = Depends(jobs_tenant)) -> FileObject:
    match = BATCH_FILE.match(file_id)
    if match:
        return batch_files.describe(tenant_id, match[1], match[2], file_id)
    with session_scope() as session:
        return file_object(store.get_file(session, tenant_id, file_id))


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/jsonl": {"schema": {"type": "string"}}}, "description": "the file's bytes"}
    },
)
def file_content(file_id: str, tenant_id: str = Depends(jobs_tenant)) -> StreamingResponse:
    match = BATCH_FILE.match(file_id)
    if match:
        lines = batch_files.lines(tenant_id, match[1], match[2])
        return StreamingResponse(lines, media_type="application/jsonl")
    with session_scope() as session:
        store.get_file(session, tenant_id, file_id)
    return StreamingResponse(store.iter_bytes(tenant_id, file_id), media_type="application/octet-stream")


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(file_id: str, tenant_id: str = Depends(jobs_tenant)) -> FileDeleted:
    if BATCH_FILE.match(file_id):
        raise NotFound(f"{file_id} is a batch's output; it goes when the batch's job is deleted")
    with session_scope() as session:
        store.delete_file(session, tenant_id, file_id)
    return FileDeleted(id=file_id, deleted=True)
