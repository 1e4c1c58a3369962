"""The OpenAI-compatible factories: one :class:`Factory` row each, with its base URL, the model
types it serves through the OpenAI wire format, and what it does differently from OpenAI.
:mod:`providers.openai_compat` declares and registers a class per (row, type)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.errors import ErrorCode

# The generation parameters that OpenAI's chat endpoint accepts; anything else is dropped.
GEN_CONF_KEYS = frozenset(
    {"temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "stop", "seed", "response_format"}
)
DEFAULT_VOICE = "alloy"


# --------------------------------------------------------------------------- the factory rows


@dataclass(frozen=True)
class BodyStatus:
    """Where a server that reports errors inside a 2xx body keeps its status: the path to a
    code that is 0 on success (MiniMax ``base_resp.status_code``, XunFei Spark ``code``) and
    the path to the message."""

    code: tuple[str, ...]
    message: tuple[str, ...]

    def read(self, body: Any) -> tuple[str | None, str]:
        """``(code, message)``; code None when the body says success (0) or says nothing."""
        code, message = _dig(body, self.code), _dig(body, self.message)
        if code is None or code == 0 or str(code) in ("", "0"):
            return None, ""
        return str(code), str(message or "")


def _dig(body: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


@dataclass(frozen=True)
class Factory:
    """One OpenAI-compatible factory and what it does differently from OpenAI.

    ``default_base_url`` ("" = the tenant must give one, as for local servers), the model
    types it serves through this wire format, whether it needs a key, and its quirks:

    - ``gen_conf_keys``: the generation options it accepts (the rest are dropped);
      ``gen_conf_rename``: options it calls otherwise (Mistral's ``random_seed``);
      ``non_stream_extra``: ``(model-name fragment, fields)`` added to non-streaming chat
      bodies of matching models (DashScope's ``enable_thinking`` for Qwen3);
      ``stream_usage_option``: whether it accepts ``stream_options.include_usage``.
    - ``model_aliases``: catalog model name -> the name its API wants (XunFei Spark).
    - ``embedding_batch_size``; ``embedding_format`` ("float", or Perplexity's
      "base64_int8"); ``embed_document_extra`` / ``embed_query_extra``: fields sent with
      documents / queries (NVIDIA's ``input_type``); ``query_model``: ``(document part,
      query part)`` of model names whose query twin is another model (Upstage's
      ``-passage`` / ``-query``).
    - ``default_voice`` for TTS (may contain ``{model}``).
    - ``error_codes``: its own error codes -> ErrorCode (numeric codes mean different things
      at different providers, so they live here, not in the shared table);
      ``body_status``: where it reports errors inside a 2xx body.
    """

    name: str
    default_base_url: str
    model_types: tuple[str, ...]
    needs_key: bool = False
    gen_conf_keys: frozenset[str] = GEN_CONF_KEYS
    gen_conf_rename: Mapping[str, str] = field(default_factory=dict)
    non_stream_extra: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    stream_usage_option: bool = True
    model_aliases: Mapping[str, str] = field(default_factory=dict)
    embedding_batch_size: int = 64
    embedding_format: str = "float"
    embed_document_extra: Mapping[str, Any] = field(default_factory=dict)
    embed_query_extra: Mapping[str, Any] = field(default_factory=dict)
    query_model: tuple[str, str] | None = None
    default_voice: str = DEFAULT_VOICE
    error_codes: Mapping[str, ErrorCode] = field(default_factory=dict)
    body_status: BodyStatus | None = None


# A generic OpenAI-compatible server: the implementations' own row.
GENERIC = Factory("", "", ())


CHAT = ("chat",)
CHAT_VISION = ("chat", "image2text")
ALL_TYPES = ("chat", "embedding", "rerank", "image2text", "speech2text", "tts")
OPENAI_TYPES = ("chat", "embedding", "image2text", "speech2text", "tts")  # all but rerank

# Zhipu BigModel's numeric codes in ``{"error": {"code": "1113", "message"}}`` (docs.z.ai API codes).
ZHIPU_ERRORS: dict[str, ErrorCode] = {
    **dict.fromkeys(("1000", "1001", "1002", "1003", "1004"), ErrorCode.AUTHENTICATION),
    **dict.fromkeys(("1110", "1111", "1112", "1121", "1220"), ErrorCode.AUTHENTICATION),
    "1113": ErrorCode.QUOTA,  # account in arrears
    **dict.fromkeys(("1210", "1213", "1214", "1215", "1261"), ErrorCode.INVALID_REQUEST),
    **dict.fromkeys(("1211", "1221", "1222"), ErrorCode.MODEL),
    **dict.fromkeys(("1230", "1234", "500"), ErrorCode.SERVER),
    "1301": ErrorCode.CONTENT_FILTER,  # unsafe or sensitive content
    **dict.fromkeys(("1302", "1303", "1305"), ErrorCode.RATE_LIMIT),  # concurrency, frequency, too many requests
    "1304": ErrorCode.QUOTA,  # daily call limit reached
}

# MiniMax's ``base_resp.status_code`` (platform.minimax.io error codes).
MINIMAX_ERRORS: dict[str, ErrorCode] = {
    "1000": ErrorCode.SERVER,  # unknown error, retry later
    "1001": ErrorCode.TIMEOUT,
    "1002": ErrorCode.RATE_LIMIT,
    "1004": ErrorCode.AUTHENTICATION,
    "1008": ErrorCode.QUOTA,  # insufficient balance
    "1024": ErrorCode.SERVER,
    "1026": ErrorCode.CONTENT_FILTER,  # input flagged
    "1027": ErrorCode.CONTENT_FILTER,  # output flagged
    "1039": ErrorCode.RATE_LIMIT,  # tokens-per-minute limit
    "2013": ErrorCode.INVALID_REQUEST,
}

# XunFei Spark's ``code`` (the Spark API error table).
SPARK_ERRORS: dict[str, ErrorCode] = {
    **dict.fromkeys(("10013", "10014", "10019"), ErrorCode.CONTENT_FILTER),
    "10907": ErrorCode.INVALID_REQUEST,  # too many tokens
    "11200": ErrorCode.AUTHENTICATION,  # app not licensed for this, or its volume exceeded
    "11201": ErrorCode.QUOTA,  # daily limit
    **dict.fromkeys(("11202", "11203"), ErrorCode.RATE_LIMIT),  # per-second / concurrency limits
}

# DashScope compatible-mode's lower-case codes. Its 429 "You exceeded your current requests list."
# reads like a quota message but is the requests-per-minute limit.
DASHSCOPE_COMPATIBLE_ERRORS: dict[str, ErrorCode] = {
    "limit_requests": ErrorCode.RATE_LIMIT,
    "data_inspection_failed": ErrorCode.CONTENT_FILTER,
}

# Spark's HTTP API names its models by version, the catalog by product.
SPARK_MODELS = {
    "Spark-Max": "generalv3.5",
    "Spark-Max-32K": "max-32k",
    "Spark-Lite": "lite",
    "Spark-Pro": "generalv3",
    "Spark-Pro-128K": "pro-128k",
    "Spark-4.0-Ultra": "4.0Ultra",
}

SILICONFLOW_VOICE = "{model}:alex"  # SiliconFlow's system voices are "<model>:<voice>"

FACTORIES: tuple[Factory, ...] = (
    # ---- first-party APIs
    Factory("OpenAI", "https://api.openai.com/v1", OPENAI_TYPES, needs_key=True),
    Factory("DeepSeek", "https://api.deepseek.com/v1", CHAT, needs_key=True),
    Factory("Moonshot", "https://api.moonshot.cn/v1", CHAT_VISION, needs_key=True),
    Factory("xAI", "https://api.x.ai/v1", CHAT_VISION, needs_key=True),
    Factory("Groq", "https://api.groq.com/openai/v1", ("chat", "image2text", "speech2text"), needs_key=True),
    Factory(
        "Mistral",
        "https://api.mistral.ai/v1",
        ("chat", "embedding", "image2text"),
        needs_key=True,
        gen_conf_rename={"seed": "random_seed"},  # extra fields are a 422 there
        stream_usage_option=False,  # a 422 too; Mistral sends usage in the last chunk anyway
        embedding_batch_size=16,
    ),  # at most 16384 tokens per embeddings request
    Factory(
        "Perplexity",
        "https://api.perplexity.ai/v1",
        ("embedding",),
        needs_key=True,
        embedding_format="base64_int8",
        embedding_batch_size=512,
    ),
    Factory(
        "StepFun",
        "https://api.stepfun.com/v1",
        ("chat", "image2text", "speech2text", "tts"),
        needs_key=True,
        default_voice="cixingnansheng",
    ),
    Factory(
        "ZHIPU-AI",
        "https://open.bigmodel.cn/api/paas/v4",
        ("chat", "embedding", "image2text", "speech2text"),
        needs_key=True,
        gen_conf_keys=GEN_CONF_KEYS - {"presence_penalty", "frequency_penalty", "seed"},
        embedding_batch_size=16,
        error_codes=ZHIPU_ERRORS,
    ),
    # DashScope "compatible-mode"; its native rerank is another family's.
    Factory(
        "Tongyi-Qianwen",
        "https://dashscope.aliyuncs.com/compatible-mode/v1",
        ("chat", "embedding", "image2text"),
        needs_key=True,
        embedding_batch_size=10,  # text-embedding-v3/v4: at most 10 rows
        non_stream_extra=(("qwen3", {"enable_thinking": False}),),  # thinking is stream-only there
        error_codes=DASHSCOPE_COMPATIBLE_ERRORS,
    ),
    Factory(
        "BaiChuan",
        "https://api.baichuan-ai.com/v1",
        ("chat", "embedding"),
        needs_key=True,
        gen_conf_keys=frozenset({"temperature", "top_p", "max_tokens"}),
        embedding_batch_size=16,
    ),
    Factory(
        "MiniMax",
        "https://api.minimaxi.com/v1",
        CHAT,
        needs_key=True,
        error_codes=MINIMAX_ERRORS,
        body_status=BodyStatus(("base_resp", "status_code"), ("base_resp", "status_msg")),
    ),
    Factory(
        "XunFei Spark",
        "https://spark-api-open.xf-yun.com/v1",
        CHAT,
        needs_key=True,  # key: the APIPassword
        gen_conf_keys=frozenset({"temperature", "max_tokens"}),
        stream_usage_option=False,
        model_aliases=SPARK_MODELS,
        error_codes=SPARK_ERRORS,
        body_status=BodyStatus(("code",), ("message",)),
    ),
    # Tencent's TokenHub: OpenAI's wire format with a Bearer key, the catalog's Hunyuan model names;
    # beside it, "Tencent Hunyuan" is the native TC3-signed Tencent Cloud API (providers.tencent).
    Factory("Tencent TokenHub", "https://tokenhub.tencentmaas.com/v1", CHAT, needs_key=True),
    Factory("ModelScope", "https://api-inference.modelscope.cn/v1", CHAT_VISION, needs_key=True),
    # ---- inference clouds and aggregators
    Factory("OpenRouter", "https://openrouter.ai/api/v1", CHAT_VISION, needs_key=True),
    Factory("TogetherAI", "https://api.together.xyz/v1", ("chat", "embedding", "rerank", "image2text"), needs_key=True),
    Factory("DeepInfra", "https://api.deepinfra.com/v1/openai", OPENAI_TYPES, needs_key=True, default_voice="af_bella"),
    Factory(
        "NVIDIA",
        "https://integrate.api.nvidia.com/v1",
        ("chat", "embedding", "image2text"),
        needs_key=True,
        embed_document_extra={"input_type": "passage", "truncate": "END"},
        embed_query_extra={"input_type": "query", "truncate": "END"},
    ),
    Factory("SILICONFLOW", "https://api.siliconflow.cn/v1", ALL_TYPES, needs_key=True, default_voice=SILICONFLOW_VOICE),
    Factory(
        "siliconflow_intl", "https://api.siliconflow.com/v1", ALL_TYPES, needs_key=True, default_voice=SILICONFLOW_VOICE
    ),
    Factory("GreenPT", "https://api.greenpt.ai/v1", ("chat", "embedding", "rerank"), needs_key=True),
    Factory("aimlapi.com", "https://api.aimlapi.com/v1", ("chat", "embedding", "image2text"), needs_key=True),
    Factory("TokenPony", "https://ragflow.vip-api.tokenpony.cn/v1", CHAT, needs_key=True),
    Factory(
        "Upstage",
        "https://api.upstage.ai/v1/solar",
        ("chat", "embedding"),
        needs_key=True,
        query_model=("-passage", "-query"),
    ),
    Factory("NovitaAI", "https://api.novita.ai/v3/openai", ("chat", "embedding", "rerank"), needs_key=True),
    Factory("PPIO", "https://api.ppinfra.com/v3/openai", CHAT, needs_key=True),
    Factory(
        "GiteeAI",
        "https://ai.gitee.com/v1",
        ("chat", "embedding", "rerank", "image2text", "speech2text"),
        needs_key=True,
    ),
    Factory("302.AI", "https://api.302.ai/v1", ("chat", "embedding", "rerank", "image2text"), needs_key=True),
    Factory("CometAPI", "https://api.cometapi.com/v1", OPENAI_TYPES, needs_key=True),
    Factory("LongCat", "https://api.longcat.chat/openai/v1", CHAT, needs_key=True),
    Factory("DeerAPI", "https://api.deerapi.com/v1", OPENAI_TYPES, needs_key=True),
    Factory(
        "Jiekou.AI", "https://api.jiekou.ai/openai/v1", ("chat", "embedding", "rerank", "image2text"), needs_key=True
    ),
    Factory("n1n", "https://api.n1n.ai/v1", CHAT_VISION, needs_key=True),
    Factory("Astraflow", "https://api-us-ca.umodelverse.ai/v1", ("chat", "embedding"), needs_key=True),
    Factory("Astraflow-CN", "https://api.modelverse.cn/v1", ("chat", "embedding"), needs_key=True),
    Factory("FuturMix", "https://futurmix.ai/v1", ("chat", "embedding", "image2text"), needs_key=True),
    Factory("Avian", "https://api.avian.io/v1", CHAT, needs_key=True),
    Factory(
        "Xiaomi",
        "https://api.xiaomimimo.com/v1",
        CHAT_VISION,
        needs_key=True,
        gen_conf_rename={"max_tokens": "max_completion_tokens"},
    ),
    # ---- servers the tenant runs (or points at): no default URL
    Factory("OpenAI-API-Compatible", "", ALL_TYPES),
    Factory("New API", "", ALL_TYPES, needs_key=True),
    Factory("GPUStack", "", ALL_TYPES, needs_key=True),
    Factory("VLLM", "", ("chat", "embedding", "rerank", "image2text")),
    Factory("LM-Studio", "", ("chat", "embedding", "image2text")),
    Factory("LocalAI", "", ALL_TYPES),
    Factory("Xinference", "", ALL_TYPES),
)
