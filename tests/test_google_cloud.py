"""Google Cloud (Vertex AI serving Gemini): the service-account sign-in -- a JWT we verify
with the test key's public half -- and the Vertex URLs, through ``httpx.MockTransport``."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.base import encode_credentials
from providers.errors import ErrorCode, ProviderError, classify
from providers.gemini import GeminiChat
from providers.google_cloud import (
    JWT_BEARER_GRANT,
    SCOPE,
    AccessTokens,
    GoogleCloudChat,
    GoogleCloudImage2Text,
    ServiceAccount,
)
from providers.registry import get_provider_class
from tests.mock_http import Recorder, provider, sse

TOKEN_URI = "https://oauth2.googleapis.com/token"
EMAIL = "modelyard@my-project-123.iam.gserviceaccount.com"
ACCESS_TOKEN = "ya29.c.b0Aaekm1KfakeAccessToken0123456789"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_json(private: rsa.RSAPrivateKey, **overrides: Any) -> str:
    """A service account key file as the Cloud console downloads it (a fresh key id each time,
    so that the process-wide token cache never mixes tests)."""
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key = {
        "type": "service_account",
        "project_id": "my-project-123",
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "113344556677889900112",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": TOKEN_URI,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{EMAIL}",
        "universe_domain": "googleapis.com",
    }
    return json.dumps(key | overrides, indent=2)


def token_answer(token: str = ACCESS_TOKEN, expires_in: int = 3599) -> httpx.Response:
    return httpx.Response(200, json={"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})


def gemini_answer(text: str = "Hello from Vertex.") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP", "avgLogprobs": -0.05}
            ],
            "usageMetadata": {
                "promptTokenCount": 5,
                "candidatesTokenCount": 4,
                "totalTokenCount": 9,
                "trafficType": "ON_DEMAND",
            },
            "modelVersion": "gemini-2.5-flash",
            "createTime": "2025-06-01T10:00:00.000000Z",
            "responseId": "abc123",
        },
    )


def vertex(recorder: Recorder, key: str, model_type: str = "chat", **fields: str) -> Any:
    credentials = encode_credentials({"service_account_json": key} | fields)
    return provider(model_type, "Google Cloud", recorder, model="gemini-2.5-flash", api_key=credentials)


def decode_segment(segment: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def verified_claims(jwt: str, public_key: rsa.RSAPublicKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JWT's header and claims, after checking its RS256 signature with ``public_key``."""
    header, claims, signature = jwt.split(".")
    raw_signature = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    public_key.verify(raw_signature, f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return decode_segment(header), decode_segment(claims)


# --------------------------------------------------------------------------- registration


def test_google_cloud_serves_chat_and_image2text_with_three_credential_fields() -> None:
    assert get_provider_class("chat", "Google Cloud") is GoogleCloudChat
    assert get_provider_class("image2text", "Google Cloud") is GoogleCloudImage2Text
    assert get_provider_class("chat", "Gemini") is GeminiChat
    fields = {f.name: f for f in GoogleCloudChat.credential_fields}
    assert list(fields) == ["project_id", "region", "service_account_json"]
    assert not fields["project_id"].secret and not fields["region"].secret and fields["service_account_json"].secret


# --------------------------------------------------------------------------- sign-in and the call


def test_token_exchange_signed_jwt_and_vertex_request(rsa_key: rsa.RSAPrivateKey) -> None:
    key = key_json(rsa_key)
    recorder = Recorder(token_answer(), gemini_answer())
    model = vertex(recorder, key, project_id="my-project-123", region="us-central1")

    before = int(time.time())
    result = model.chat("Be brief.", [{"role": "user", "content": "Hi"}], {"temperature": 0.5})

    exchange, call = recorder.requests
    assert exchange.method == "POST" and str(exchange.url) == TOKEN_URI
    assert exchange.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(exchange.content.decode())
    assert form["grant_type"] == [JWT_BEARER_GRANT]
    header, claims = verified_claims(form["assertion"][0], rsa_key.public_key())
    assert header == {"alg": "RS256", "typ": "JWT", "kid": json.loads(key)["private_key_id"]}
    assert claims["iss"] == EMAIL and claims["scope"] == SCOPE and claims["aud"] == TOKEN_URI
    assert before <= claims["iat"] <= int(time.time()) and claims["exp"] == claims["iat"] + 3600
    assert "sub" not in claims

    assert str(call.url) == (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/my-project-123/locations/us-central1"
        "/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert call.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert "x-goog-api-key" not in call.headers
    assert recorder.json() == {
        "contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 0.5},
    }
    assert result.text == "Hello from Vertex." and result.usage.total_tokens == 9


def test_signature_fails_with_another_key(rsa_key: rsa.RSAPrivateKey) -> None:
    recorder = Recorder(token_answer(), gemini_answer())
    vertex(recorder, key_json(rsa_key)).chat(None, [{"role": "user", "content": "Hi"}])
    assertion = parse_qs(recorder.requests[0].content.decode())["assertion"][0]

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidSignature):
        verified_claims(assertion, stranger.public_key())


def test_token_is_cached_across_instances_and_calls(rsa_key: rsa.RSAPrivateKey) -> None:
    key = key_json(rsa_key)
    recorder = Recorder(token_answer(), gemini_answer(), gemini_answer(), gemini_answer())

    first = vertex(recorder, key)
    first.chat(None, [{"role": "user", "content": "1"}])
    first.chat(None, [{"role": "user", "content": "2"}])
    vertex(recorder, key).chat(None, [{"role": "user", "content": "3"}])  # a new instance, as for the next job

    assert [str(r.url) for r in recorder.requests].count(TOKEN_URI) == 1
    assert all(r.headers["authorization"] == f"Bearer {ACCESS_TOKEN}" for r in recorder.requests[1:])


def test_global_region_and_project_from_the_key(rsa_key: rsa.RSAPrivateKey) -> None:
    recorder = Recorder(token_answer(), gemini_answer())

    vertex(recorder, key_json(rsa_key)).chat(None, [{"role": "user", "content": "Hi"}])

    assert str(recorder.last.url) == (
        "https://aiplatform.googleapis.com/v1/projects/my-project-123/locations/global"
        "/publishers/google/models/gemini-2.5-flash:generateContent"
    )


def test_stream_on_vertex(rsa_key: rsa.RSAPrivateKey) -> None:
    chunk = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi!"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 2, "totalTokenCount": 4},
    }
    recorder = Recorder(token_answer(), httpx.Response(200, content=sse(chunk)))

    model = vertex(recorder, key_json(rsa_key), region="europe-west4")
    deltas = list(model.chat_stream(None, [{"role": "user", "content": "Hi"}]))

    assert str(recorder.last.url) == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/my-project-123/locations/europe-west4"
        "/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    )
    assert recorder.last.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert (
        [d.text for d in deltas] == ["Hi!", ""] and deltas[-1].usage is not None and deltas[-1].usage.total_tokens == 4
    )


def test_image2text_on_vertex(rsa_key: rsa.RSAPrivateKey) -> None:
    recorder = Recorder(token_answer(), gemini_answer("A red bicycle."))

    result = vertex(recorder, key_json(rsa_key), "image2text", region="us-east5").describe(b"\x89PNG-bytes")

    assert str(recorder.last.url) == (
        "https://us-east5-aiplatform.googleapis.com/v1/projects/my-project-123/locations/us-east5"
        "/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    parts = recorder.json()["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(b"\x89PNG-bytes").decode()}}
    assert result.text == "A red bicycle."


def test_token_refreshed_shortly_before_expiry(rsa_key: rsa.RSAPrivateKey) -> None:
    now = [1_700_000_000.0]
    tokens = AccessTokens(ServiceAccount.from_json(key_json(rsa_key)), clock=lambda: now[0])
    recorder = Recorder(token_answer("ya29.first", 3600), token_answer("ya29.second", 3600))
    client = recorder.client

    assert tokens.get(client) == "ya29.first"
    now[0] += 3600 - 301  # still more than five minutes left
    assert tokens.get(client) == "ya29.first"
    now[0] += 2  # now less than five minutes left
    assert tokens.get(client) == "ya29.second"
    assert len(recorder.requests) == 2
    claims = decode_segment(parse_qs(recorder.requests[1].content.decode())["assertion"][0].split(".")[1])
    assert claims["iat"] == int(now[0])


def test_concurrent_callers_share_one_exchange(rsa_key: rsa.RSAPrivateKey) -> None:
    tokens = AccessTokens(ServiceAccount.from_json(key_json(rsa_key)))
    release = threading.Event()
    exchanges: list[httpx.Request] = []

    def slow_token_endpoint(request: httpx.Request) -> httpx.Response:
        exchanges.append(request)
        release.wait(5)
        return token_answer()

    client = httpx.Client(transport=httpx.MockTransport(slow_token_endpoint))
    results: list[str] = []
    started = threading.Barrier(8)

    def caller() -> None:
        started.wait()
        results.append(tokens.get(client))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)  # let every caller reach the token holder while the first exchange hangs
    release.set()
    for thread in threads:
        thread.join(5)

    assert len(exchanges) == 1 and results == [ACCESS_TOKEN] * 8


def test_401_forgets_the_token(rsa_key: rsa.RSAPrivateKey) -> None:
    key = key_json(rsa_key)
    expired = {
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
            "or other valid authentication credential.",
            "status": "UNAUTHENTICATED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "ACCESS_TOKEN_EXPIRED",
                    "domain": "googleapis.com",
                }
            ],
        }
    }
    recorder = Recorder(
        token_answer("ya29.old"), httpx.Response(401, json=expired), token_answer("ya29.new"), gemini_answer()
    )
    model = vertex(recorder, key)

    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "user", "content": "Hi"}])
    assert classify(info.value) is ErrorCode.AUTHENTICATION and info.value.provider_code == "ACCESS_TOKEN_EXPIRED"
    model.chat(None, [{"role": "user", "content": "Hi"}])

    assert recorder.last.headers["authorization"] == "Bearer ya29.new"


# --------------------------------------------------------------------------- failures


def test_token_endpoint_refusal_is_an_authentication_error(rsa_key: rsa.RSAPrivateKey) -> None:
    refusal = httpx.Response(400, json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
    recorder = Recorder(refusal)

    with pytest.raises(ProviderError) as info:
        vertex(recorder, key_json(rsa_key)).chat(None, [{"role": "user", "content": "Hi"}])

    error = info.value
    assert error.status == 400 and error.provider_code == "invalid_grant"
    assert classify(error) is ErrorCode.AUTHENTICATION and "Invalid JWT Signature." in error.message
    assert len(recorder.requests) == 1


def test_token_endpoint_outage_is_retryable(rsa_key: rsa.RSAPrivateKey) -> None:
    recorder = Recorder(httpx.Response(503, text="Service Unavailable"))

    with pytest.raises(ProviderError) as info:
        vertex(recorder, key_json(rsa_key)).chat(None, [{"role": "user", "content": "Hi"}])
    assert classify(info.value) is ErrorCode.SERVER


@pytest.mark.parametrize(
    "key",
    [
        "{not json",
        json.dumps({"type": "authorized_user", "client_id": "x"}),
        json.dumps({"type": "service_account", "client_email": EMAIL}),
    ],
)
def test_malformed_keys_fail_without_a_call(key: str) -> None:
    recorder = Recorder()

    with pytest.raises(ProviderError) as info:
        vertex(recorder, key).chat(None, [{"role": "user", "content": "Hi"}])
    assert classify(info.value) is ErrorCode.AUTHENTICATION and recorder.requests == []


def test_a_complete_key_of_another_type_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    recorder = Recorder()

    with pytest.raises(ProviderError) as info:
        vertex(recorder, key_json(rsa_key, type="external_account")).chat(None, [{"role": "user", "content": "Hi"}])
    assert classify(info.value) is ErrorCode.AUTHENTICATION and recorder.requests == []


def test_foreign_token_uri_and_bad_region_are_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    recorder = Recorder()
    foreign = key_json(rsa_key, token_uri="https://attacker.example/token")
    with pytest.raises(ProviderError) as info:
        vertex(recorder, foreign).chat(None, [{"role": "user", "content": "Hi"}])
    assert classify(info.value) is ErrorCode.AUTHENTICATION

    with pytest.raises(ProviderError) as info:
        vertex(recorder, key_json(rsa_key), region="evil.example/x#").chat(None, [{"role": "user", "content": "Hi"}])
    assert classify(info.value) is ErrorCode.INVALID_REQUEST
    assert recorder.requests == []


def test_vertex_429_and_403(rsa_key: rsa.RSAPrivateKey) -> None:
    key = key_json(rsa_key)
    exhausted = {
        "error": {
            "code": 429,
            "message": "Resource exhausted. Please try again later. Please refer to "
            "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details.",
            "status": "RESOURCE_EXHAUSTED",
        }
    }
    denied = {
        "error": {
            "code": 403,
            "message": "Permission 'aiplatform.endpoints.predict' denied on resource '//aiplatform.googleapis.com/"
            "projects/my-project-123/locations/global/publishers/google/models/gemini-2.5-flash' (or it may not "
            f"exist). {ACCESS_TOKEN}",  # an echoed token, to see it scrubbed
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "aiplatform.googleapis.com",
                }
            ],
        }
    }
    recorder = Recorder(token_answer(), httpx.Response(429, json=exhausted), httpx.Response(403, json=denied))
    model = vertex(recorder, key)

    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "user", "content": "Hi"}])
    assert classify(info.value) is ErrorCode.RATE_LIMIT
    with pytest.raises(ProviderError) as info:
        model.chat(None, [{"role": "user", "content": "Hi"}])
    assert classify(info.value) is ErrorCode.AUTHENTICATION
    assert ACCESS_TOKEN not in str(info.value)  # the bearer token is scrubbed
