"""Fast unit tests (no servers) for the pieces of tenant model management that need no
database: base-URL checks, assembling a (multi-part) credential and its hint, the probe calls
and their generated inputs, the order keys are tried in, and how refusals are reported."""

from __future__ import annotations

import io
import json
import socket
import struct
import wave
import zlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from conf.errors import InvalidRequest
from models import base_url as base_url_module
from models.admin import assemble_key
from models.base_url import check_base_url
from models.keycheck import KeyRejected, ProbeOutcome, by_probe_cost, check_until_accepted, try_model
from models.tenants import key_hint
from providers.base import MODEL_TYPES, CredentialField, EmbeddingModel, Usage
from providers.probe import PROBE_ORDER, PROBE_TEXT, probe, short_wav, tiny_png

KEY = "sk-unit-test-key-7a3f"

# --------------------------------------------------------------------------- base URLs

# What the fake resolver answers; a name not here does not resolve.
DNS: dict[str, list[str]] = {
    "api.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "localhost": ["127.0.0.1", "::1"],
    "ollama.internal": ["10.0.0.7"],
    "rebind.example.com": ["93.184.215.14", "169.254.169.254"],
    "v6-link-local.example.com": ["2606:2800:21f:cb07::1", "fe80::1%2"],
    "mapped.example.com": ["::ffff:169.254.169.254"],
    "alibaba.example.com": ["100.100.100.200"],
}


@pytest.fixture
def settings_env(
    monkeypatch: pytest.MonkeyPatch, runtime_from_env: Callable[[], object]
) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv("MODELYARD_ALLOW_LINK_LOCAL_BASE_URLS", raising=False)
    runtime_from_env()
    return monkeypatch


@pytest.fixture
def dns(settings_env: pytest.MonkeyPatch) -> list[str]:
    """Replace name resolution with :data:`DNS`; returns the names looked up."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        asked.append(host)
        if host not in DNS:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (a, 0, 0, 0) if ":" in a else (a, 0),
            )
            for a in DNS[host]
        ]

    settings_env.setattr(base_url_module.socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://169.254.0.1:8080/v1",
        "http://[fe80::1]/v1",
        "http://[fe80::1%25eth0]/v1",
        "http://[::ffff:169.254.169.254]/v1",  # IPv4-mapped IPv6
        "http://[::ffff:a9fe:a9fe]/v1",  # the same, in hex
        "http://100.100.100.200/v1",  # Alibaba Cloud's metadata service
        "http://[fd00:ec2::254]/v1",  # AWS's IPv6 one
        "http://rebind.example.com/v1",  # a name with one link-local address among others
        "http://v6-link-local.example.com/v1",  # an IPv6 link-local address with a scope id
        "http://mapped.example.com/v1",
        "http://alibaba.example.com/v1",
    ],
)
def test_link_local_and_metadata_addresses_are_refused(dns: list[str], url: str) -> None:
    with pytest.raises(InvalidRequest, match=r"link-local or cloud metadata address.*MODELYARD_ALLOW_LINK_LOCAL"):
        check_base_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://metadata.google.internal/computeMetadata/v1",
        "http://METADATA.Google.Internal./v1",  # case and a trailing dot change nothing
        "http://metadata/v1",
        "http://metadata.goog/v1",
        "http://instance-data/latest",
        "http://instance-data.ec2.internal/latest",
        "https://metadata.azure.com/v1",
    ],
)
def test_metadata_service_names_are_refused_even_when_they_do_not_resolve(dns: list[str], url: str) -> None:
    with pytest.raises(InvalidRequest, match="cloud metadata service"):
        check_base_url(url)
    assert dns == []  # refused by name, before any lookup


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com/v1/", "https://api.example.com/v1"),
        ("  https://api.example.com/v1  ", "https://api.example.com/v1"),
        ("http://localhost:11434/v1", "http://localhost:11434/v1"),  # loopback: local model servers
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
        ("http://10.1.2.3/v1", "http://10.1.2.3/v1"),  # private networks too
        ("http://192.168.1.10:11434", "http://192.168.1.10:11434"),
        ("http://ollama.internal:11434", "http://ollama.internal:11434"),
        ("http://no-such-host.invalid/v1", "http://no-such-host.invalid/v1"),  # the key check reports it
        ("", ""),
        ("   ", ""),
    ],
)
def test_ordinary_base_urls_are_kept_without_a_trailing_slash(dns: list[str], url: str, expected: str) -> None:
    assert check_base_url(url) == expected


def test_a_name_is_checked_as_it_resolves(dns: list[str]) -> None:
    check_base_url("https://api.example.com/v1")
    assert dns == ["api.example.com"]
    with pytest.raises(InvalidRequest, match=r"rebind\.example\.com.*169\.254\.169\.254"):
        check_base_url("https://rebind.example.com/v1")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://example.com/v1", "got ftp scheme"),
        ("file:///etc/passwd", "got file scheme"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "got gopher scheme"),
        ("api.example.com/v1", "got no scheme"),
        ("http:///v1", "no host"),
        ("http://user:pw@api.example.com/v1", "user name or password"),
        ("https://sk-secret@api.example.com/v1", "user name or password"),
        ("http://[::1/v1", "not a valid URL"),
        ("http://api.example.com:99999/v1", "not a valid URL"),
    ],
)
def test_malformed_base_urls_are_refused_with_the_reason(dns: list[str], url: str, needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        check_base_url(url)


def test_the_setting_allows_link_local_and_metadata_hosts_but_nothing_else(
    dns: list[str], settings_env: pytest.MonkeyPatch, runtime_from_env: Callable[[], object]
) -> None:
    settings_env.setenv("MODELYARD_ALLOW_LINK_LOCAL_BASE_URLS", "1")
    runtime_from_env()
    assert check_base_url("http://169.254.10.10/v1/") == "http://169.254.10.10/v1"
    assert check_base_url("http://metadata.google.internal/v1") == "http://metadata.google.internal/v1"
    assert check_base_url("http://[::ffff:169.254.169.254]/v1") == "http://[::ffff:169.254.169.254]/v1"
    with pytest.raises(InvalidRequest, match="http:// or https://"):
        check_base_url("file:///etc/passwd")
    with pytest.raises(InvalidRequest, match="user name or password"):
        check_base_url("http://u:p@169.254.10.10/v1")


# --------------------------------------------------------------------------- credentials and hints


class PlainKey(EmbeddingModel):
    factories = ("PlainCo",)


class KeyAndVersion(EmbeddingModel):  # Azure-OpenAI's shape
    factories = ("VersionCo",)
    credential_fields = (CredentialField("api_key"), CredentialField("api_version", required=False, secret=False))


class KeyPair(EmbeddingModel):  # a region first, then two secrets, none named api_key
    factories = ("PairCo",)
    credential_fields = (
        CredentialField("region", secret=False),
        CredentialField("access_key"),
        CredentialField("secret_key"),
        CredentialField("session_token", required=False),
    )


def test_key_hint_shows_the_last_four_characters_of_a_long_key_only() -> None:
    assert key_hint(KEY) == "7a3f"
    assert key_hint("abcdefgh1234") == "1234"  # twelve characters: long enough
    assert key_hint("abcdefg1234") == ""  # eleven: four would be too much of it
    assert key_hint("") == ""


def test_a_plain_key_is_stored_as_given_and_takes_no_fields() -> None:
    assert assemble_key(PlainKey, KEY, None) == (KEY, "7a3f")
    assert assemble_key(PlainKey, KEY, {"unused": None}) == (KEY, "7a3f")  # a None value is no field
    assert assemble_key(PlainKey, "short-key", {}) == ("short-key", "")
    assert assemble_key(PlainKey, None, None) == (None, None)
    assert assemble_key(PlainKey, "", None) == (None, None)
    with pytest.raises(InvalidRequest, match=r"PlainCo takes one API key \(--api-key\), not named fields \(region\)"):
        assemble_key(PlainKey, KEY, {"region": "eu"})


def test_api_key_fills_the_field_named_api_key() -> None:
    stored, hint = assemble_key(KeyAndVersion, KEY, {"api_version": "2024-10-21"})
    assert json.loads(stored) == {"api_key": KEY, "api_version": "2024-10-21"} and hint == "7a3f"
    stored, hint = assemble_key(KeyAndVersion, None, {"api_key": KEY})  # optional field left out
    assert json.loads(stored) == {"api_key": KEY} and hint == "7a3f"


@pytest.mark.parametrize(
    ("api_key", "fields", "needle"),
    [
        (KEY, {"api_key": KEY}, "takes named credentials, not --api-key"),  # given twice
        (KEY, {"region": "eu"}, r"no credential field region; it takes api_key, api_version\?"),
        (None, {"api_version": "2024-10-21"}, r"needs --field api_key \(it takes api_key, api_version\?\)"),
        (None, {"api_key": ""}, "needs --field api_key"),  # empty is missing
        (None, {}, "needs --field api_key"),
    ],
)
def test_named_fields_are_checked_before_anything_is_called(
    api_key: str | None, fields: dict[str, str], needle: str
) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        assemble_key(KeyAndVersion, api_key, fields)


def test_a_multi_part_key_hints_its_first_secret_field_not_a_plain_one() -> None:
    fields = {"region": "eu-central-1", "access_key": "AKIAEXAMPLEKEY1234", "secret_key": "wJalrXUtnFEMI/K7MDENG/abcd"}
    stored, hint = assemble_key(KeyPair, None, fields)
    assert json.loads(stored) == fields and hint == "1234"
    # a short first secret gives no hint at all (not the next field's, not the region's)
    _, hint = assemble_key(KeyPair, None, {**fields, "access_key": "AKIA12"})
    assert hint == ""
    with pytest.raises(InvalidRequest, match="PairCo takes named credentials, not --api-key"):
        assemble_key(KeyPair, KEY, fields)
    with pytest.raises(InvalidRequest, match="needs --field access_key, secret_key"):
        assemble_key(KeyPair, None, {"region": "eu-central-1"})
    with pytest.raises(InvalidRequest, match="no credential field api_key, token"):
        assemble_key(KeyPair, None, {**fields, "token": "x", "api_key": "y"})


# --------------------------------------------------------------------------- probes


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, data) chunks of a PNG, each CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC on {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    return chunks


@pytest.mark.parametrize("size", [8, 3])
def test_tiny_png_is_a_valid_png(size: int) -> None:
    chunks = png_chunks(tiny_png(size))
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"] and chunks[-1][1] == b""
    # width, height, bit depth 8, colour type 2 (RGB), compression, filter, interlace 0
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (size, size, 8, 2, 0, 0, 0)
    raw = zlib.decompress(chunks[1][1])
    assert len(raw) == size * (1 + 3 * size)
    rows = [raw[i * (1 + 3 * size) : (i + 1) * (1 + 3 * size)] for i in range(size)]
    assert all(row[0] == 0 for row in rows)  # filter type None on every scanline


def test_short_wav_is_half_a_second_of_16khz_mono_silence() -> None:
    with wave.open(io.BytesIO(short_wav())) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (1, 2, 16000, 8000)
        assert wav.readframes(wav.getnframes()) == b"\x00\x00" * 8000
    with wave.open(io.BytesIO(short_wav(0.25, 8000))) as wav:
        assert (wav.getframerate(), wav.getnframes()) == (8000, 2000)


class Spy:
    """Stands in for a provider of one model type and keeps the call probe made."""

    def __init__(self, model_type: str) -> None:
        self.model_type = model_type
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any) -> Any:
            self.calls.append((name, args))
            return SimpleNamespace(usage=Usage(3, 1, 4))

        return method


def test_each_type_is_probed_with_its_cheapest_real_call() -> None:
    made = {}
    for model_type in MODEL_TYPES:
        spy = Spy(model_type)
        assert probe(spy) == Usage(3, 1, 4)
        (made[model_type],) = spy.calls
    assert made["embedding"] == ("encode", ([PROBE_TEXT],))
    name, (system, messages, gen_conf) = made["chat"]
    assert name == "chat" and system is None and messages == [{"role": "user", "content": PROBE_TEXT}]
    assert gen_conf == {"max_tokens": 1}
    name, (query, texts) = made["rerank"]
    assert name == "similarity" and query == PROBE_TEXT and len(texts) == 2 and all(texts)
    name, (image, prompt, mime) = made["image2text"]
    assert name == "describe_with_prompt" and prompt and mime == "image/png"
    assert [k for k, _ in png_chunks(image)] == [b"IHDR", b"IDAT", b"IEND"]
    name, (audio, filename) = made["speech2text"]
    assert name == "transcription" and filename.endswith(".wav")
    with wave.open(io.BytesIO(audio)) as wav:
        assert wav.getnframes() > 0
    assert made["tts"] == ("tts", (PROBE_TEXT,))


def test_the_cheapest_types_are_probed_first() -> None:
    assert sorted(PROBE_ORDER) == sorted(MODEL_TYPES) and PROBE_ORDER[0] == "embedding"
    assert PROBE_ORDER.index("chat") < min(PROBE_ORDER.index(t) for t in ("image2text", "tts", "speech2text"))
    candidates = [
        ("c1", "chat"),
        ("x", "video"),
        ("s", "speech2text"),
        ("e1", "embedding"),
        ("i", "image2text"),
        ("c2", "chat"),
        ("r", "rerank"),
        ("e2", "embedding"),
        ("t", "tts"),
    ]
    ordered = by_probe_cost(candidates)
    assert [t for _, t in ordered] == sorted(
        (t for _, t in candidates), key=lambda t: PROBE_ORDER.index(t) if t in PROBE_ORDER else 99
    )
    assert ordered[:2] == [("e1", "embedding"), ("e2", "embedding")]  # stable within a type
    assert ordered[-1] == ("x", "video")  # an unknown type goes last


# --------------------------------------------------------------------------- trying models in turn


# How the wire says each outcome, as an OpenAI-compatible server (or the network) says it.
WIRE_ANSWERS: dict[str, Any] = {
    "AUTHENTICATION": (
        401,
        {
            "error": {
                "message": "Incorrect API key provided",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        },
    ),
    "MODEL": (
        404,
        {"error": {"message": "The model does not exist", "type": "invalid_request_error", "code": "model_not_found"}},
    ),
    "RATE_LIMIT": (
        429,
        {"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}},
    ),
    "QUOTA": (
        429,
        {
            "error": {
                "message": "You exceeded your current quota",
                "type": "insufficient_quota",
                "code": "insufficient_quota",
            }
        },
    ),
    "SERVER": (500, {"error": {"message": "The server had an error", "type": "server_error"}}),
    "INVALID_REQUEST": (400, {"error": {"message": "Invalid 'input'", "type": "invalid_request_error"}}),
    "CONNECTION": httpx.ConnectError("connection refused"),
    "TIMEOUT": httpx.ReadTimeout("timed out"),
}


def scripted(codes: dict[str, str | None]) -> tuple[httpx.Client, list[str]]:
    """A client whose transport answers each model (by the request's ``model``) as ``codes`` says
    (None: accepted); returns it and the models the requests named, in order."""
    tried: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        name = json.loads(request.content)["model"]
        tried.append(name)
        code = codes[name]
        if code is None:
            if request.url.path.endswith("/embeddings"):
                return httpx.Response(200, json={"data": [{"index": 0, "embedding": [0.1, 0.2]}]})
            return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})
        answer = WIRE_ANSWERS[code]
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer[0], json=answer[1])

    return httpx.Client(transport=httpx.MockTransport(handler)), tried


CANDIDATES = [("a", "embedding"), ("b", "embedding"), ("c", "chat"), ("d", "chat")]


@pytest.mark.parametrize(
    ("codes", "tried", "not_tried"),
    [
        ({"a": None, "b": None, "c": None, "d": None}, "a", ""),  # the first that passes ends it
        ({"a": "MODEL", "b": "INVALID_REQUEST", "c": None, "d": None}, "abc", ""),  # a model's own refusal: go on
        (
            {"a": "AUTHENTICATION", "b": None, "c": None, "d": None},
            "a",
            "bcd",
        ),  # the key refused: the rest would be too
        ({"a": "RATE_LIMIT", "b": None, "c": None, "d": None}, "ab", ""),  # a busy model says nothing of the rest
        ({"a": "SERVER", "b": "QUOTA", "c": "INVALID_REQUEST", "d": "AUTHENTICATION"}, "abcd", ""),
        ({"a": "CONNECTION", "b": None, "c": None, "d": None}, "a", "bcd"),  # nobody answers: stop calling
        ({"a": "MODEL", "b": "TIMEOUT", "c": None, "d": None}, "ab", "cd"),
    ],
)
def test_models_are_tried_until_one_accepts_and_not_after_the_provider_stops_answering(
    codes: dict[str, str | None], tried: str, not_tried: str
) -> None:
    client, calls = scripted(codes)
    with client:
        outcomes = check_until_accepted("OpenAI", CANDIDATES, KEY, "https://api.example.com/v1", client=client)
    assert "".join(calls) == tried
    assert [o.model for o in outcomes] == [f"{n}@OpenAI" for n in tried + not_tried]
    assert [o.code for o in outcomes[: len(tried)]] == [codes[n] for n in tried]  # each classified from the wire
    skipped = [o for o in outcomes if o.code == "NOT_TRIED"]
    assert "".join(o.model[0] for o in skipped) == not_tried and not any(o.ok for o in skipped)
    assert outcomes[-1].ok == (not not_tried and codes[tried[-1]] is None)


def test_a_refused_key_stops_after_the_first_refusal_and_says_so() -> None:
    """``keys set`` with a key the provider refuses calls one model, not every model of the
    factory, and the refusal says that the others were skipped and why."""
    client, calls = scripted({"a": "AUTHENTICATION", "b": None, "c": None, "d": None})
    with client:
        outcomes = check_until_accepted("OpenAI", CANDIDATES, KEY, "https://api.example.com/v1", client=client)
    assert calls == ["a"]
    message = str(KeyRejected("no OpenAI model accepted it", outcomes))
    assert "AUTHENTICATION: " in message and KEY not in message
    assert (
        "NOT_TRIED: skipped: the provider refused the key (AUTHENTICATION) on a@OpenAI "
        "[b@OpenAI (embedding), c@OpenAI (chat), d@OpenAI (chat)]"
    ) in message


def test_a_refusal_names_each_distinct_error_once_with_at_most_three_models() -> None:
    refused = [
        ProbeOutcome(f"m{i}@Co", "chat", False, "AUTHENTICATION", "Incorrect API key provided") for i in range(40)
    ]
    other = ProbeOutcome("big@Co", "embedding", False, "MODEL", "no such model")
    exc = KeyRejected("no Co model accepted it", [refused[0], other, *refused[1:]])
    message = str(exc)
    assert message.startswith("the key was not saved: no Co model accepted it: ")
    assert message.count("Incorrect API key provided") == 1 and message.count("@Co") == 4
    assert (
        "AUTHENTICATION: Incorrect API key provided [m0@Co (chat), m1@Co (chat), m2@Co (chat) and 37 more]" in message
    )
    assert "MODEL: no such model [big@Co (embedding)]" in message
    assert exc.outcomes[1] == other and len(exc.outcomes) == 41
    # the same code with another message is another entry
    two = str(KeyRejected("x", [refused[0], ProbeOutcome("n@Co", "chat", False, "AUTHENTICATION", "expired")]))
    assert "[m0@Co (chat)]" in two and "expired [n@Co (chat)]" in two and "more" not in two


def test_try_model_classifies_and_scrubs_what_the_provider_says(settings_env: pytest.MonkeyPatch) -> None:
    answers = [
        httpx.Response(
            401,
            json={
                "error": {
                    "message": f"Incorrect API key provided: {KEY}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        ),
        httpx.Response(
            429,
            json={
                "error": {
                    "message": "You exceeded your current quota",
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                }
            },
        ),
        httpx.Response(
            200,
            json={
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            },
        ),
    ]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:

        def attempt() -> ProbeOutcome:
            return try_model(client, "OpenAI", "text-embedding-3-small", "embedding", KEY, "https://api.example.com/v1")

        refused = attempt()
        assert (refused.ok, refused.code, refused.model) == (False, "AUTHENTICATION", "text-embedding-3-small@OpenAI")
        assert KEY not in (refused.message or "") and "Incorrect API key provided" in (refused.message or "")
        assert attempt().code == "QUOTA"
        assert attempt() == ProbeOutcome("text-embedding-3-small@OpenAI", "embedding", True)
        unsupported = try_model(client, "OpenAI", "whatever", "no-such-type", KEY, "")
    assert (unsupported.ok, unsupported.code) == (False, "INVALID_REQUEST")
    assert str(seen[0].url) == "https://api.example.com/v1/embeddings"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}" and json.loads(seen[0].content)["input"] == [PROBE_TEXT]


def test_try_model_scrubs_a_failure_that_is_not_a_provider_error() -> None:
    """Not every failure is a ProviderError scrubbed by the HTTP layer: a transport failing with
    the key in its text (a proxy bug, say) is classified and scrubbed here."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"proxy could not forward {request.headers['authorization']}")

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        outcome = try_model(client, "OpenAI", "text-embedding-3-small", "embedding", KEY, "https://api.example.com/v1")
    assert not outcome.ok and outcome.code and KEY not in (outcome.message or "")
    assert "proxy could not forward" in (outcome.message or "")


def test_a_refused_multi_part_credential_is_reported_with_its_secret_fields_scrubbed_only() -> None:
    """Google Cloud refuses a malformed region: the report names the region (not a secret) and
    none of the secret service-account key."""
    from providers.base import encode_credentials

    account = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----secret-bytes"}'
    credential = encode_credentials({"project_id": "p", "region": "not a region!", "service_account_json": account})
    with httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))) as client:
        outcome = try_model(client, "Google Cloud", "gemini-2.5-flash", "chat", credential, "")
    assert (outcome.ok, outcome.code) == (False, "INVALID_REQUEST")
    assert "'not a region!'" in (outcome.message or "") and "secret-bytes" not in (outcome.message or "")
