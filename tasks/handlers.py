"""One handler per model type: turn a chunk's items into provider calls and outcomes.

Embedding chunks hold many items (one batched provider call); every other type's chunk
holds exactly one item, so a retry never repeats a call that already succeeded.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from models.bundle import LLMBundle
from models.jobs import ChunkWork, ItemOutcome, WorkItem
from providers.errors import ErrorCode, ProviderError, scrub
from tasks.runner import Handler, HandlerResult


def embedding(bundle: LLMBundle, work: ChunkWork) -> HandlerResult:
    texts = [item.text or "" for item in work.items]
    result = bundle.encode(texts, query=work.options.get("input_type") == "query")  # batched either way
    vectors = np.ascontiguousarray(result.vectors, dtype="<f4")
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise ProviderError(
            f"provider returned {vectors.shape[0]} vectors for {len(texts)} texts", code=ErrorCode.SERVER
        )
    return HandlerResult(
        [ItemOutcome(item.id, vector=vectors[k].tobytes()) for k, item in enumerate(work.items)], result.usage
    )


def _single(work: ChunkWork) -> WorkItem:
    if len(work.items) != 1:
        raise ProviderError(
            f"a {work.model_type} chunk must hold one item, not {len(work.items)}", code=ErrorCode.GENERIC
        )
    return work.items[0]


def chat(bundle: LLMBundle, work: ChunkWork) -> HandlerResult:
    item = _single(work)
    p = item.payload or {}
    r = bundle.chat(p.get("system"), p["messages"], p.get("gen_conf"), p.get("tools"))
    result = {
        "text": r.text,
        "tool_calls": [asdict(tc) for tc in r.tool_calls],
        "finish_reason": r.finish_reason,
        "usage": {
            "prompt_tokens": r.usage.prompt_tokens,
            "completion_tokens": r.usage.completion_tokens,
            "total_tokens": r.usage.total_tokens,
        },
    }  # the one call's usage (an API batch line shows it)
    if r.refusal is not None:  # the call succeeded (its tokens count) but the model refused: not a success
        result["refusal"] = r.refusal
        refused = ItemOutcome(
            item.id,
            result=result,
            error_code=ErrorCode.REFUSAL.value,
            error_message=scrub(r.refusal, *bundle.secrets)[:2000],
        )
        return HandlerResult([refused], r.usage)
    return HandlerResult([ItemOutcome(item.id, result=result)], r.usage)


def rerank(bundle: LLMBundle, work: ChunkWork) -> HandlerResult:
    item = _single(work)
    r = bundle.similarity(item.payload["query"], item.payload["documents"])
    return HandlerResult([ItemOutcome(item.id, result={"scores": [float(s) for s in r.scores]})], r.usage)


def image2text(bundle: LLMBundle, work: ChunkWork) -> HandlerResult:
    item = _single(work)
    p = item.payload or {}
    r = bundle.describe(item.blob or b"", p.get("prompt"), p.get("mime_type", "image/png"))
    return HandlerResult([ItemOutcome(item.id, result={"text": r.text})], r.usage)


def speech2text(bundle: LLMBundle, work: ChunkWork) -> HandlerResult:
    item = _single(work)
    r = bundle.transcription(item.blob or b"", (item.payload or {}).get("filename", "audio.wav"))
    return HandlerResult([ItemOutcome(item.id, result={"text": r.text})], r.usage)


def tts(bundle: LLMBundle, work: ChunkWork) -> HandlerResult:
    item = _single(work)
    p = item.payload or {}
    r = bundle.tts(item.text or "", p.get("voice"), p.get("format", "mp3"))
    return HandlerResult([ItemOutcome(item.id, result={"content_type": r.content_type}, result_blob=r.audio)], r.usage)


HANDLERS: dict[str, Handler] = {
    "embedding": embedding,
    "chat": chat,
    "rerank": rerank,
    "image2text": image2text,
    "speech2text": speech2text,
    "tts": tts,
}
