"""The OpenAI-compatible factory table: every registered (type, factory) against its documented
URL, the generation options each provider and model accept, each error shape the family's
servers send, and the per-factory quirks that are data in the table."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import numpy as np
import pytest

from conf.catalog import load_catalog
from providers.base import CredentialField
from providers.errors import ErrorCode, ProviderError, classify
from providers.openai_compat import PROVIDER_CLASSES, clean_gen_conf, is_openai_reasoning_model
from providers.openai_factories import FACTORIES
from tests.mock_http import Recorder, sse

KEY = "sk-test-0123456789abcdefABCDEF"
FACTORY = {f.name: f for f in FACTORIES}

# Each provider's documented base URL, written out here so that a change to the table shows up.
DOCUMENTED_BASE = {
    "OpenAI": "https://api.openai.com/v1",
    "DeepSeek": "https://api.deepseek.com/v1",
    "Moonshot": "https://api.moonshot.cn/v1",
    "xAI": "https://api.x.ai/v1",
    "Groq": "https://api.groq.com/openai/v1",
    "Mistral": "https://api.mistral.ai/v1",
    "Perplexity": "https://api.perplexity.ai/v1",
    "StepFun": "https://api.stepfun.com/v1",
    "ZHIPU-AI": "https://open.bigmodel.cn/api/paas/v4",
    "Tongyi-Qianwen": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    "BaiChuan": "https://api.baichuan-ai.com/v1",
    "MiniMax": "https://api.minimaxi.com/v1",
    "XunFei Spark": "https://spark-api-open.xf-yun.com/v1",
    "ModelScope": "https://api-inference.modelscope.cn/v1",
    "Tencent TokenHub": "https://tokenhub.tencentmaas.com/v1",
    "OpenRouter": "https://openrouter.ai/api/v1",
    "TogetherAI": "https://api.together.xyz/v1",
    "DeepInfra": "https://api.deepinfra.com/v1/openai",
    "NVIDIA": "https://integrate.api.nvidia.com/v1",
    "SILICONFLOW": "https://api.siliconflow.cn/v1",
    "siliconflow_intl": "https://api.siliconflow.com/v1",
    "GreenPT": "https://api.greenpt.ai/v1",
    "aimlapi.com": "https://api.aimlapi.com/v1",
    "TokenPony": "https://ragflow.vip-api.tokenpony.cn/v1",
    "Upstage": "https://api.upstage.ai/v1/solar",
    "NovitaAI": "https://api.novita.ai/v3/openai",
    "PPIO": "https://api.ppinfra.com/v3/openai",
    "GiteeAI": "https://ai.gitee.com/v1",
    "302.AI": "https://api.302.ai/v1",
    "CometAPI": "https://api.cometapi.com/v1",
    "LongCat": "https://api.longcat.chat/openai/v1",
    "DeerAPI": "https://api.deerapi.com/v1",
    "Jiekou.AI": "https://api.jiekou.ai/openai/v1",
    "n1n": "https://api.n1n.ai/v1",
    "Astraflow": "https://api-us-ca.umodelverse.ai/v1",
    "Astraflow-CN": "https://api.modelverse.cn/v1",
    "FuturMix": "https://futurmix.ai/v1",
    "Avian": "https://api.avian.io/v1",
    "Xiaomi": "https://api.xiaomimimo.com/v1",
}
SELF_HOSTED = {"OpenAI-API-Compatible", "New API", "GPUStack", "VLLM", "LM-Studio", "LocalAI", "Xinference"}
SELF_HOSTED_BASE = "http://10.0.0.7:8000/v1"
PATHS = {
    "chat": "chat/completions",
    "image2text": "chat/completions",
    "embedding": "embeddings",
    "rerank": "rerank",
    "speech2text": "audio/transcriptions",
    "tts": "audio/speech",
}


def chat_answer(content: str = "pong", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9x",
        "object": "chat.completion",
        "created": 1718000000,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
        **extra,
    }


class Server:
    """A MockTransport handler that answers each route the way an OpenAI-compatible server does."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        path = request.url.path
        if path.endswith("/chat/completions"):
            return httpx.Response(200, json=chat_answer())
        if path.endswith("/embeddings"):
            body = json.loads(request.content)
            n = len(body["input"])
            if body["encoding_format"] == "base64_int8":
                raw = [np.array([i % 100, -2, 3], dtype=np.int8).tobytes() for i in range(n)]
                rows = [base64.b64encode(r).decode() for r in raw]
            else:
                rows = [[float(i), 0.5, -1.0] for i in range(n)]
            data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
            usage = {"prompt_tokens": 3 * n, "total_tokens": 3 * n}
            return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"], "usage": usage})
        if path.endswith("/rerank"):
            body = json.loads(request.content)
            results = [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(len(body["documents"]))]
            return httpx.Response(200, json={"id": "r", "results": results[::-1], "usage": {"total_tokens": 9}})
        if path.endswith("/audio/transcriptions"):
            return httpx.Response(200, json={"text": "hello world"})
        if path.endswith("/audio/speech"):
            return httpx.Response(200, headers={"content-type": "audio/mpeg"}, content=b"ID3-audio")
        return httpx.Response(404, json={"error": {"message": f"no route {path}"}})

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def make(model_type: str, factory: str, handler: Any, model: str = "some-model", **kwargs: Any) -> Any:
    cls = PROVIDER_CLASSES[(model_type, factory)]
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return cls(model, client=client, **kwargs)


def call(model_type: str, provider: Any) -> Any:
    if model_type == "chat":
        return provider.chat(None, [{"role": "user", "content": "ping"}])
    if model_type == "image2text":
        return provider.describe(b"\x89PNG-bytes")
    if model_type == "embedding":
        return provider.encode(["a", "b"])
    if model_type == "rerank":
        return provider.similarity("q", ["d0", "d1"])
    if model_type == "speech2text":
        return provider.transcription(b"RIFF-audio", "clip.wav")
    return provider.tts("read this")


# --------------------------------------------------------------------------- the table


def test_table_names_are_catalog_spellings_and_urls_are_the_documented_ones() -> None:
    catalog = {f.name for f in load_catalog()}
    assert {f.name for f in FACTORIES} == DOCUMENTED_BASE.keys() | SELF_HOSTED
    assert {f.name for f in FACTORIES} <= catalog
    for factory in FACTORIES:
        assert factory.default_base_url == DOCUMENTED_BASE.get(factory.name, ""), factory.name
        # Hosted services need a key; of the servers a tenant runs, the gateways do too.
        assert factory.needs_key == (factory.name not in SELF_HOSTED or factory.name in {"New API", "GPUStack"})


REGISTERED = sorted(PROVIDER_CLASSES)


@pytest.mark.parametrize(("model_type", "factory"), REGISTERED, ids=[f"{f}-{t}" for t, f in REGISTERED])
def test_each_registered_class_posts_to_its_url_with_a_bearer_key(model_type: str, factory: str) -> None:
    server = Server()
    base = DOCUMENTED_BASE.get(factory)
    provider = make(model_type, factory, server, api_key=KEY, base_url=None if base else SELF_HOSTED_BASE)

    result = call(model_type, provider)

    assert str(server.last.url) == f"{base or SELF_HOSTED_BASE}/{PATHS[model_type]}"
    assert server.last.method == "POST"
    assert server.last.headers["authorization"] == f"Bearer {KEY}"
    if model_type in ("chat", "image2text"):
        assert result.text == "pong" and result.usage.total_tokens == 13 and not result.usage.estimated
    elif model_type == "embedding":
        assert result.vectors.shape == (2, 3) and result.vectors.dtype == np.float32
        assert result.usage.total_tokens == 6
    elif model_type == "rerank":
        np.testing.assert_allclose(result.scores, [1.0, 0.5])
    elif model_type == "speech2text":
        assert result.text == "hello world"
    else:
        assert result.audio == b"ID3-audio" and result.content_type == "audio/mpeg"
        assert json.loads(server.last.content)["voice"]


# --------------------------------------------------------------------------- generation options

GEN_CONF = {
    "temperature": 0.3,
    "top_p": 0.9,
    "max_tokens": 256,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.2,
    "seed": 7,
    "stop": ["\n\n"],
    "response_format": {"type": "json_object"},
    "top_k": 5,  # not an OpenAI option: never sent
}


def test_tencent_tokenhub_is_openai_compatible_beside_the_native_hunyuan_api() -> None:
    """TokenHub: Bearer key, OpenAI's chat completions, the catalog's Hunyuan model names; the
    "Tencent Hunyuan" row stays the TC3-signed Tencent Cloud API."""
    from providers.registry import get_provider_class
    from providers.tencent import HunyuanChat

    hub = {m.name for f in load_catalog() if f.name == "Tencent TokenHub" for m in f.models}
    hunyuan = {m.name for f in load_catalog() if f.name == "Tencent Hunyuan" for m in f.models}
    assert "hy3" in hub and hub == hunyuan
    assert issubclass(get_provider_class("chat", "Tencent Hunyuan"), HunyuanChat)
    server = Server()
    result = make("chat", "Tencent TokenHub", server, model="hy3", api_key=KEY).chat(
        None, [{"role": "user", "content": "ping"}]
    )
    assert str(server.last.url) == "https://tokenhub.tencentmaas.com/v1/chat/completions"
    assert server.last.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(server.last.content)["model"] == "hy3"
    assert result.text == "pong" and result.usage.total_tokens == 13


@pytest.mark.parametrize("model", ["gpt-5", "gpt-5-mini", "gpt-5.4-nano", "o3", "o3-pro-2025-06-10", "o4-mini", "o1"])
def test_openai_reasoning_models_get_max_completion_tokens_and_no_sampling(model: str) -> None:
    conf = clean_gen_conf(FACTORY["OpenAI"], model, GEN_CONF)

    assert conf == {
        "max_completion_tokens": 256,
        "seed": 7,
        "stop": ["\n\n"],
        "response_format": {"type": "json_object"},
    }


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "omni-moderation-latest", "ollama-o3x"])
def test_other_openai_models_keep_max_tokens_and_sampling(model: str) -> None:
    conf = clean_gen_conf(FACTORY["OpenAI"], model, GEN_CONF)

    assert conf == {k: v for k, v in GEN_CONF.items() if k != "top_k"}
    assert not is_openai_reasoning_model(model)


def test_aggregators_passing_openai_reasoning_models_through_get_the_same_treatment() -> None:
    conf = clean_gen_conf(FACTORY["OpenRouter"], "openai/o3", {"max_tokens": 10, "temperature": 0.1})
    assert conf == {"max_completion_tokens": 10}


def test_per_factory_options() -> None:
    assert clean_gen_conf(FACTORY["Mistral"], "mistral-large-latest", {"seed": 7, "top_p": 0.5}) == {
        "random_seed": 7,
        "top_p": 0.5,
    }
    zhipu = clean_gen_conf(FACTORY["ZHIPU-AI"], "glm-4.5", GEN_CONF)
    assert zhipu.keys() == {"temperature", "top_p", "max_tokens", "stop", "response_format"}
    baichuan = clean_gen_conf(FACTORY["BaiChuan"], "Baichuan4", GEN_CONF)
    assert baichuan == {"temperature": 0.3, "top_p": 0.9, "max_tokens": 256}
    assert clean_gen_conf(FACTORY["XunFei Spark"], "Spark-Max", GEN_CONF) == {"temperature": 0.3, "max_tokens": 256}
    assert clean_gen_conf(FACTORY["Xiaomi"], "mimo-v2-flash", {"max_tokens": 9}) == {"max_completion_tokens": 9}
    assert clean_gen_conf(FACTORY["DeepSeek"], "deepseek-chat", {"temperature": None, "seed": 1}) == {"seed": 1}


def test_qwen3_on_dashscope_turns_thinking_off_only_when_not_streaming() -> None:
    tongyi = FACTORY["Tongyi-Qianwen"]
    assert clean_gen_conf(tongyi, "qwen3-32b", {"temperature": 0.7}) == {"temperature": 0.7, "enable_thinking": False}
    assert clean_gen_conf(tongyi, "qwen3-32b", {"temperature": 0.7}, stream=True) == {"temperature": 0.7}
    assert clean_gen_conf(tongyi, "qwen-plus", {}) == {}
    assert clean_gen_conf(FACTORY["SILICONFLOW"], "Qwen/Qwen3-32B", {}) == {}  # DashScope's rule only


def test_reasoning_options_reach_the_wire() -> None:
    recorder = Recorder(httpx.Response(200, json=chat_answer()), httpx.Response(200, json=chat_answer()))
    gpt5 = make("chat", "OpenAI", recorder, model="gpt-5", api_key=KEY)
    gpt4o = make("chat", "OpenAI", recorder, model="gpt-4o", api_key=KEY)

    gpt5.chat("sys", [{"role": "user", "content": "hi"}], {"max_tokens": 100, "temperature": 0.2})
    gpt4o.chat("sys", [{"role": "user", "content": "hi"}], {"max_tokens": 100, "temperature": 0.2})

    assert recorder.json(0) == {
        "model": "gpt-5",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        "max_completion_tokens": 100,
    }
    assert recorder.json(1)["max_tokens"] == 100 and recorder.json(1)["temperature"] == 0.2


def test_mistral_stream_sends_random_seed_and_no_stream_options() -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "mistral-small-latest"}
    stream = sse(
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Bon"}, "finish_reason": None}]},
        {
            **chunk,
            "choices": [{"index": 0, "delta": {"content": "jour"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
        },
        "[DONE]",
    )
    recorder = Recorder(httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream))
    model = make("chat", "Mistral", recorder, model="mistral-small-latest", api_key=KEY)

    deltas = list(model.chat_stream(None, [{"role": "user", "content": "Salut"}], {"seed": 3, "max_tokens": 5}))

    body = recorder.json()
    assert body["stream"] is True and "stream_options" not in body
    assert body["random_seed"] == 3 and "seed" not in body and body["max_tokens"] == 5
    assert "".join(d.text for d in deltas) == "Bonjour" and deltas[-1].usage.total_tokens == 6


def test_dashscope_non_streaming_qwen3_request() -> None:
    recorder = Recorder(httpx.Response(200, json=chat_answer()))
    model = make("chat", "Tongyi-Qianwen", recorder, model="qwen3-235b-a22b", api_key=KEY)

    model.chat(None, [{"role": "user", "content": "hi"}], {"presence_penalty": 0.5})

    assert str(recorder.last.url) == "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions"
    assert recorder.json()["enable_thinking"] is False and recorder.json()["presence_penalty"] == 0.5


# --------------------------------------------------------------------------- per-factory quirks


def test_spark_sends_the_api_model_version_and_reads_its_success_code() -> None:
    answer = chat_answer("你好", code=0, message="Success", sid="cha000b0003@dx1905cd86d6bb86d552")
    recorder = Recorder(httpx.Response(200, json=answer))
    password = "aBcDeFgHiJkLmNoPqRsT:uvwxyz0123456789"  # the console's APIPassword
    model = make("chat", "XunFei Spark", recorder, model="Spark-Max", api_key=password)

    result = model.chat(None, [{"role": "user", "content": "来一个笑话"}], {"temperature": 0.5, "seed": 1})

    assert str(recorder.last.url) == "https://spark-api-open.xf-yun.com/v1/chat/completions"
    assert recorder.last.headers["authorization"] == f"Bearer {password}"
    assert recorder.json() == {
        "model": "generalv3.5",
        "messages": [{"role": "user", "content": "来一个笑话"}],
        "temperature": 0.5,
    }
    assert result.text == "你好" and result.usage.total_tokens == 13


def test_nvidia_embeds_documents_as_passages_and_queries_as_queries() -> None:
    server = Server()
    model = make("embedding", "NVIDIA", server, model="nvidia/nv-embed-v1", api_key=KEY)

    model.encode(["doc one"])
    model.encode_queries("question?")

    documents, queries = (json.loads(r.content) for r in server.requests)
    assert documents["input_type"] == "passage" and queries["input_type"] == "query"
    assert documents["truncate"] == queries["truncate"] == "END"
    assert documents["model"] == queries["model"] == "nvidia/nv-embed-v1"


def test_upstage_queries_use_the_query_twin_of_the_model() -> None:
    server = Server()
    model = make("embedding", "Upstage", server, model="solar-embedding-1-large-passage", api_key=KEY)
    query_model = make("embedding", "Upstage", server, model="solar-embedding-1-large-query", api_key=KEY)

    model.encode(["passage text"])
    model.encode_queries("query text")
    query_model.encode(["passage text"])

    sent = [json.loads(r.content)["model"] for r in server.requests]
    passage, query = "solar-embedding-1-large-passage", "solar-embedding-1-large-query"
    assert sent == [passage, query, passage]
    assert str(server.requests[0].url) == "https://api.upstage.ai/v1/solar/embeddings"


def test_perplexity_embeddings_decode_base64_int8() -> None:
    vector = np.array([-128, -1, 0, 5, 127], dtype=np.int8)
    row = {"object": "embedding", "index": 0, "embedding": base64.b64encode(vector.tobytes()).decode()}
    usage = {"prompt_tokens": 3, "total_tokens": 3}
    answer = {"object": "list", "data": [row], "model": "pplx-embed-v1-0.6b", "usage": usage}
    recorder = Recorder(httpx.Response(200, json=answer))
    model = make("embedding", "Perplexity", recorder, model="pplx-embed-v1-0.6b", api_key=KEY)

    result = model.encode(["hello"])

    assert str(recorder.last.url) == "https://api.perplexity.ai/v1/embeddings"
    assert recorder.json() == {"model": "pplx-embed-v1-0.6b", "input": ["hello"], "encoding_format": "base64_int8"}
    np.testing.assert_array_equal(result.vectors, [[-128.0, -1.0, 0.0, 5.0, 127.0]])
    assert result.vectors.dtype == np.float32 and result.usage.total_tokens == 3


@pytest.mark.parametrize(
    ("factory", "batch"),
    [("Tongyi-Qianwen", 10), ("Mistral", 16), ("ZHIPU-AI", 16), ("OpenAI", 64), ("Perplexity", 512)],
)
def test_embedding_batch_sizes(factory: str, batch: int) -> None:
    server = Server()
    model = make("embedding", factory, server, api_key=KEY)

    result = model.encode([f"t{i}" for i in range(batch + 1)])

    assert [len(json.loads(r.content)["input"]) for r in server.requests] == [batch, 1]
    assert result.vectors.shape[0] == batch + 1


@pytest.mark.parametrize(
    ("factory", "model", "voice"),
    [
        ("SILICONFLOW", "FunAudioLLM/CosyVoice2-0.5B", "FunAudioLLM/CosyVoice2-0.5B:alex"),
        ("StepFun", "step-tts-mini", "cixingnansheng"),
        ("OpenAI", "gpt-4o-mini-tts", "alloy"),
    ],
)
def test_default_tts_voice_per_factory(factory: str, model: str, voice: str) -> None:
    server = Server()
    make("tts", factory, server, model=model, api_key=KEY).tts("你好")
    assert json.loads(server.last.content)["voice"] == voice


# --------------------------------------------------------------------------- errors, one per shape


def failing(model_type: str, factory: str, response: httpx.Response, **kwargs: Any) -> ProviderError:
    model = make(model_type, factory, Recorder(response), api_key=KEY, **kwargs)
    with pytest.raises(ProviderError) as info:
        call(model_type, model)
    return info.value


def test_deepseek_insufficient_balance_is_quota() -> None:
    detail = {"message": "Insufficient Balance", "type": "unknown_error", "code": "invalid_request_error"}
    body = {"error": detail}
    error = failing("chat", "DeepSeek", httpx.Response(402, json=body))
    assert error.status == 402 and classify(error) is ErrorCode.QUOTA and not classify(error).retryable


def test_groq_rate_limit_keeps_retry_after_and_rate_limit_headers() -> None:
    body = {
        "error": {
            "message": "Rate limit reached for model `llama-3.3-70b-versatile` on tokens per minute (TPM): "
            "Limit 6000, Used 5870, Requested 400. Please try again in 2.7s.",
            "type": "tokens",
            "code": "rate_limit_exceeded",
        }
    }
    headers = {"retry-after": "3", "x-ratelimit-limit-tokens": "6000", "x-ratelimit-remaining-tokens": "130"}
    model = make("chat", "Groq", Recorder(httpx.Response(429, headers=headers, json=body)), api_key=KEY)

    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "user", "content": "hi"}])

    assert classify(info.value) is ErrorCode.RATE_LIMIT and info.value.retry_after == 3.0
    assert info.value.rate_limits == {
        "retry-after": "3",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "130",
    }
    assert model.rate_limits == info.value.rate_limits


def test_rate_limit_headers_of_a_success_are_kept() -> None:
    headers = {
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-tokens": "6ms",
        "x-request-id": "req_1",
    }
    answer = {"data": [{"index": 0, "embedding": [1.0]}], "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    model = make("embedding", "OpenAI", Recorder(httpx.Response(200, headers=headers, json=answer)), api_key=KEY)

    model.encode(["a"])

    assert model.rate_limits == {
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-tokens": "6ms",
    }


def test_mistral_validation_and_auth_errors() -> None:
    extra = {
        "object": "error",
        "message": {
            "detail": [
                {
                    "type": "extra_forbidden",
                    "loc": ["body", "stream_options", "include_usage"],
                    "msg": "Extra inputs are not permitted",
                    "input": True,
                }
            ]
        },
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    invalid = failing("chat", "Mistral", httpx.Response(422, json=extra))
    denied = {"message": "Unauthorized", "request_id": "a580d263fb1521778782b22104efb415"}
    unauthorized = failing("embedding", "Mistral", httpx.Response(401, json=denied))

    assert classify(invalid) is ErrorCode.INVALID_REQUEST and "Extra inputs are not permitted" in invalid.message
    assert classify(unauthorized) is ErrorCode.AUTHENTICATION


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (429, "1113", "Your account is in arrears, please recharge and try again", ErrorCode.QUOTA),
        (429, "1302", "High concurrency usage of this API, please reduce concurrency", ErrorCode.RATE_LIMIT),
        (400, "1301", "System detected potentially unsafe or sensitive content.", ErrorCode.CONTENT_FILTER),
        (401, "1002", "Invalid Authentication Token", ErrorCode.AUTHENTICATION),
        (400, "1211", "Model does not exist, please check the model code", ErrorCode.MODEL),
    ],
)
def test_zhipu_numeric_error_codes(status: int, code: str, message: str, expected: ErrorCode) -> None:
    error = failing("chat", "ZHIPU-AI", httpx.Response(status, json={"error": {"code": code, "message": message}}))
    assert error.provider_code == code and classify(error) is expected


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (400, "Arrearage", "Access denied, please make sure your account is in good standing.", ErrorCode.QUOTA),
        (429, "limit_requests", "You exceeded your current requests list.", ErrorCode.RATE_LIMIT),
        (400, "data_inspection_failed", "Input data may contain inappropriate content.", ErrorCode.CONTENT_FILTER),
        (401, "invalid_api_key", "Incorrect API key provided.", ErrorCode.AUTHENTICATION),
    ],
)
def test_dashscope_compatible_mode_errors(status: int, code: str, message: str, expected: ErrorCode) -> None:
    body = {"error": {"message": message, "type": code, "param": None, "code": code}, "request_id": "e2f1c0de"}
    error = failing("chat", "Tongyi-Qianwen", httpx.Response(status, json=body))
    assert classify(error) is expected


@pytest.mark.parametrize(
    ("code", "expected"), [(1008, ErrorCode.QUOTA), (1002, ErrorCode.RATE_LIMIT), (1004, ErrorCode.AUTHENTICATION)]
)
def test_minimax_errors_inside_a_200(code: int, expected: ErrorCode) -> None:
    body = {"id": "", "choices": None, "base_resp": {"status_code": code, "status_msg": f"failed {code} for {KEY}"}}
    error = failing("chat", "MiniMax", httpx.Response(200, json=body))
    assert error.provider_code == str(code) and classify(error) is expected
    assert KEY not in error.message


def test_minimax_success_with_a_zero_status() -> None:
    answer = chat_answer(base_resp={"status_code": 0, "status_msg": ""}, input_sensitive=False)
    model = make("chat", "MiniMax", Recorder(httpx.Response(200, json=answer)), model="MiniMax-M2.7", api_key=KEY)
    assert model.chat(None, [{"role": "user", "content": "hi"}]).text == "pong"


def test_minimax_error_status_outside_a_200() -> None:
    body = {"base_resp": {"status_code": 1004, "status_msg": "login fail: Please carry the API secret key"}}
    error = failing("chat", "MiniMax", httpx.Response(401, json=body))
    assert error.message == "login fail: Please carry the API secret key"
    assert error.provider_code == "1004" and classify(error) is ErrorCode.AUTHENTICATION


def test_spark_errors_in_the_body_and_in_the_stream() -> None:
    limited = {"code": 11202, "message": "licc failed: QPS limit exceeded", "sid": "cha000b@dx1"}
    error = failing("chat", "XunFei Spark", httpx.Response(200, json=limited))
    assert classify(error) is ErrorCode.RATE_LIMIT

    head = {"code": 0, "message": "Success", "sid": "s", "choices": [{"delta": {"content": "好"}, "index": 0}]}
    audit = {"code": 10013, "message": "input content audit failed", "sid": "s"}
    recorder = Recorder(httpx.Response(200, content=sse(head, audit)))
    model = make("chat", "XunFei Spark", recorder, model="Spark-Lite", api_key=KEY)
    with pytest.raises(ProviderError) as info:
        list(model.chat_stream(None, [{"role": "user", "content": "hi"}]))
    assert classify(info.value) is ErrorCode.CONTENT_FILTER
    assert recorder.json()["model"] == "lite" and "stream_options" not in recorder.json()

    invalid_user = {"error": {"message": "invalid user", "type": "api_error", "param": None, "code": None}}
    assert classify(failing("chat", "XunFei Spark", httpx.Response(401, json=invalid_user))) is ErrorCode.AUTHENTICATION


@pytest.mark.parametrize("factory", ["NovitaAI", "Jiekou.AI", "PPIO"])
def test_novita_style_reason_names(factory: str) -> None:
    body = {"code": 403, "reason": "NOT_ENOUGH_BALANCE", "message": "Insufficient balance", "metadata": {}}
    error = failing("chat", factory, httpx.Response(403, json=body))
    assert error.provider_code == "NOT_ENOUGH_BALANCE" and classify(error) is ErrorCode.QUOTA

    body = {"code": 429, "reason": "TOKEN_LIMIT_EXCEEDED", "message": "Token limit exceeded. Please try again later."}
    headers = {"retry-after": "2", "x-ratelimit-remaining-tokens": "0"}
    limited = failing("chat", factory, httpx.Response(429, headers=headers, json=body))
    assert classify(limited) is ErrorCode.RATE_LIMIT and limited.retry_after == 2.0
    assert limited.rate_limits == {"retry-after": "2", "x-ratelimit-remaining-tokens": "0"}


def test_new_api_out_of_quota() -> None:
    detail = {"message": "用户额度不足, 剩余额度: $0.0000", "type": "new_api_error", "code": "insufficient_user_quota"}
    body = {"error": detail}
    error = failing("chat", "New API", httpx.Response(403, json=body), base_url=SELF_HOSTED_BASE)
    assert classify(error) is ErrorCode.QUOTA and not classify(error).retryable


def test_openrouter_errors_before_and_inside_the_stream() -> None:
    credits = {"error": {"code": 402, "message": "Insufficient credits. Add more using https://openrouter.ai/credits"}}
    assert classify(failing("chat", "OpenRouter", httpx.Response(402, json=credits))) is ErrorCode.QUOTA

    chunk = {"id": "gen-1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    broken = {"id": "gen-1", "object": "chat.completion.chunk", "error": {"code": 502, "message": "Provider error"}}
    model = make("chat", "OpenRouter", Recorder(httpx.Response(200, content=sse(chunk, broken))), api_key=KEY)
    with pytest.raises(ProviderError) as info:
        list(model.chat_stream(None, [{"role": "user", "content": "hi"}]))
    assert info.value.status == 502 and classify(info.value) is ErrorCode.SERVER


class TwoSecretChat(PROVIDER_CLASSES[("chat", "OpenAI-API-Compatible")]):  # type: ignore[misc, valid-type]
    """A compatible server behind a gateway that wants two secrets: both must be scrubbed."""

    credential_fields = (CredentialField("api_key"), CredentialField("gateway_secret"))


def test_stream_error_scrubs_every_secret() -> None:
    credentials = json.dumps({"api_key": "plainkeyvalue123", "gateway_secret": "gatewaypass987"})
    echo = {"error": {"message": "denied plainkeyvalue123 via gatewaypass987", "type": "invalid_request_error"}}
    recorder = Recorder(httpx.Response(200, content=sse(echo)))
    model = TwoSecretChat("m", api_key=credentials, base_url=SELF_HOSTED_BASE, client=recorder.client)

    with pytest.raises(ProviderError) as info:
        list(model.chat_stream(None, [{"role": "user", "content": "hi"}]))

    assert "plainkeyvalue123" not in info.value.message and "gatewaypass987" not in info.value.message
    assert info.value.message == "denied *** via ***"
