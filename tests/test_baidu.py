"""Baidu ERNIE (wenxinworkshop v1): the access token (fetched, cached, refreshed on 110/111,
thread-safe), the chat request per endpoint, errors inside an HTTP 200, and the secret key that
rides in a query string kept out of every error, through ``httpx.MockTransport``."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from providers.baidu import endpoint_for
from providers.base import encode_credentials
from providers.errors import ErrorCode, ProviderError, classify
from providers.registry import get_provider_class
from tests.mock_http import Recorder, provider, sse

AK = "Kq3mWv8RZk2p5YbT1nHcJd6x"
SK = "u7Fz0LrQe4Gs9NtVa2XoBw5Mc8PiKy1D"
TOKEN = "24.6c5e1ff107f0e8bcef8c46d3424a0e78.2592000.1700000000.282335-45123456"
TOKEN_2 = "24.0d8f7a6b5c4e3d2c1b0a9f8e7d6c5b4a.2592000.1700086400.282335-45123456"
TOKEN_URL = f"https://aip.baidubce.com/oauth/2.0/token?grant_type=client_credentials&client_id={AK}&client_secret={SK}"
CHAT = "https://aip.baidubce.com/rpc/2.0/ai_custom/v1/wenxinworkshop/chat"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token(value: str = TOKEN, expires_in: int = 2592000) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "refresh_token": "25.b55fe1d287227ca97aab219bb249b8ab.315360000.1798284651.282335-8574074",
            "expires_in": expires_in,
            "session_key": "9mzdWT7kYdEH7bOu2qFnPpmw",
            "access_token": value,
            "scope": "public brain_all_scope wenxinworkshop_mgr ai_custom_yiyan_com",
            "session_secret": "2ca66d464545c77a4767f709873be4a3",
        },
    )


def result(text: str, **extra: Any) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "as-bcmt5ct4iy",
            "object": "chat.completion",
            "created": 1680167072,
            "result": text,
            "is_truncated": False,
            "need_clear_history": False,
            "finish_reason": "normal",
            "usage": {"prompt_tokens": 5, "completion_tokens": 11, "total_tokens": 16},
            **extra,
        },
    )


def baidu_error(code: int, message: str) -> httpx.Response:
    return httpx.Response(200, json={"error_code": code, "error_msg": message})


def ernie(recorder: Any, model: str = "ERNIE-4.0-8K", **kwargs: Any) -> Any:
    kwargs.setdefault("api_key", encode_credentials({"ak": AK, "sk": SK}))
    if isinstance(recorder, Recorder):
        return provider("chat", "BaiduYiyan", recorder, model=model, **kwargs)
    cls = get_provider_class("chat", "BaiduYiyan")
    return cls(model, client=httpx.Client(transport=httpx.MockTransport(recorder)), **kwargs)


USER = [{"role": "user", "content": "你好"}]


def test_token_then_chat_on_the_models_endpoint() -> None:
    recorder = Recorder(token(), result("您好，有什么可以帮您？"))

    answer = ernie(recorder).chat(
        "你是百度的助手。",
        USER,
        {
            "temperature": 0.7,
            "top_p": 0.8,
            "presence_penalty": 0.4,
            "frequency_penalty": 0.2,
            "max_tokens": 512,
            "stop": "\n\n",
            "seed": 42,
            "response_format": {"type": "json_object"},
        },
    )

    token_request, chat_request = recorder.requests
    assert token_request.method == "POST" and str(token_request.url) == TOKEN_URL
    assert chat_request.method == "POST"
    assert str(chat_request.url) == f"{CHAT}/completions_pro?access_token={TOKEN}"
    assert recorder.json(1) == {
        "messages": [{"role": "user", "content": "你好"}],
        "system": "你是百度的助手。",
        "temperature": 0.7,
        "top_p": 0.8,
        "penalty_score": pytest.approx(1.3),
        "max_output_tokens": 512,
        "stop": ["\n\n"],
        "stream": False,
    }
    assert answer.text == "您好，有什么可以帮您？" and answer.finish_reason == "normal"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (5, 11, 16)
    assert not answer.usage.estimated and answer.tool_calls == []


def test_gen_conf_is_kept_in_ernies_ranges() -> None:
    recorder = Recorder(token(), result("ok"))

    ernie(recorder).chat(
        None,
        USER,
        {"temperature": 0, "top_p": 1.5, "max_tokens": 8192, "presence_penalty": 2, "stop": ["a", "b", "c", "d", "e"]},
    )

    sent = recorder.json(1)
    assert sent["temperature"] == 0.01 and sent["top_p"] == 1.0
    assert sent["max_output_tokens"] == 2048 and sent["penalty_score"] == 2.0
    assert sent["stop"] == ["a", "b", "c", "d"] and "system" not in sent


def test_system_turns_move_to_the_system_field() -> None:
    recorder = Recorder(token(), result("ok"))
    history = [
        {"role": "system", "content": "规则一"},
        {"role": "user", "content": [{"type": "text", "text": "问"}]},
        {"role": "assistant", "content": "答"},
        {"role": "user", "content": "再问"},
    ]

    ernie(recorder).chat("总则", history)

    sent = recorder.json(1)
    assert sent["system"] == "总则\n规则一"
    assert sent["messages"] == [
        {"role": "user", "content": "问"},
        {"role": "assistant", "content": "答"},
        {"role": "user", "content": "再问"},
    ]


@pytest.mark.parametrize(
    ("model", "endpoint"),
    [
        ("ERNIE-4.0-8K", "completions_pro"),
        ("ERNIE-3.5-8K", "completions"),
        ("ernie-3.5-8k", "completions"),
        ("ERNIE-Bot-turbo", "eb-instant"),
        ("ERNIE-Speed-8K", "ernie_speed"),
        ("ERNIE-Speed-128K", "ernie-speed-128k"),
        ("ERNIE-4.0-Turbo-8K", "ernie-4.0-turbo-8k"),
        ("ERNIE-Lite-8K", "ernie-lite-8k"),
        ("my-custom-endpoint", "my-custom-endpoint"),
    ],
)
def test_endpoints(model: str, endpoint: str) -> None:
    assert endpoint_for(model) == endpoint


def test_the_token_is_cached_until_it_expires() -> None:
    clock = Clock()
    recorder = Recorder(token(expires_in=3600), result("1"), result("2"), token(TOKEN_2), result("3"))
    model = ernie(recorder, clock=clock)

    model.chat(None, USER)
    clock.now += 3000
    model.chat(None, USER)
    clock.now += 600  # past expiry (less the refresh margin)
    model.chat(None, USER)

    urls = [str(r.url) for r in recorder.requests]
    assert urls[0] == urls[3] == TOKEN_URL
    assert urls[1] == urls[2] == f"{CHAT}/completions_pro?access_token={TOKEN}"
    assert urls[4] == f"{CHAT}/completions_pro?access_token={TOKEN_2}"


@pytest.mark.parametrize("code", [110, 111])
def test_a_refused_token_is_replaced_once(code: int) -> None:
    recorder = Recorder(
        token(), baidu_error(code, "Access token invalid or no longer valid"), token(TOKEN_2), result("好的")
    )

    answer = ernie(recorder).chat(None, USER)

    assert answer.text == "好的"
    assert [str(r.url) for r in recorder.requests] == [
        TOKEN_URL,
        f"{CHAT}/completions_pro?access_token={TOKEN}",
        TOKEN_URL,
        f"{CHAT}/completions_pro?access_token={TOKEN_2}",
    ]


def test_a_token_refused_twice_is_an_authentication_error() -> None:
    recorder = Recorder(
        token(),
        baidu_error(110, "Access token invalid or no longer valid"),
        token(TOKEN_2),
        baidu_error(111, "Access token expired"),
    )

    with pytest.raises(ProviderError) as info:
        ernie(recorder).chat(None, USER)

    assert classify(info.value) is ErrorCode.AUTHENTICATION and info.value.provider_code == "111"
    assert len(recorder.requests) == 4


def test_one_token_request_for_concurrent_calls() -> None:
    token_requests = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/2.0/token":
            with lock:
                token_requests.append(request)
            threading.Event().wait(0.05)  # hold the lock in the provider while others arrive
            return token()
        return result("ok")

    model = ernie(handler)
    threads = [threading.Thread(target=model.chat, args=(None, USER)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(token_requests) == 1


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (18, "Open api qps request limit reached", ErrorCode.RATE_LIMIT),
        (4, "Open api request limit reached", ErrorCode.RATE_LIMIT),
        (336501, "Rate limit reached for RPM", ErrorCode.RATE_LIMIT),
        (17, "Open api daily request limit reached", ErrorCode.QUOTA),
        (19, "Open api total request limit reached", ErrorCode.QUOTA),
        (13, "Get service token failed", ErrorCode.AUTHENTICATION),
        (14, "IAM Certification failed", ErrorCode.AUTHENTICATION),
        (336100, "try again later", ErrorCode.SERVER),
        (336003, "the length of messages must be an odd number", ErrorCode.INVALID_REQUEST),
        (336005, "API name not exist", ErrorCode.MODEL),
    ],
)
def test_errors_inside_a_200_are_classified(code: int, message: str, expected: ErrorCode) -> None:
    recorder = Recorder(token(), baidu_error(code, message))

    with pytest.raises(ProviderError) as info:
        ernie(recorder).chat(None, USER)

    assert info.value.provider_code == str(code) and info.value.message == message
    assert classify(info.value) is expected


def test_a_refused_key_pair_is_authentication_and_names_no_secret() -> None:
    body = {"error": "invalid_client", "error_description": f"Client authentication failed: {SK} for {AK}"}
    recorder = Recorder(httpx.Response(401, json=body))

    with pytest.raises(ProviderError) as info:
        ernie(recorder).chat(None, USER)

    assert classify(info.value) is ErrorCode.AUTHENTICATION and info.value.provider_code == "invalid_client"
    assert SK not in str(info.value) and AK not in str(info.value)
    assert "Client authentication failed" in info.value.message


def test_an_unknown_client_id() -> None:
    recorder = Recorder(httpx.Response(401, json={"error_description": "unknown client id", "error": "invalid_client"}))
    with pytest.raises(ProviderError) as info:
        ernie(recorder).chat(None, USER)
    assert classify(info.value) is ErrorCode.AUTHENTICATION and recorder.requests[0].url.params["client_secret"] == SK


def test_a_token_answer_without_a_token_is_a_server_error() -> None:
    recorder = Recorder(httpx.Response(200, json={"expires_in": 2592000, "scope": "public"}))
    with pytest.raises(ProviderError) as info:
        ernie(recorder).chat(None, USER)
    assert classify(info.value) is ErrorCode.SERVER and len(recorder.requests) == 1


def test_a_transport_error_of_the_token_request_drops_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    with pytest.raises(ProviderError) as info:
        ernie(handler).chat(None, USER)

    assert classify(info.value) is ErrorCode.CONNECTION
    assert SK not in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_secrets_echoed_in_a_chat_error_are_scrubbed() -> None:
    recorder = Recorder(token(), baidu_error(336003, f"bad request {TOKEN} from {AK}/{SK}"))

    with pytest.raises(ProviderError) as info:
        ernie(recorder).chat(None, USER)

    text = str(info.value)
    assert TOKEN not in text and SK not in text and AK not in text


def test_an_http_error_is_scrubbed_of_the_token() -> None:
    recorder = Recorder(token(), httpx.Response(502, text=f"<html>bad gateway for access_token={TOKEN}</html>"))

    with pytest.raises(ProviderError) as info:
        ernie(recorder).chat(None, USER)

    assert classify(info.value) is ErrorCode.SERVER and TOKEN not in str(info.value)


def test_missing_fields_are_an_authentication_error_without_a_call() -> None:
    recorder = Recorder()
    with pytest.raises(ProviderError) as info:
        ernie(recorder, api_key=encode_credentials({"ak": AK})).chat(None, USER)
    assert classify(info.value) is ErrorCode.AUTHENTICATION and recorder.requests == []


def test_an_answer_without_result_is_a_server_error() -> None:
    recorder = Recorder(token(), httpx.Response(200, json={"id": "as-1", "usage": {}}))
    with pytest.raises(ProviderError) as info:
        ernie(recorder).chat(None, USER)
    assert classify(info.value) is ErrorCode.SERVER


# --------------------------------------------------------------------------- the stream


def chunk(text: str, end: bool, sentence_id: int, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "as-vb0m37ti8y",
        "object": "chat.completion",
        "created": 1709089502,
        "sentence_id": sentence_id,
        "is_end": end,
        "is_truncated": False,
        "result": text,
        "need_clear_history": False,
        "finish_reason": "normal" if end else "",
        "usage": usage,
    }


def test_chat_stream() -> None:
    body = sse(
        chunk("您好，", False, 0, {"prompt_tokens": 2, "completion_tokens": 0, "total_tokens": 2}),
        chunk("我是文心一言。", True, 1, {"prompt_tokens": 2, "completion_tokens": 9, "total_tokens": 11}),
    )
    recorder = Recorder(token(), httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))

    deltas = list(ernie(recorder, model="ERNIE-Speed-128K").chat_stream(None, USER))

    assert str(recorder.last.url) == f"{CHAT}/ernie-speed-128k?access_token={TOKEN}"
    assert recorder.json()["stream"] is True
    assert [d.text for d in deltas[:-1]] == ["您好，", "我是文心一言。"]
    assert deltas[-1].usage.total_tokens == 11 and deltas[-1].finish_reason == "normal"


def test_chat_stream_replaces_a_refused_token() -> None:
    body = sse(chunk("好", True, 0, {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}))
    recorder = Recorder(
        token(),
        baidu_error(111, "Access token expired"),
        token(TOKEN_2),
        httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}),
    )

    deltas = list(ernie(recorder).chat_stream(None, USER))

    assert str(recorder.last.url).endswith(f"access_token={TOKEN_2}")
    assert deltas[0].text == "好" and deltas[-1].usage.total_tokens == 3


def test_chat_stream_refused_with_json() -> None:
    recorder = Recorder(token(), baidu_error(18, "Open api qps request limit reached"))
    with pytest.raises(ProviderError) as info:
        list(ernie(recorder).chat_stream(None, USER))
    assert classify(info.value) is ErrorCode.RATE_LIMIT and info.value.provider_code == "18"


def test_an_error_inside_the_stream_is_scrubbed() -> None:
    body = sse(
        chunk("半", False, 0, {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}),
        {"error_code": 336100, "error_msg": f"try again later ({TOKEN})"},
    )
    recorder = Recorder(token(), httpx.Response(200, content=body, headers={"content-type": "text/event-stream"}))

    stream = ernie(recorder).chat_stream(None, USER)
    assert next(stream).text == "半"
    with pytest.raises(ProviderError) as info:
        next(stream)

    assert classify(info.value) is ErrorCode.SERVER and TOKEN not in str(info.value)


def test_declares_the_credential_fields() -> None:
    cls = get_provider_class("chat", "BaiduYiyan")
    assert [(f.name, f.secret, f.required) for f in cls.credential_fields] == [("ak", True, True), ("sk", True, True)]
    model = ernie(Recorder())
    assert set(model.secrets) >= {AK, SK}
    assert json.loads(model.api_key) == {"ak": AK, "sk": SK}
