"""``POST /v1/embeddings``: interactive embedding through the same queue, limits, ledger and
tracing as any job -- a one-off job submitted and waited for (``MODELYARD_API_WAIT_SECONDS``)."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Depends

from conf.errors import InvalidRequest
from conf.settings import get_settings
from tasks import producer
from workers.api.auth import jobs_tenant
from workers.api.batch_files import ERROR_STATUS
from workers.api.errors import ERROR_RESPONSES, ApiError, ErrorBody
from workers.api.schemas import Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage

router = APIRouter(
    tags=["embeddings"],
    responses={
        **ERROR_RESPONSES,
        429: {"model": ErrorBody, "description": "The provider's rate limit or quota"},
        502: {"model": ErrorBody, "description": "The provider failed"},
        504: {"model": ErrorBody, "description": "Not done in MODELYARD_API_WAIT_SECONDS"},
    },
)
MAX_INPUTS = 2048


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
def create_embeddings(req: EmbeddingRequest, tenant_id: str = Depends(jobs_tenant)) -> EmbeddingResponse:
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts or len(texts) > MAX_INPUTS:
        raise InvalidRequest(f"input must hold 1 to {MAX_INPUTS} texts")
    if req.dimensions is not None:
        raise InvalidRequest("dimensions is not supported; the model's own dimension is used")
    job_id = producer.submit_embedding(tenant_id, req.model, texts, input_type=req.input_type)
    try:
        final = producer.wait(job_id, timeout=get_settings().api_wait_seconds, poll=0.02)
    except TimeoutError:
        producer.cancel(job_id)
        raise ApiError(504, f"the embedding job {job_id} did not finish in time; it was cancelled", "timeout") from None
    if final["status"] != "succeeded":
        err = final["errors"][0] if final["errors"] else {"code": "GENERIC", "message": final["status"]}
        raise ApiError(
            ERROR_STATUS.get(err["code"], 502) if err["code"] != "AUTHENTICATION" else 502,
            f"{err['code']}: {err['message']}",
            (err["code"] or "").lower() or None,
        )
    res = producer.results(job_id)
    data = [
        Embedding(
            index=i,
            embedding=base64.b64encode(v.astype("<f4").tobytes()).decode()
            if req.encoding_format == "base64"
            else v.tolist(),
        )
        for i, v in enumerate(res.vectors)
    ]
    tokens = final["total_tokens"]
    return EmbeddingResponse(
        data=data, model=final["model"], usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )
