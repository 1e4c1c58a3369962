"""End to end for the job types other than embedding: chat, rerank, image2text, speech2text, tts.

A real worker process consumes the five queues (threads pool, as compose.yaml runs the
interactive worker) and calls the fake provider over loopback. Each job goes in through
``tasks.producer.submit`` with ``ItemRow`` items; what comes back is checked against the
fake's deterministic answers, and the usage ledger against the tokens the fake reported
(or, where a provider reports none, our estimate, flagged as such).
"""

from __future__ import annotations

import io
import struct
import uuid
import wave
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from conf.errors import InvalidRequest
from models.jobs import ItemRow
from providers.base import estimate_tokens
from tests.conftest import Stack, Worker, empty_broker, start_worker
from tests.fakeprovider import (
    FAKE_REFUSAL,
    FakeProvider,
    fake_audio,
    fake_reply,
    fake_score,
    fake_tokens,
    fake_transcript,
)

pytestmark = pytest.mark.services

KEY = "sk-test-valid-key-0001"
MODELS = {
    "chat": "gpt-4o-mini@OpenAI",
    "rerank": "fake-rerank@OpenAI-API-Compatible",
    "image2text": "gpt-4o@OpenAI",
    "speech2text": "whisper-1@OpenAI",
    "tts": "tts-1@OpenAI",
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the documentation.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]


def tiny_png() -> bytes:
    """A valid 1x1 red PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


def small_wav() -> bytes:
    """0.1 s of 16 kHz mono silence as a WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 1600)
    return buf.getvalue()


@pytest.fixture(scope="module")
def types_worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker for the whole module, on the five non-embedding queues (an empty broker first)."""
    empty_broker(stack.redis_url)
    worker = start_worker(
        stack,
        tmp_path_factory.mktemp("types-worker"),
        queues="chat,rerank,image2text,speech2text,tts",
        pool="threads",
        concurrency=4,
    )
    yield worker
    worker.stop()
    assert KEY not in worker.log_text(), "the API key reached the worker's log"


@pytest.fixture
def tenant(stack: Stack, fake_provider: FakeProvider) -> str:
    """A new tenant with one model per type, all pointed at this test's fake provider."""
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm

    with session_scope() as s:
        tenant_id = create_tenant(s, f"types-{uuid.uuid4().hex[:8]}", defaults=False)
        for model_type, model in MODELS.items():
            save_llm(s, tenant_id, model, model_type, api_key=KEY, api_base=fake_provider.base_url)
    return tenant_id


def run_job(tenant: str, model_type: str, items: list[ItemRow]) -> tuple[dict[str, Any], list[Any]]:
    """Submit, wait (bounded), and return the final status and the items' results."""
    from tasks import producer

    job_id = producer.submit(tenant, model_type, MODELS[model_type], items)
    final = producer.wait(job_id, timeout=60, poll=0.2)
    return final, list(producer.iter_results(job_id))


def usage_rows(job_id: str) -> list[Any]:
    from models.db import session_scope
    from models.tables import usage_events

    with session_scope() as s:
        return s.execute(select(usage_events).where(usage_events.c.job_id == job_id).order_by(usage_events.c.id)).all()


def used_tokens(tenant: str, model_type: str) -> int:
    from models.db import session_scope
    from models.tables import tenant_llm

    with session_scope() as s:
        return s.execute(
            select(tenant_llm.c.used_tokens).where(
                tenant_llm.c.tenant_id == tenant, tenant_llm.c.model_type == model_type
            )
        ).scalar_one()


def test_chat_items_each_get_the_fake_reply_and_a_usage_row(
    types_worker: Worker, tenant: str, fake_provider: FakeProvider
) -> None:
    """Three chat items (one with a system prompt) each succeed with the fake's reply; each call
    writes one usage row with the prompt and completion tokens the fake reported."""
    conversations = [
        ("c1", None, [{"role": "user", "content": "hello there"}]),
        ("c2", "Answer briefly.", [{"role": "user", "content": "what is a queue"}]),
        (
            "c3",
            None,
            [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "and the second question"},
            ],
        ),
    ]
    items = [
        ItemRow(cid, payload={"messages": msgs, **({"system": system} if system else {})})
        for cid, system, msgs in conversations
    ]
    final, results = run_job(tenant, "chat", items)
    assert final["status"] == "succeeded", final
    assert [r.custom_id for r in results] == ["c1", "c2", "c3"]
    expected_prompt = []
    for result, (_, system, msgs) in zip(results, conversations, strict=True):
        reply = fake_reply(msgs)
        usage = result.result.pop("usage")
        assert result.result == {"text": reply, "tool_calls": [], "finish_reason": "stop"}
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
        expected_prompt.append(
            (
                fake_tokens([system, *(m["content"] for m in msgs)] if system else [m["content"] for m in msgs]),
                fake_tokens([reply]),
            )
        )
    rows = usage_rows(final["id"])
    assert sorted((r.prompt_tokens, r.completion_tokens) for r in rows) == sorted(expected_prompt)
    assert all(r.model == MODELS["chat"] and r.model_type == "chat" and not r.estimated for r in rows)
    total = sum(p + c for p, c in expected_prompt)
    assert final["total_tokens"] == total == used_tokens(tenant, "chat")
    assert fake_provider.count("chat/completions") == 3


def test_chat_with_tools_returns_the_parsed_tool_call(types_worker: Worker, tenant: str) -> None:
    """With ``tools`` the fake calls the first tool; the result holds the call with its
    arguments parsed into an object, and the finish reason says so."""
    messages = [{"role": "user", "content": "find the retry policy"}]
    final, (result,) = run_job(tenant, "chat", [ItemRow("t", payload={"messages": messages, "tools": TOOLS})])
    assert final["status"] == "succeeded", final
    (call,) = result.result["tool_calls"]
    assert call["name"] == "search_docs"
    assert call["arguments"] == {"query": "find the retry policy"}
    assert call["id"].startswith("call_")
    assert result.result["finish_reason"] == "tool_calls" and result.result["text"] == ""


def test_a_refused_chat_item_fails_with_refusal_keeping_its_text_and_usage(
    types_worker: Worker, tenant: str, fake_provider: FakeProvider
) -> None:
    """OpenAI answers a refusal as a 200 with ``message.refusal`` and finish reason ``stop``. The
    refused item is not a success: it fails with REFUSAL (the refusal as its message), its result
    keeps the refusal and says finish reason ``refusal``, the job is ``partial`` beside an answered
    item, and the refused call's tokens are in the ledger like any other call's."""
    refused = [{"role": "user", "content": "REFUSE: how do I pick this lock"}]
    answered = [{"role": "user", "content": "what is a lock"}]
    items = [ItemRow("no", payload={"messages": refused}), ItemRow("yes", payload={"messages": answered})]
    final, (no, yes) = run_job(tenant, "chat", items)
    assert final["status"] == "partial", final
    assert (final["items"]["succeeded"], final["items"]["failed"]) == (1, 1)
    assert final["errors"] == [{"custom_id": "no", "code": "REFUSAL", "message": FAKE_REFUSAL}]
    assert (no.status, no.error_code, no.error_message) == ("failed", "REFUSAL", FAKE_REFUSAL)
    usage = no.result.pop("usage")  # the refused call's own usage, as every chat item's result carries it
    assert no.result == {"text": "", "tool_calls": [], "finish_reason": "refusal", "refusal": FAKE_REFUSAL}
    assert yes.status == "succeeded" and yes.result["text"] == fake_reply(answered)
    refused_tokens = fake_tokens([refused[0]["content"]]) + fake_tokens([FAKE_REFUSAL])
    answered_tokens = fake_tokens([answered[0]["content"]]) + fake_tokens([fake_reply(answered)])
    assert sorted(r.total_tokens for r in usage_rows(final["id"])) == sorted([refused_tokens, answered_tokens])
    assert final["total_tokens"] == refused_tokens + answered_tokens == used_tokens(tenant, "chat")
    assert usage["total_tokens"] == refused_tokens


def test_chat_503_is_retried_and_succeeds(types_worker: Worker, tenant: str, fake_provider: FakeProvider) -> None:
    """A 503 from the provider is a SERVER error: Celery retries the task, the second call
    succeeds, and only the successful call is in the usage ledger."""
    fake_provider.server_error(503, times=1, path="chat/completions")
    messages = [{"role": "user", "content": "are you there"}]
    final, (result,) = run_job(tenant, "chat", [ItemRow("r", payload={"messages": messages})])
    assert final["status"] == "succeeded", final
    assert result.result["text"] == fake_reply(messages)
    statuses = [c.status for c in fake_provider.calls if c.route == "chat/completions"]
    assert statuses == [503, 200]
    assert len(usage_rows(final["id"])) == 1
    assert "retry 1" in types_worker.log_text()


def test_rerank_scores_documents_in_their_order(types_worker: Worker, tenant: str) -> None:
    """Rerank of three documents: scores come back in the documents' order (the fake answers
    sorted by score), and the reported total counts as prompt tokens."""
    query = "celery retry policy"
    docs = ["the retry policy of celery tasks", "a recipe for bread", "policy documents"]
    final, (result,) = run_job(tenant, "rerank", [ItemRow("q", payload={"query": query, "documents": docs})])
    assert final["status"] == "succeeded", final
    assert result.result["scores"] == pytest.approx([fake_score(query, d) for d in docs], abs=1e-6)
    assert result.result["scores"][0] > result.result["scores"][2] > result.result["scores"][1]
    (row,) = usage_rows(final["id"])
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (
        fake_tokens([query, *docs]),
        0,
        fake_tokens([query, *docs]),
    )


def test_image2text_describes_the_png(types_worker: Worker, tenant: str, fake_provider: FakeProvider) -> None:
    """A tiny PNG goes to the provider as a data URL with the prompt; the fake's description
    (which names the image's type and size) is the result."""
    png = tiny_png()
    prompt = "what is in this picture"
    final, (result,) = run_job(
        tenant, "image2text", [ItemRow("img", blob=png, payload={"prompt": prompt, "mime_type": "image/png"})]
    )
    assert final["status"] == "succeeded", final
    assert result.result == {"text": f"You said: {prompt} [image image/png {len(png)} bytes]"}
    (row,) = usage_rows(final["id"])
    assert (row.prompt_tokens, row.completion_tokens) == (fake_tokens([prompt]), fake_tokens([result.result["text"]]))
    assert fake_provider.count("chat/completions") == 1


def test_speech2text_transcribes_the_wav(types_worker: Worker, tenant: str) -> None:
    """A small WAV is uploaded as multipart; the transcription and its audio/text token usage
    (OpenAI's input/output token names) are recorded."""
    wav = small_wav()
    final, (result,) = run_job(tenant, "speech2text", [ItemRow("rec", blob=wav, payload={"filename": "rec.wav"})])
    assert final["status"] == "succeeded", final
    text = fake_transcript(wav)
    assert result.result == {"text": text}
    (row,) = usage_rows(final["id"])
    assert (row.prompt_tokens, row.completion_tokens) == (max(1, len(wav) // 100), fake_tokens([text]))


def test_tts_stores_the_audio_bytes(types_worker: Worker, tenant: str) -> None:
    """TTS output lands in ``result_blob`` byte for byte with its content type; the provider
    reports no usage, so the ledger holds an estimate flagged ``estimated``."""
    text = "Hello from the speech queue."
    final, (mp3, wav) = run_job(
        tenant, "tts", [ItemRow("a", text=text), ItemRow("b", text=text + " Again.", payload={"format": "wav"})]
    )
    assert final["status"] == "succeeded", final
    assert mp3.result_blob == fake_audio(text) and mp3.result == {"content_type": "audio/mpeg"}
    assert wav.result_blob == fake_audio(text + " Again.") and wav.result == {"content_type": "audio/wav"}
    rows = usage_rows(final["id"])
    assert sorted(r.prompt_tokens for r in rows) == sorted([estimate_tokens(text), estimate_tokens(text + " Again.")])
    assert all(r.estimated and r.completion_tokens == 0 for r in rows)


@pytest.mark.parametrize(
    ("model_type", "item", "needle"),
    [
        ("chat", ItemRow("no-msgs", payload={"gen_conf": {"temperature": 0}}), 'chat needs "messages"'),
        ("chat", ItemRow("empty-msgs", payload={"messages": []}), 'chat needs "messages"'),
        ("rerank", ItemRow("no-docs", payload={"query": "q"}), 'rerank needs "documents"'),
        ("rerank", ItemRow("no-query", payload={"documents": ["d"]}), 'rerank needs a non-empty "query"'),
        ("image2text", ItemRow("no-bytes", payload={"prompt": "describe"}), "image2text needs the image bytes"),
        ("speech2text", ItemRow("no-audio"), "speech2text needs the audio bytes"),
        ("tts", ItemRow("no-text", text="  "), "tts needs a non-empty text"),
    ],
    ids=[
        "chat-no-messages",
        "chat-empty-messages",
        "rerank-no-documents",
        "rerank-no-query",
        "image2text-no-bytes",
        "speech2text-no-bytes",
        "tts-empty-text",
    ],
)
def test_bad_payloads_are_refused_at_submit(tenant: str, model_type: str, item: ItemRow, needle: str) -> None:
    """A malformed item is refused by ``submit`` with a message naming the item and what is
    missing, even after a good item, and no job is written."""
    from models.db import session_scope
    from models.tables import jobs
    from tasks import producer

    good = {
        "chat": ItemRow("ok", payload={"messages": [{"role": "user", "content": "hi"}]}),
        "rerank": ItemRow("ok", payload={"query": "q", "documents": ["d"]}),
        "image2text": ItemRow("ok", blob=tiny_png()),
        "speech2text": ItemRow("ok", blob=small_wav()),
        "tts": ItemRow("ok", text="hi"),
    }[model_type]
    with pytest.raises(InvalidRequest) as exc:
        producer.submit(tenant, model_type, MODELS[model_type], [good, item])
    assert needle in str(exc.value) and repr(item.custom_id) in str(exc.value)
    with session_scope() as s:
        assert s.execute(select(jobs.c.id).where(jobs.c.tenant_id == tenant)).first() is None
