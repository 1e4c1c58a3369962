"""Amazon Bedrock: our SigV4 against AWS's published test vectors, then exact Converse, ConverseStream,
InvokeModel and STS AssumeRole requests through ``httpx.MockTransport`` with a fixed clock, answers
in the shapes of the Bedrock and STS API references, and AWS error bodies through ``classify()``.

The expected Authorization headers of the Bedrock and STS requests below were computed by botocore
1.43.11's ``SigV4Auth`` (an independent implementation) over the same URL, headers and body bytes at
the same instant; they are pasted here as constants so the test needs no AWS SDK.
"""

from __future__ import annotations

import base64
import json
import struct
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from conf.catalog import load_catalog
from providers.aws_sigv4 import AwsCredentials, canonical_request, sign_v4, signing_key
from providers.base import encode_credentials, estimate_tokens
from providers.bedrock import ROLE_SESSIONS, BedrockChat, BedrockEmbedding, BedrockImage2Text
from providers.errors import ErrorCode, ProviderError, classify
from providers.registry import get_provider_class
from tests.mock_http import Recorder, provider

# ----------------------------------------------------------------- SigV4 against AWS's test suite

# The aws-sig-v4-test-suite's credentials and instant (docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html).
SUITE_CREDENTIALS = AwsCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
SUITE_NOW = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
SUITE_SCOPE = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
SUITE_TOKEN = (
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuw"
    "thAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHN"
    "VXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
)

SUITE_CASES = [
    # (case, method, url, headers, body, session token, SignedHeaders, Signature)
    ("get-vanilla", "GET", "https://example.amazonaws.com/", {}, b"", None, "host;x-amz-date",
     "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("post-vanilla", "POST", "https://example.amazonaws.com/", {}, b"", None, "host;x-amz-date",
     "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ("get-vanilla-query-order-key-case", "GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", {}, b"",
     None, "host;x-amz-date", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("post-x-www-form-urlencoded", "POST", "https://example.amazonaws.com/",
     {"Content-Type": "application/x-www-form-urlencoded"}, b"Param1=value1", None, "content-type;host;x-amz-date",
     "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
    # Headers given before host: the signed list must be sorted; values trimmed, inner spaces folded.
    ("get-header-value-trim", "GET", "https://example.amazonaws.com/", {"My-Header1": " value1", "My-Header2": ' "a   b   c"'},
     b"", None, "host;my-header1;my-header2;x-amz-date", "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    ("post-header-key-sort", "POST", "https://example.amazonaws.com/", {"My-Header1": "value1"}, b"", None,
     "host;my-header1;x-amz-date", "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"),
    ("post-sts-header-before", "POST", "https://example.amazonaws.com/", {}, b"", SUITE_TOKEN,
     "host;x-amz-date;x-amz-security-token", "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "url", "headers", "body", "token", "signed_headers", "signature"),
    [c[1:] for c in SUITE_CASES],
    ids=[c[0] for c in SUITE_CASES],
)
def test_sigv4_matches_the_aws_test_suite(
    method: str, url: str, headers: dict[str, str], body: bytes, token: str | None, signed_headers: str, signature: str
) -> None:
    credentials = AwsCredentials(SUITE_CREDENTIALS.access_key, SUITE_CREDENTIALS.secret_key, token)

    added = sign_v4(method, url, headers, body, credentials, "us-east-1", "service", SUITE_NOW)

    assert added["Authorization"] == f"{SUITE_SCOPE}, SignedHeaders={signed_headers}, Signature={signature}"
    assert added["X-Amz-Date"] == "20150830T123600Z" and added["Host"] == "example.amazonaws.com"
    assert added.get("X-Amz-Security-Token") == token


def test_canonical_request_of_get_vanilla() -> None:
    headers = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    request, signed = canonical_request("GET", "https://example.amazonaws.com/", headers, empty)

    assert request == f"GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n{empty}"
    assert signed == "host;x-amz-date"


def test_signing_key_derivation_matches_the_documented_example() -> None:
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "iam")
    assert key.hex() == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"


def test_the_model_id_path_segment_is_encoded_twice_in_the_canonical_request() -> None:
    url = "https://bedrock-runtime.us-west-2.amazonaws.com/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    request, _ = canonical_request("POST", url, {"Host": "x"}, "h")
    assert request.split("\n")[1] == "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"


# ----------------------------------------------------------------- fixtures

ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
REGION = "us-west-2"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CLAUDE = "anthropic.claude-3-5-sonnet-20240620-v1:0"
RUNTIME = "https://bedrock-runtime.us-west-2.amazonaws.com"
ROLE_ARN = "arn:aws:iam::123456789012:role/bedrock-invoker"
SESSION_ACCESS_KEY = "ASIAIOSFODNN7EXAMPLE"
SESSION_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
SESSION_TOKEN = (
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuw"
)


def key(**fields: str) -> str:
    base = {"auth_mode": "access_key_secret", "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "region": REGION}
    return encode_credentials({**base, **fields})


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def make(model_type: str, recorder: Recorder, model: str = CLAUDE, clock: Clock | None = None, **kwargs: Any) -> Any:
    kwargs.setdefault("api_key", key())
    return provider(model_type, "Bedrock", recorder, model=model, clock=clock or Clock(), **kwargs)


@pytest.fixture(autouse=True)
def _fresh_role_sessions() -> Iterator[None]:
    ROLE_SESSIONS.clear()
    yield
    ROLE_SESSIONS.clear()


def converse_answer(
    content: list[dict[str, Any]], stop: str = "end_turn", usage: dict[str, int] | None = None
) -> httpx.Response:
    body: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "metrics": {"latencyMs": 2237},
    }
    if usage is not None:
        body["usage"] = usage
    return httpx.Response(200, json=body, headers={"x-amzn-RequestId": "e4a5b9e2-8c4f-4f3e-9a47-0c4a1f2b3c4d"})


def test_registered_classes_and_the_catalog_spelling() -> None:
    assert "Bedrock" in {f.name for f in load_catalog()}
    assert get_provider_class("chat", "Bedrock") is BedrockChat
    assert get_provider_class("image2text", "Bedrock") is BedrockImage2Text
    assert get_provider_class("embedding", "Bedrock") is BedrockEmbedding
    names = {f.name for f in BedrockChat.credential_fields}
    assert names == {"auth_mode", "access_key", "secret_key", "region", "role_arn"}
    not_secret = {f.name for f in BedrockChat.credential_fields if not f.secret}
    assert not_secret == {"auth_mode", "region", "role_arn"}
    assert BedrockChat.needs_key


# ----------------------------------------------------------------- Converse

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "top_song",
        "description": "Get the most popular song played on a radio station.",
        "parameters": {
            "type": "object",
            "properties": {"sign": {"type": "string", "description": "The call sign for the radio station."}},
            "required": ["sign"],
        },
    },
}
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
PNG_B64 = base64.b64encode(PNG).decode()
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "Answer briefly."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is the most popular song on WZPZ? And what is in this picture?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        ],
    },
    {
        "role": "assistant",
        "content": "Let me look that up.",
        "tool_calls": [
            {
                "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                "type": "function",
                "function": {"name": "top_song", "arguments": '{"sign": "WZPZ"}'},
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
        "content": '{"song": "Elemental Hotel", "artist": "8 Storey Hike"}',
    },
    {"role": "user", "content": "Thanks. Now the picture?"},
]
GEN_CONF = {"temperature": 0.2, "max_tokens": 512, "stop": "END", "presence_penalty": 0.5, "seed": 7, "top_p": None}
EXPECTED_CONVERSE_BODY = {
    "messages": [
        {
            "role": "user",
            "content": [
                {"text": "What is the most popular song on WZPZ? And what is in this picture?"},
                {"image": {"format": "png", "source": {"bytes": PNG_B64}}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"text": "Let me look that up."},
                {
                    "toolUse": {
                        "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                        "name": "top_song",
                        "input": {"sign": "WZPZ"},
                    }
                },
            ],
        },
        {
            "role": "user",  # the tool result and the next user text share one turn
            "content": [
                {
                    "toolResult": {
                        "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                        "content": [{"text": '{"song": "Elemental Hotel", "artist": "8 Storey Hike"}'}],
                    }
                },
                {"text": "Thanks. Now the picture?"},
            ],
        },
    ],
    "system": [{"text": "You are a radio assistant."}, {"text": "Answer briefly."}],
    "inferenceConfig": {"maxTokens": 512, "temperature": 0.2, "stopSequences": ["END"]},
    "toolConfig": {
        "tools": [
            {
                "toolSpec": {
                    "name": "top_song",
                    "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},
                    "description": "Get the most popular song played on a radio station.",
                }
            }
        ]
    },
}
# botocore 1.43.11 SigV4Auth("bedrock", "us-west-2") over this test's exact request at 2024-05-01T12:00:00Z.
CONVERSE_AUTHORIZATION = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240501/us-west-2/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=1e681ca0dd8899eda74556335fed630fd05e0230c5645a99a2eac4ad637640ad"


def test_converse_request_is_exact_and_signed() -> None:
    recorder = Recorder(
        converse_answer(
            [
                {"text": "The picture shows a PNG header."},
                {
                    "toolUse": {
                        "toolUseId": "tooluse_Wb1nH8Fh6T2iUAj3gWp9Mw",
                        "name": "top_song",
                        "input": {"sign": "WKRP"},
                    }
                },
            ],
            stop="tool_use",
            usage={"inputTokens": 375, "outputTokens": 60, "totalTokens": 435},
        )
    )
    model = make("chat", recorder)

    result = model.chat("You are a radio assistant.", CONVERSATION, GEN_CONF, [WEATHER_TOOL])

    request = recorder.last
    assert request.method == "POST"
    assert str(request.url) == f"{RUNTIME}/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert request.url.raw_path == b"/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert json.loads(request.content) == EXPECTED_CONVERSE_BODY
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["host"] == "bedrock-runtime.us-west-2.amazonaws.com"
    assert request.headers["x-amz-date"] == "20240501T120000Z"
    assert "x-amz-security-token" not in request.headers
    assert request.headers["authorization"] == CONVERSE_AUTHORIZATION
    assert result.text == "The picture shows a PNG header."
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("tooluse_Wb1nH8Fh6T2iUAj3gWp9Mw", "top_song", {"sign": "WKRP"})
    ]
    assert result.finish_reason == "tool_calls"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (375, 60, 435)
    assert not result.usage.estimated


@pytest.mark.parametrize(
    ("stop", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("guardrail_intervened", "content_filter"),
     ("content_filtered", "content_filter"), ("tool_use", "tool_calls"), ("malformed_tool_use", "malformed_tool_use")],
)  # fmt: skip
def test_stop_reasons_become_finish_reasons(stop: str, finish: str) -> None:
    recorder = Recorder(
        converse_answer([{"text": "x"}], stop=stop, usage={"inputTokens": 3, "outputTokens": 1, "totalTokens": 4})
    )
    assert make("chat", recorder).chat(None, [{"role": "user", "content": "hi"}]).finish_reason == finish


def test_anthropic_models_get_temperature_or_top_p_not_both() -> None:
    answer = converse_answer([{"text": "x"}], usage={"inputTokens": 3, "outputTokens": 1, "totalTokens": 4})
    recorder = Recorder(answer, answer)
    conf = {"temperature": 0.3, "top_p": 0.9}

    make("chat", recorder).chat(None, [{"role": "user", "content": "hi"}], conf)
    make("chat", recorder, model="meta.llama3-70b-instruct-v1:0").chat(None, [{"role": "user", "content": "hi"}], conf)

    assert recorder.json(0)["inferenceConfig"] == {"temperature": 0.3}
    assert recorder.json(1)["inferenceConfig"] == {"temperature": 0.3, "topP": 0.9}
    assert "system" not in recorder.json(0) and "toolConfig" not in recorder.json(0)


def test_missing_usage_is_estimated() -> None:
    recorder = Recorder(converse_answer([{"text": "Hello there"}]))
    result = make("chat", recorder).chat("Be kind.", [{"role": "user", "content": "Say hello"}])
    assert result.usage.estimated
    assert result.usage.completion_tokens == estimate_tokens("Hello there")
    assert result.usage.prompt_tokens == estimate_tokens("Be kind.\nSay hello")


def test_a_tool_history_without_tools_declares_the_tools_it_used() -> None:
    recorder = Recorder(
        converse_answer([{"text": "Elemental Hotel."}], usage={"inputTokens": 9, "outputTokens": 3, "totalTokens": 12})
    )
    make("chat", recorder).chat(None, CONVERSATION[1:4])
    assert recorder.json()["toolConfig"] == {
        "tools": [{"toolSpec": {"name": "top_song", "inputSchema": {"json": {"type": "object"}}}}]
    }


def test_an_empty_tool_result_gets_placeholder_text() -> None:
    recorder = Recorder(ok())
    messages = [*CONVERSATION[1:3], {"role": "tool", "tool_call_id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "content": " "}]
    make("chat", recorder).chat(None, messages, None, [WEATHER_TOOL])
    result = recorder.json()["messages"][-1]
    assert result == {
        "role": "user",
        "content": [
            {"toolResult": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "content": [{"text": "(no output)"}]}}
        ],
    }


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA"}}]},
        {"role": "tool", "content": "no id"},
        {"role": "developer", "content": "hi"},
    ],
)
def test_messages_converse_cannot_take_are_invalid_requests_without_a_call(message: dict[str, Any]) -> None:
    recorder = Recorder()
    with pytest.raises(ProviderError) as info:
        make("chat", recorder).chat(None, [message])
    assert classify(info.value) is ErrorCode.INVALID_REQUEST
    assert recorder.requests == []


def test_malformed_answer_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, json={"output": {}}))
    with pytest.raises(ProviderError) as info:
        make("chat", recorder).chat(None, [{"role": "user", "content": "hi"}])
    assert classify(info.value) is ErrorCode.SERVER


def test_image2text_sends_the_image_then_the_prompt() -> None:
    recorder = Recorder(
        converse_answer(
            [{"text": "A cat on a mat."}], usage={"inputTokens": 1580, "outputTokens": 8, "totalTokens": 1588}
        )
    )
    model = make("image2text", recorder)

    result = model.describe_with_prompt(b"\xff\xd8\xff\xe0JFIF", None, "image/jpeg")

    assert str(recorder.last.url).endswith("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse")
    image = base64.b64encode(b"\xff\xd8\xff\xe0JFIF").decode()
    assert recorder.json() == {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"image": {"format": "jpeg", "source": {"bytes": image}}},
                    {"text": "Describe this image in detail."},
                ],
            }
        ]
    }
    assert result.text == "A cat on a mat." and result.usage.total_tokens == 1588


def test_a_base_url_replaces_the_regional_endpoint() -> None:
    recorder = Recorder(converse_answer([{"text": "x"}], usage={"inputTokens": 3, "outputTokens": 1, "totalTokens": 4}))
    vpce = "https://vpce-0abc-1def.bedrock-runtime.us-west-2.vpce.amazonaws.com/"
    make("chat", recorder, base_url=vpce).chat(None, [{"role": "user", "content": "hi"}])
    assert str(recorder.last.url).startswith(
        "https://vpce-0abc-1def.bedrock-runtime.us-west-2.vpce.amazonaws.com/model/"
    )
    assert recorder.last.headers["host"] == "vpce-0abc-1def.bedrock-runtime.us-west-2.vpce.amazonaws.com"
    assert "/us-west-2/bedrock/aws4_request" in recorder.last.headers["authorization"]


# ----------------------------------------------------------------- ConverseStream (event-stream frames)

PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total, headers length, CRC32), string headers, payload, CRC32."""
    raw = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + len(v.encode()).to_bytes(2, "big") + v.encode()
        for k, v in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(raw) + len(payload) + 4, len(raw))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(kind: str, data: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, json.dumps({**data, "p": PAD}).encode())


STREAM = b"".join(
    [
        event("messageStart", {"role": "assistant"}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me "}}),
        event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "check."}}),
        event("contentBlockStop", {"contentBlockIndex": 0}),
        event(
            "contentBlockStart",
            {
                "contentBlockIndex": 1,
                "start": {"toolUse": {"toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song"}},
            },
        ),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"sign": "WZ'}}}),
        event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": 'PZ"}'}}}),
        event("contentBlockStop", {"contentBlockIndex": 1}),
        event("messageStop", {"stopReason": "tool_use"}),
        event(
            "metadata",
            {"usage": {"inputTokens": 420, "outputTokens": 55, "totalTokens": 475}, "metrics": {"latencyMs": 1203}},
        ),
    ]
)


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def streamed(data: bytes, size: int = 7) -> httpx.Response:
    headers = {"content-type": "application/vnd.amazon.eventstream"}
    return httpx.Response(200, headers=headers, content=chunks(data, size))


def test_converse_stream_request_and_deltas_from_frames_cut_anywhere() -> None:
    recorder = Recorder(streamed(STREAM))
    model = make("chat", recorder)

    deltas = list(model.chat_stream(None, [{"role": "user", "content": "Top song on WZPZ?"}], None, [WEATHER_TOOL]))

    request = recorder.last
    assert str(request.url) == f"{RUNTIME}/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
    assert request.headers["accept"] == "application/vnd.amazon.eventstream"
    assert json.loads(request.content)["messages"] == [{"role": "user", "content": [{"text": "Top song on WZPZ?"}]}]
    assert request.headers["authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240501/us-west-2/bedrock/aws4_request, "
    )
    assert [d.text for d in deltas[:-1]] == ["Let me ", "check."]
    last = deltas[-1]
    assert [(c.id, c.name, c.arguments) for c in last.tool_calls] == [
        ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "top_song", {"sign": "WZPZ"})
    ]
    assert last.finish_reason == "tool_calls"
    assert last.usage is not None and (last.usage.prompt_tokens, last.usage.total_tokens) == (420, 475)


def test_an_exception_frame_mid_stream_raises_its_error() -> None:
    exception = frame(
        {":exception-type": "throttlingException", ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": "Too many tokens, please wait before trying again."}).encode(),
    )
    recorder = Recorder(
        streamed(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}) + exception)
    )

    stream = make("chat", recorder).chat_stream(None, [{"role": "user", "content": "hi"}])
    assert next(stream).text == "Hel"
    with pytest.raises(ProviderError) as info:
        next(stream)
    assert info.value.provider_code == "ThrottlingException"
    assert classify(info.value) is ErrorCode.RATE_LIMIT


def test_a_model_stream_error_frame_is_a_retried_server_error() -> None:
    """converse-stream's ``modelStreamErrorException`` ("A streaming error occurred. Retry your
    request.", with the model's original status and message) is SERVER: retried, not GENERIC."""
    exception = frame(
        {
            ":exception-type": "modelStreamErrorException",
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps(
            {
                "message": "A streaming error occurred. Retry your request.",
                "originalStatusCode": 500,
                "originalMessage": "Internal server error",
            }
        ).encode(),
    )
    recorder = Recorder(
        streamed(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}) + exception)
    )
    with pytest.raises(ProviderError) as info:
        list(make("chat", recorder).chat_stream(None, [{"role": "user", "content": "hi"}]))
    assert info.value.provider_code == "ModelStreamErrorException"
    assert classify(info.value) is ErrorCode.SERVER and classify(info.value).retryable


def test_a_daily_token_quota_frame_mid_stream_is_quota() -> None:
    exception = frame(
        {":exception-type": "throttlingException", ":content-type": "application/json", ":message-type": "exception"},
        json.dumps({"message": "Too many tokens per day, please wait before trying again."}).encode(),
    )
    with pytest.raises(ProviderError) as info:
        list(make("chat", Recorder(streamed(exception))).chat_stream(None, [{"role": "user", "content": "hi"}]))
    assert info.value.provider_code == "ThrottlingException" and classify(info.value) is ErrorCode.QUOTA


@pytest.mark.parametrize("damage", ["message-crc", "prelude-crc", "truncated"])
def test_a_damaged_frame_is_a_server_error(damage: str) -> None:
    good = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}})
    if damage == "message-crc":
        bad = good[:-1] + bytes([good[-1] ^ 1])
    elif damage == "prelude-crc":
        bad = good[:11] + bytes([good[11] ^ 1]) + good[12:]
    else:
        bad = good[:-3]
    recorder = Recorder(streamed(bad))
    with pytest.raises(ProviderError) as info:
        list(make("chat", recorder).chat_stream(None, [{"role": "user", "content": "hi"}]))
    assert classify(info.value) is ErrorCode.SERVER
    assert {"message-crc": "checksum", "prelude-crc": "prelude", "truncated": "after the last frame"}[damage] in str(
        info.value
    )


def test_frames_carry_headers_of_every_type_and_error_frames_raise() -> None:
    from providers.aws_eventstream import event_frames
    from providers.bedrock import stream_deltas

    raw = (
        bytes([5]) + b":flag" + b"\x00"  # boolean true: no value bytes
        + bytes([7]) + b":status" + b"\x04" + (429).to_bytes(4, "big")  # int32
        + bytes([11]) + b":error-code" + b"\x07" + (19).to_bytes(2, "big") + b"ThrottlingException"
        + bytes([13]) + b":message-type" + b"\x07" + (5).to_bytes(2, "big") + b"error"
        + bytes([14]) + b":error-message" + b"\x07" + (13).to_bytes(2, "big") + b"Rate exceeded"
    )  # fmt: skip
    prelude = struct.pack(">II", 12 + len(raw) + 4, len(raw))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw
    message += struct.pack(">I", zlib.crc32(message))

    [(headers, payload)] = list(event_frames([message]))

    assert headers == {
        ":flag": "true",
        ":status": "429",
        ":error-code": "ThrottlingException",
        ":message-type": "error",
        ":error-message": "Rate exceeded",
    }
    assert payload == b""
    with pytest.raises(ProviderError) as info:
        list(stream_deltas([(headers, payload)], None, []))
    assert info.value.provider_code == "ThrottlingException" and info.value.message == "Rate exceeded"


def test_concurrent_callers_wait_for_one_assume_role_call() -> None:
    """B looks while A is inside STS (B's first look sees a stale clock, so B must wait for A's
    lock and look again): one STS call for both."""
    from providers.bedrock import RoleSessions, _Session

    sessions = RoleSessions()
    base = AwsCredentials(ACCESS_KEY, SECRET_KEY)
    role_key = RoleSessions.key(ROLE_ARN, base)
    b_looked = threading.Event()
    calls: list[str] = []
    results: dict[str, AwsCredentials] = {}
    b_times = iter([NOW + timedelta(hours=3)])

    def b_clock() -> datetime:
        now = next(b_times, NOW)
        b_looked.set()
        return now

    def run_b() -> None:
        results["b"] = sessions.get(role_key, b_clock, lambda: assume("b"))

    def assume(who: str) -> _Session:
        calls.append(who)
        if who == "a":
            thread_b.start()
            assert b_looked.wait(timeout=10)
        return _Session(AwsCredentials(SESSION_ACCESS_KEY, SESSION_SECRET, SESSION_TOKEN), NOW + timedelta(hours=1))

    thread_b = threading.Thread(target=run_b)
    results["a"] = sessions.get(role_key, Clock(), lambda: assume("a"))
    thread_b.join(timeout=10)

    assert calls == ["a"]
    assert results["a"] == results["b"] and results["b"].session_token == SESSION_TOKEN


def test_a_stream_refused_before_it_starts_is_an_aws_error() -> None:
    recorder = Recorder(
        httpx.Response(
            403,
            json={"message": "You don't have access to the model with the specified model ID."},
            headers={"x-amzn-ErrorType": "AccessDeniedException:http://internal.amazon.com/coral/com.amazon.bedrock/"},
        )
    )
    with pytest.raises(ProviderError) as info:
        list(make("chat", recorder).chat_stream(None, [{"role": "user", "content": "hi"}]))
    assert info.value.provider_code == "AccessDeniedException"
    assert classify(info.value) is ErrorCode.AUTHENTICATION


# ----------------------------------------------------------------- embeddings (InvokeModel)


def titan_answer(vector: list[float], tokens: int) -> httpx.Response:
    return httpx.Response(
        200, json={"embedding": vector, "embeddingsByType": {"float": vector}, "inputTextTokenCount": tokens}
    )


def test_titan_v2_one_text_per_call_with_dimensions_and_reported_tokens() -> None:
    recorder = Recorder(titan_answer([0.1, -0.2, 0.3], 5), titan_answer([0.4, 0.5, -0.6], 2))
    model = make("embedding", recorder, model="amazon.titan-embed-text-v2:0", dimensions=256)

    result = model.encode(["The quick brown fox", "jumps"])

    assert [str(r.url) for r in recorder.requests] == [f"{RUNTIME}/model/amazon.titan-embed-text-v2%3A0/invoke"] * 2
    assert recorder.json(0) == {"inputText": "The quick brown fox", "dimensions": 256, "normalize": True}
    assert recorder.json(1) == {"inputText": "jumps", "dimensions": 256, "normalize": True}
    assert recorder.last.headers["content-type"] == "application/json"
    assert recorder.last.headers["accept"] == "application/json"
    assert result.vectors.dtype == np.float32
    np.testing.assert_allclose(result.vectors, [[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]], rtol=1e-6)
    assert (result.usage.prompt_tokens, result.usage.total_tokens, result.usage.estimated) == (7, 7, False)


def test_titan_v1_sends_only_the_text_and_queries_use_the_same_call() -> None:
    recorder = Recorder(titan_answer([1.0, 0.0], 3))
    model = make("embedding", recorder, model="amazon.titan-embed-text-v1")

    result = model.encode_queries("what is bedrock")

    assert recorder.json() == {"inputText": "what is bedrock"}
    assert result.vectors.shape == (1, 2)


def cohere_answer(vectors: list[list[float]] | dict[str, Any], texts: list[str], tokens: int | None) -> httpx.Response:
    headers = {"X-Amzn-Bedrock-Input-Token-Count": str(tokens)} if tokens is not None else {}
    body = {
        "embeddings": vectors,
        "id": "2d1ba1cd-4f37-4d49-8b47-4d4c1a9f3c5b",
        "response_type": "embeddings_by_type" if isinstance(vectors, dict) else "embeddings_floats",
        "texts": texts,
    }
    return httpx.Response(200, json=body, headers=headers)


def test_cohere_documents_in_batches_of_96_with_the_document_input_type() -> None:
    texts = [f"doc {i}" for i in range(100)]
    recorder = Recorder(
        cohere_answer([[float(i), 1.0] for i in range(96)], texts[:96], 480),
        cohere_answer({"float": [[float(i), 1.0] for i in range(96, 100)]}, texts[96:], 20),
    )
    model = make("embedding", recorder, model="cohere.embed-multilingual-v3")

    result = model.encode(texts)

    assert str(recorder.last.url) == f"{RUNTIME}/model/cohere.embed-multilingual-v3/invoke"
    assert recorder.json(0) == {"texts": texts[:96], "input_type": "search_document"}
    assert recorder.json(1) == {"texts": texts[96:], "input_type": "search_document"}
    assert result.vectors.shape == (100, 2) and result.vectors[99, 0] == 99.0
    assert (result.usage.prompt_tokens, result.usage.estimated) == (500, False)


def test_cohere_queries_use_the_query_input_type_and_estimate_without_a_token_header() -> None:
    recorder = Recorder(cohere_answer([[0.5, 0.5]], ["how do I sign requests"], None))
    model = make("embedding", recorder, model="cohere.embed-english-v3")

    result = model.encode_queries("how do I sign requests")

    assert recorder.json() == {"texts": ["how do I sign requests"], "input_type": "search_query"}
    assert result.usage.estimated and result.usage.prompt_tokens == estimate_tokens("how do I sign requests")


def test_cohere_vector_count_mismatch_is_a_server_error() -> None:
    recorder = Recorder(cohere_answer([[0.5, 0.5]], ["a", "b"], 2))
    with pytest.raises(ProviderError) as info:
        make("embedding", recorder, model="cohere.embed-english-v3").encode(["a", "b"])
    assert classify(info.value) is ErrorCode.SERVER


def test_an_embedding_model_of_another_family_is_refused_without_a_call() -> None:
    recorder = Recorder()
    with pytest.raises(ProviderError) as info:
        make("embedding", recorder, model="amazon.titan-embed-image-v1").encode(["a"])
    assert classify(info.value) is ErrorCode.INVALID_REQUEST and recorder.requests == []


# ----------------------------------------------------------------- credentials and assumed roles

STS_URL = "https://sts.us-west-2.amazonaws.com/"
STS_FORM = (
    "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fbedrock-invoker"
    "&RoleSessionName=modelyard-bedrock"
)
# botocore 1.43.11 SigV4Auth("sts", "us-west-2") over this form at 2024-05-01T12:00:00Z.
STS_AUTHORIZATION = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240501/us-west-2/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=978ab40f69a2be5cfc2a014f9124dac906fb758ae1468b81b96f704dca9f2a18"

# botocore 1.43.11 over the first model call, signed with the assumed (session) credentials.
SESSION_AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=ASIAIOSFODNN7EXAMPLE/20240501/us-west-2/bedrock/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, "
    "Signature=36bb9c60afb49731c30f038bcff60db9f7cbd89477ea2a41d6356d6d79547575"
)


def sts_answer(expiration: datetime, access_key: str = SESSION_ACCESS_KEY) -> httpx.Response:
    xml = f"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/bedrock-invoker/modelyard-bedrock</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:modelyard-bedrock</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>{access_key}</AccessKeyId>
      <SecretAccessKey>{SESSION_SECRET}</SecretAccessKey>
      <SessionToken>{SESSION_TOKEN}</SessionToken>
      <Expiration>{expiration.strftime("%Y-%m-%dT%H:%M:%SZ")}</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>"""
    return httpx.Response(200, text=xml, headers={"content-type": "text/xml"})


def ok() -> httpx.Response:
    return converse_answer([{"text": "ok"}], usage={"inputTokens": 3, "outputTokens": 1, "totalTokens": 4})


ASSUME = {"auth_mode": "assume_role", "role_arn": ROLE_ARN}


def test_assume_role_calls_sts_once_for_two_model_calls() -> None:
    recorder = Recorder(sts_answer(NOW + timedelta(hours=1)), ok(), ok())
    clock = Clock()

    first = make("chat", recorder, clock=clock, api_key=key(**ASSUME))
    first.chat(None, [{"role": "user", "content": "hi"}])
    clock.now = NOW + timedelta(minutes=30)
    make("chat", recorder, clock=clock, api_key=key(**ASSUME)).chat(None, [{"role": "user", "content": "hi"}])

    sts, call1, call2 = recorder.requests
    assert str(sts.url) == STS_URL and sts.method == "POST"
    assert sts.content.decode() == STS_FORM
    assert sts.headers["content-type"] == "application/x-www-form-urlencoded; charset=utf-8"
    assert sts.headers["host"] == "sts.us-west-2.amazonaws.com"
    assert sts.headers["authorization"] == STS_AUTHORIZATION
    assert call1.headers["authorization"] == SESSION_AUTHORIZATION
    for call in (call1, call2):
        assert call.headers["x-amz-security-token"] == SESSION_TOKEN
        assert call.headers["authorization"].startswith(
            f"AWS4-HMAC-SHA256 Credential={SESSION_ACCESS_KEY}/20240501/us-west-2/bedrock/"
        )
    assert SESSION_SECRET in first.secrets and SESSION_TOKEN in first.secrets


def test_assumed_credentials_are_replaced_shortly_before_they_expire() -> None:
    recorder = Recorder(
        sts_answer(NOW + timedelta(hours=1)), ok(), sts_answer(NOW + timedelta(hours=2), "ASIANEWSESSIONEXAMPLE"), ok()
    )
    clock = Clock()
    model = make("chat", recorder, clock=clock, api_key=key(**ASSUME))

    model.chat(None, [{"role": "user", "content": "hi"}])
    clock.now = NOW + timedelta(minutes=56)  # inside the last five minutes
    model.chat(None, [{"role": "user", "content": "hi"}])

    assert [str(r.url) for r in recorder.requests].count(STS_URL) == 2
    assert "Credential=ASIANEWSESSIONEXAMPLE/" in recorder.last.headers["authorization"]


def test_sessions_are_not_shared_between_different_secret_keys() -> None:
    recorder = Recorder(sts_answer(NOW + timedelta(hours=1)), ok(), sts_answer(NOW + timedelta(hours=1)), ok())
    make("chat", recorder, api_key=key(**ASSUME)).chat(None, [{"role": "user", "content": "hi"}])
    other = key(**ASSUME, secret_key="someoneElsesSecretKeyEXAMPLEKEYwJalrXUtn")
    make("chat", recorder, api_key=other).chat(None, [{"role": "user", "content": "hi"}])
    assert [str(r.url) for r in recorder.requests].count(STS_URL) == 2


def test_an_expired_session_token_error_forgets_the_cached_session() -> None:
    expired = httpx.Response(
        403,
        json={"message": "The security token included in the request is expired"},
        headers={
            "x-amzn-ErrorType": "ExpiredTokenException:http://internal.amazon.com/coral/com.amazon.coral.service/"
        },
    )
    recorder = Recorder(sts_answer(NOW + timedelta(hours=1)), expired, sts_answer(NOW + timedelta(hours=1)), ok())
    model = make("chat", recorder, api_key=key(**ASSUME))

    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "user", "content": "hi"}])
    assert classify(info.value) is ErrorCode.AUTHENTICATION
    model.chat(None, [{"role": "user", "content": "hi"}])

    assert [str(r.url) for r in recorder.requests].count(STS_URL) == 2


def test_sts_refusal_is_read_from_its_xml() -> None:
    xml = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code>'
        "<Message>User: arn:aws:iam::123456789012:user/ci is not authorized to perform: sts:AssumeRole on resource: "
        f"{ROLE_ARN}</Message></Error><RequestId>4c3c1b4e-6d1a-4f0b-9d0f-0a9a2b9e0c1d</RequestId></ErrorResponse>"
    )
    recorder = Recorder(httpx.Response(403, text=xml, headers={"content-type": "text/xml"}))
    with pytest.raises(ProviderError) as info:
        make("chat", recorder, api_key=key(**ASSUME)).chat(None, [{"role": "user", "content": "hi"}])
    assert info.value.provider_code == "AccessDenied" and info.value.status == 403
    assert "not authorized to perform: sts:AssumeRole" in info.value.message
    assert classify(info.value) is ErrorCode.AUTHENTICATION
    assert len(recorder.requests) == 1


def test_sts_throttling_is_a_rate_limit() -> None:
    xml = (
        "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
        "<RequestId>1</RequestId></ErrorResponse>"
    )
    recorder = Recorder(httpx.Response(400, text=xml))
    with pytest.raises(ProviderError) as info:
        make("chat", recorder, api_key=key(**ASSUME)).chat(None, [{"role": "user", "content": "hi"}])
    assert classify(info.value) is ErrorCode.RATE_LIMIT


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"auth_mode": "iam_role"}, "iam_role"),
        ({"auth_mode": "assume_role"}, "role_arn"),
        ({"auth_mode": "sso"}, "auth_mode"),
        ({"region": "us-west-2/../x"}, "region"),
        ({"secret_key": ""}, "secret_key"),
    ],
)
def test_unusable_credentials_are_invalid_requests_without_a_call(fields: dict[str, str], words: str) -> None:
    recorder = Recorder()
    with pytest.raises(ProviderError) as info:
        make("chat", recorder, api_key=key(**fields)).chat(None, [{"role": "user", "content": "hi"}])
    assert classify(info.value) is ErrorCode.INVALID_REQUEST
    assert words in info.value.message
    assert recorder.requests == []


def test_auth_mode_defaults_to_the_access_key() -> None:
    recorder = Recorder(ok())
    api_key = encode_credentials({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "region": REGION})
    make("chat", recorder, api_key=api_key).chat(None, [{"role": "user", "content": "hi"}])
    assert f"Credential={ACCESS_KEY}/" in recorder.last.headers["authorization"]


# ----------------------------------------------------------------- AWS errors


def aws_error(status: int, name: str, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    header = {"x-amzn-ErrorType": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    return httpx.Response(status, json={"message": message}, headers={**header, **(headers or {})})


ERROR_CASES = [
    (aws_error(429, "ThrottlingException", "Too many requests, please wait before trying again."), "ThrottlingException", ErrorCode.RATE_LIMIT),
    (aws_error(403, "UnrecognizedClientException", "The security token included in the request is invalid."), "UnrecognizedClientException", ErrorCode.AUTHENTICATION),
    (aws_error(403, "AccessDeniedException", "You don't have access to the model with the specified model ID."), "AccessDeniedException", ErrorCode.AUTHENTICATION),
    (aws_error(400, "ServiceQuotaExceededException", "Your request exceeds the service quota for your account. You can view your quotas at Viewing service quotas. You can resubmit your request later."), "ServiceQuotaExceededException", ErrorCode.QUOTA),
    (aws_error(400, "ValidationException", "The provided model identifier is invalid."), "ValidationException", ErrorCode.INVALID_REQUEST),
    (aws_error(404, "ResourceNotFoundException", "Model not found."), "ResourceNotFoundException", ErrorCode.MODEL),
    (aws_error(503, "ServiceUnavailableException", "Bedrock is unable to process your request."), "ServiceUnavailableException", ErrorCode.SERVER),
    (aws_error(429, "ModelNotReadyException", "Model is not ready for inference. Wait and try your request again."), "ModelNotReadyException", ErrorCode.SERVER),
    (aws_error(408, "ModelTimeoutException", "Model has timed out in processing the request."), "ModelTimeoutException", ErrorCode.TIMEOUT),
    # The daily token quota is a 429 ThrottlingException too; only the next day lifts it.
    (aws_error(429, "ThrottlingException", "Too many tokens per day, please wait before trying again."), "ThrottlingException", ErrorCode.QUOTA),
    # AWS: "The request failed due to an error while processing the model." (HTTP 424)
    (aws_error(424, "ModelErrorException", "The request failed due to an error while processing the model."), "ModelErrorException", ErrorCode.SERVER),
    # No header: the name comes from the body's __type.
    (httpx.Response(400, json={"__type": "com.amazon.coral.validate#ValidationException", "message": "1 validation error detected"}), "ValidationException", ErrorCode.INVALID_REQUEST),
]  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "name", "code"), ERROR_CASES, ids=[c[1] + str(i) for i, c in enumerate(ERROR_CASES)]
)
def test_aws_errors_are_classified_by_their_name(answer: httpx.Response, name: str, code: ErrorCode) -> None:
    recorder = Recorder(answer)
    with pytest.raises(ProviderError) as info:
        make("chat", recorder).chat(None, [{"role": "user", "content": "hi"}])
    assert info.value.provider_code == name
    assert info.value.status == answer.status_code
    assert info.value.message == answer.json()["message"]
    assert classify(info.value) is code


def test_the_error_name_alone_decides_quota_and_authentication() -> None:
    # Whatever the message says: a hard account quota is not retried, an expired token is not a 403 only.
    quota = ProviderError("Limit reached for this model.", status=400, provider_code="ServiceQuotaExceededException")
    expired = ProviderError(
        "The security token included in the request is expired", provider_code="ExpiredTokenException"
    )
    signature = ProviderError(
        "The request signature we calculated does not match", provider_code="InvalidSignatureException"
    )
    assert classify(quota) is ErrorCode.QUOTA
    assert classify(expired) is ErrorCode.AUTHENTICATION
    assert classify(signature) is ErrorCode.AUTHENTICATION


def test_throttling_keeps_retry_after_and_scrubs_the_key() -> None:
    message = (
        "Authorization header requires 'Signature' parameter. "
        f"Authorization=AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20240501/us-west-2/bedrock/aws4_request"
    )
    recorder = Recorder(aws_error(429, "ThrottlingException", message, {"Retry-After": "3"}))
    model = make("embedding", recorder, model="cohere.embed-english-v3")
    with pytest.raises(ProviderError) as info:
        model.encode(["a"])
    assert info.value.retry_after == 3.0 and info.value.rate_limits == {"retry-after": "3"}
    assert model.rate_limits == {"retry-after": "3"}
    assert ACCESS_KEY not in info.value.message and "***" in info.value.message
    assert classify(info.value) is ErrorCode.RATE_LIMIT
