"""Tencent Hunyuan over the Tencent Cloud API 3.0: the TC3-HMAC-SHA256 signature (Tencent's
worked example and a fixed clock), the request and answer shapes, errors inside an HTTP 200,
and the stream, through ``httpx.MockTransport``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from providers.base import encode_credentials
from providers.errors import ErrorCode, ProviderError, classify
from providers.registry import get_provider_class
from providers.tencent import tc3_authorization
from tests.mock_http import Recorder, provider, sse

SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
NOW = 1700000000  # 2023-11-14 22:13:20 UTC
URL = "https://hunyuan.tencentcloudapi.com/"


def hunyuan(recorder: Recorder, region: str | None = None, **kwargs: Any) -> Any:
    fields = {"secret_id": SECRET_ID, "secret_key": SECRET_KEY} | ({"region": region} if region else {})
    kwargs.setdefault("api_key", encode_credentials(fields))
    kwargs.setdefault("clock", lambda: NOW + 0.9)
    return provider("chat", "Tencent Hunyuan", recorder, model=kwargs.pop("model", "hunyuan-turbos-latest"), **kwargs)


def answer(message: dict[str, Any], finish: str = "stop", usage: dict[str, int] | None = None) -> httpx.Response:
    """A ChatCompletions answer as the API reference shows it."""
    return httpx.Response(
        200,
        json={
            "Response": {
                "Created": 1700000001,
                "Id": "ab8b8a4d5b0f8a5d4e8b6bc1c9a7f2e1",
                "Note": "以上内容为AI生成，不代表开发者立场，请勿删除或修改本标记",
                "Choices": [{"FinishReason": finish, "Message": {"Role": "assistant", **message}}],
                "Usage": usage if usage is not None else {"PromptTokens": 3, "CompletionTokens": 14, "TotalTokens": 17},
                "RequestId": "ab8b8a4d-5b0f-8a5d-4e8b-6bc1c9a7f2e1",
            }
        },
    )


def error(code: str, message: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "Response": {
                "Error": {"Code": code, "Message": message},
                "RequestId": "f3b8a0e1-0c9e-4b0e-9b8f-5a1c2e3d4f50",
            }
        },
    )


# --------------------------------------------------------------------------- the signature


def test_signature_reproduces_tencents_worked_example() -> None:
    """Tencent Cloud "Signature v3": DescribeInstances on cvm at 1551113065 (UTC date 2019-02-25,
    already 02-26 in UTC+8), content type ``application/json; charset=utf-8``."""
    payload = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'

    authorization = tc3_authorization(
        SECRET_ID,
        SECRET_KEY,
        service="cvm",
        host="cvm.tencentcloudapi.com",
        payload=payload,
        timestamp=1551113065,
        content_type="application/json; charset=utf-8",
    )

    assert authorization == (
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, "
        "SignedHeaders=content-type;host, Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )


def test_chat_request_is_signed_for_the_fixed_clock() -> None:
    recorder = Recorder(answer({"Content": "你好！"}))

    hunyuan(recorder).chat(None, [{"role": "user", "content": "你好"}])

    request = recorder.last
    assert request.method == "POST" and str(request.url) == URL
    assert request.content == (
        '{"Model":"hunyuan-turbos-latest","Messages":[{"Role":"user","Content":"你好"}],"Stream":false}'.encode()
    )
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == "hunyuan.tencentcloudapi.com"
    assert request.headers["x-tc-action"] == "ChatCompletions"
    assert request.headers["x-tc-version"] == "2023-09-01"
    assert request.headers["x-tc-timestamp"] == str(NOW)
    assert "x-tc-region" not in request.headers
    assert request.headers["authorization"] == (
        "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2023-11-14/hunyuan/tc3_request, "
        "SignedHeaders=content-type;host, Signature=e999eeed46dd965e759755898f26b3a7717c4ecd175e530156941d5efc9bbb59"
    )


def test_signature_covers_the_bytes_sent_and_the_region_header() -> None:
    recorder = Recorder(answer({"Content": "ok"}))
    model = hunyuan(recorder, region="ap-guangzhou", base_url="https://hunyuan.ap-guangzhou.tencentcloudapi.com")

    model.chat("Be brief.", [{"role": "user", "content": "Hi"}], {"temperature": 0.5, "top_p": 0.8})

    request = recorder.last
    assert str(request.url) == "https://hunyuan.ap-guangzhou.tencentcloudapi.com/"
    assert request.headers["x-tc-region"] == "ap-guangzhou"
    assert request.headers["authorization"] == tc3_authorization(
        SECRET_ID,
        SECRET_KEY,
        service="hunyuan",
        host="hunyuan.ap-guangzhou.tencentcloudapi.com",
        payload=request.content,
        timestamp=NOW,
    )


# --------------------------------------------------------------------------- the request and the answer


def test_request_body_renames_and_drops_gen_conf() -> None:
    recorder = Recorder(answer({"Content": "Paris."}))

    result = hunyuan(recorder).chat(
        "You answer geography questions.",
        [{"role": "user", "content": "Capital of France?"}],
        {"temperature": 0.3, "top_p": 0.9, "max_tokens": 100, "presence_penalty": 0.5, "stop": ["\n"], "seed": 1},
    )

    assert json.loads(recorder.last.content) == {
        "Model": "hunyuan-turbos-latest",
        "Messages": [
            {"Role": "system", "Content": "You answer geography questions."},
            {"Role": "user", "Content": "Capital of France?"},
        ],
        "Temperature": 0.3,
        "TopP": 0.9,
        "Stream": False,
    }
    assert result.text == "Paris." and result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens, result.usage.total_tokens) == (3, 14, 17)
    assert not result.usage.estimated


def test_tools_and_tool_turns_in_hunyuans_shape() -> None:
    call = {"Id": "call_cs8p", "Type": "function", "Function": {"Name": "get_weather", "Arguments": '{"city":"深圳"}'}}
    recorder = Recorder(answer({"Content": "", "ToolCalls": [call]}, finish="tool_calls"))
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}}
    tool = {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather of a city", "parameters": parameters},
    }
    history = [
        {"role": "user", "content": "深圳天气？"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"北京"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "晴"},
        {"role": "user", "content": "那深圳呢？"},
    ]

    result = hunyuan(recorder, model="hunyuan-functioncall").chat(None, history, tools=[tool])

    sent = json.loads(recorder.last.content)
    assert sent["Tools"] == [
        {
            "Type": "function",
            "Function": {
                "Name": "get_weather",
                "Description": "Weather of a city",
                "Parameters": '{"type": "object", "properties": {"city": {"type": "string"}}}',
            },
        }
    ]
    assert sent["Messages"][1] == {
        "Role": "assistant",
        "ToolCalls": [
            {"Id": "call_1", "Type": "function", "Function": {"Name": "get_weather", "Arguments": '{"city":"北京"}'}}
        ],
    }
    assert sent["Messages"][2] == {"Role": "tool", "Content": "晴", "ToolCallId": "call_1"}
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [("call_cs8p", "get_weather", {"city": "深圳"})]
    assert result.finish_reason == "tool_calls"


def test_image_parts_become_contents() -> None:
    recorder = Recorder(answer({"Content": "一只猫"}))
    image = "data:image/png;base64,AA=="
    content = [{"type": "text", "text": "这是什么"}, {"type": "image_url", "image_url": {"url": image}}]

    hunyuan(recorder, model="hunyuan-vision").chat(None, [{"role": "user", "content": content}])

    assert json.loads(recorder.last.content)["Messages"] == [
        {
            "Role": "user",
            "Contents": [{"Type": "text", "Text": "这是什么"}, {"Type": "image_url", "ImageUrl": {"Url": image}}],
        }
    ]


def test_missing_usage_is_estimated() -> None:
    recorder = Recorder(answer({"Content": "four words are here"}, usage={}))
    result = hunyuan(recorder).chat(None, [{"role": "user", "content": "say four words"}])
    assert result.usage.estimated and result.usage.completion_tokens > 0 and result.usage.prompt_tokens > 0


def test_an_answer_without_response_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, json={"Choices": []}))
    with pytest.raises(ProviderError) as info:
        hunyuan(recorder).chat(None, [{"role": "user", "content": "hi"}])
    assert classify(info.value) is ErrorCode.SERVER


def test_missing_credential_fields_are_an_authentication_error_without_a_call() -> None:
    recorder = Recorder()
    with pytest.raises(ProviderError) as info:
        hunyuan(recorder, api_key=encode_credentials({"secret_id": SECRET_ID})).chat(
            None, [{"role": "user", "content": "hi"}]
        )
    assert classify(info.value) is ErrorCode.AUTHENTICATION and recorder.requests == []


# --------------------------------------------------------------------------- errors inside a 200


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (
            "AuthFailure.SignatureFailure",
            ("The provided credentials could not be validated. Please check your signature is correct."),
            ErrorCode.AUTHENTICATION,
        ),
        (
            "AuthFailure.SecretIdNotFound",
            "The SecretId is not found, please ensure that your SecretId is correct.",
            ErrorCode.AUTHENTICATION,
        ),
        (
            "AuthFailure.SignatureExpire",
            "Signature expired. Timestamp age should be within 300 seconds.",
            ErrorCode.AUTHENTICATION,
        ),
        ("LimitExceeded", "请求并发超过限制", ErrorCode.RATE_LIMIT),
        (
            "RequestLimitExceeded",
            (
                "Your current request times equals to `21` in a second, which exceeds the "
                "frequency limit `20` for a second. Please reduce the frequency of calls."
            ),
            ErrorCode.RATE_LIMIT,
        ),
        ("ResourceInsufficient.ChargeResourceExhaust", "计费资源已耗尽", ErrorCode.QUOTA),
        ("FailedOperation.ServiceStopArrears", "欠费停服", ErrorCode.QUOTA),
        ("FailedOperation.ServiceNotActivated", "服务未开通，请前往控制台申请试用", ErrorCode.AUTHENTICATION),
        ("InternalError", "内部错误", ErrorCode.SERVER),
        ("FailedOperation.EngineServerError", "引擎层内部错误；请稍后重试。", ErrorCode.SERVER),
        ("InvalidParameterValue.Model", "模型不存在", ErrorCode.MODEL),
        ("OperationDenied.TextIllegalDetected", "文本包含违法违规信息，审核不通过。", ErrorCode.CONTENT_FILTER),
    ],
)
def test_errors_inside_a_200_are_classified(code: str, message: str, expected: ErrorCode) -> None:
    recorder = Recorder(error(code, message))

    with pytest.raises(ProviderError) as info:
        hunyuan(recorder).chat(None, [{"role": "user", "content": "hi"}])

    assert info.value.provider_code == code and info.value.status == 200
    assert info.value.message == f"{message} (RequestId f3b8a0e1-0c9e-4b0e-9b8f-5a1c2e3d4f50)"
    assert classify(info.value) is expected


def test_secrets_echoed_in_an_error_are_scrubbed() -> None:
    recorder = Recorder(error("AuthFailure.SignatureFailure", f"bad signature for {SECRET_ID} with key {SECRET_KEY}"))

    with pytest.raises(ProviderError) as info:
        hunyuan(recorder).chat(None, [{"role": "user", "content": "hi"}])

    assert SECRET_ID not in str(info.value) and SECRET_KEY not in str(info.value)
    model = hunyuan(Recorder(), region="ap-beijing")
    assert set(model.secrets) >= {SECRET_ID, SECRET_KEY} and "ap-beijing" not in model.secrets


def test_an_http_error_keeps_retry_after() -> None:
    recorder = Recorder(httpx.Response(503, text="Service Unavailable", headers={"retry-after": "3"}))
    with pytest.raises(ProviderError) as info:
        hunyuan(recorder).chat(None, [{"role": "user", "content": "hi"}])
    assert classify(info.value) is ErrorCode.SERVER and info.value.retry_after == 3.0


# --------------------------------------------------------------------------- the stream


def stream_chunk(content: str, finish: str = "", usage: dict[str, int] | None = None, **delta: Any) -> dict[str, Any]:
    return {
        "Note": "以上内容为AI生成，不代表开发者立场，请勿删除或修改本标记",
        "Choices": [{"Delta": {"Role": "assistant", "Content": content, **delta}, "FinishReason": finish}],
        "Created": 1700000001,
        "Id": "e1c1b7e0-1c4d-4f4a-9f4b-0a6f5e2d3c1b",
        "Usage": usage or {"PromptTokens": 4, "CompletionTokens": 1, "TotalTokens": 5},
    }


def test_chat_stream() -> None:
    body = sse(
        stream_chunk("你"),
        stream_chunk("好"),
        stream_chunk("", "stop", {"PromptTokens": 4, "CompletionTokens": 3, "TotalTokens": 7}),
    )
    recorder = Recorder(httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))

    deltas = list(hunyuan(recorder).chat_stream(None, [{"role": "user", "content": "hi"}], {"temperature": 1}))

    sent = json.loads(recorder.last.content)
    assert sent["Stream"] is True and sent["Temperature"] == 1
    assert recorder.last.headers["authorization"] == tc3_authorization(
        SECRET_ID,
        SECRET_KEY,
        service="hunyuan",
        host="hunyuan.tencentcloudapi.com",
        payload=recorder.last.content,
        timestamp=NOW,
    )
    assert [d.text for d in deltas[:-1]] == ["你", "好"]
    last = deltas[-1]
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (4, 3, 7)
    assert last.finish_reason == "stop" and not last.usage.estimated


def test_chat_stream_merges_tool_call_pieces_by_id() -> None:
    first = {"Id": "call_1", "Type": "function", "Function": {"Name": "get_weather", "Arguments": '{"city":'}}
    second = {"Id": "call_1", "Type": "function", "Function": {"Name": "", "Arguments": '"深圳"}'}}
    body = sse(stream_chunk("", ToolCalls=[first]), stream_chunk("", "tool_calls", ToolCalls=[second]))
    recorder = Recorder(httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))

    deltas = list(hunyuan(recorder).chat_stream(None, [{"role": "user", "content": "深圳天气"}]))

    assert [(c.id, c.name, c.arguments) for c in deltas[-1].tool_calls] == [("call_1", "get_weather", {"city": "深圳"})]
    assert deltas[-1].finish_reason == "tool_calls"


def test_chat_stream_refused_with_json_is_the_error() -> None:
    recorder = Recorder(error("LimitExceeded", "请求并发超过限制"))  # application/json, not a stream

    with pytest.raises(ProviderError) as info:
        list(hunyuan(recorder).chat_stream(None, [{"role": "user", "content": "hi"}]))

    assert info.value.provider_code == "LimitExceeded" and classify(info.value) is ErrorCode.RATE_LIMIT


def test_an_error_inside_the_stream() -> None:
    body = sse(stream_chunk("半"), {"ErrorMsg": {"Code": 4001, "Msg": f"请求模型超时 {SECRET_KEY}"}})
    recorder = Recorder(httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))

    stream = hunyuan(recorder).chat_stream(None, [{"role": "user", "content": "hi"}])
    assert next(stream).text == "半"
    with pytest.raises(ProviderError) as info:
        next(stream)

    assert info.value.provider_code == "4001" and classify(info.value) is ErrorCode.SERVER
    assert SECRET_KEY not in str(info.value)


def test_declares_the_credential_fields() -> None:
    cls = get_provider_class("chat", "Tencent Hunyuan")
    fields = {f.name: f for f in cls.credential_fields}
    assert [n for n, f in fields.items() if f.secret] == ["secret_id", "secret_key"]
    assert fields["secret_id"].required and fields["secret_key"].required and not fields["region"].required
    assert cls.default_base_url == "https://hunyuan.tencentcloudapi.com"
