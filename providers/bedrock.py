"""Amazon Bedrock: chat and image2text through the Converse API, embeddings through InvokeModel
(Amazon Titan text embeddings and Cohere Embed on Bedrock). Every request is signed with AWS
Signature Version 4 by :mod:`providers.aws_sigv4` (no boto3, so the transport seam stays ours).

Wire format::

    POST https://bedrock-runtime.{region}.amazonaws.com/model/{modelId}/converse
         {"messages": [{"role", "content": [{"text"} | {"image": {"format", "source": {"bytes"}}}
                                            | {"toolUse": {"toolUseId", "name", "input"}}
                                            | {"toolResult": {"toolUseId", "content": [{"text"}]}}]}],
          "system": [{"text"}], "inferenceConfig": {"maxTokens", "temperature", "topP", "stopSequences"},
          "toolConfig": {"tools": [{"toolSpec": {"name", "description", "inputSchema": {"json"}}}]}}
      -> {"output": {"message": {"content": [...]}}, "stopReason",
          "usage": {"inputTokens", "outputTokens", "totalTokens"}}
    POST .../model/{modelId}/converse-stream   same body; the answer is AWS event-stream binary frames
    POST .../model/{modelId}/invoke            Titan: {"inputText"} -> {"embedding", "inputTextTokenCount"}
                                               Cohere: {"texts", "input_type"} -> {"embeddings"}

The model id is one path segment, percent-encoded (``:`` -> ``%3A``, an ARN's ``/`` -> ``%2F``);
SigV4 encodes the path once more in the canonical request, as it does for every service but S3.

Credentials (one encrypted multi-part credential): ``auth_mode`` ``access_key_secret`` (the
default: the access key signs the calls) or ``assume_role`` (the access key signs one STS
AssumeRole call for ``role_arn``; the temporary credentials it returns sign the calls and are
cached per process until shortly before they expire). ``iam_role`` -- the machine's own instance
credentials -- is refused: providers never read the environment or the instance metadata.

Errors: AWS sends ``{"message"}`` with the error's name in the ``x-amzn-ErrorType`` header
(``ThrottlingException:http://internal.amazon.com/coral/...``); STS sends XML
``<ErrorResponse><Error><Code>``. Both become a ProviderError whose ``provider_code`` is that
name, which ``providers.errors`` maps (ThrottlingException -> RATE_LIMIT, AccessDeniedException ->
AUTHENTICATION, ServiceQuotaExceededException -> QUOTA, ...).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import httpx
import numpy as np

from providers.aws_eventstream import event_frames
from providers.aws_sigv4 import AwsCredentials, sign_v4
from providers.base import (
    BaseModel,
    ChatDelta,
    ChatModel,
    ChatResult,
    CredentialField,
    EmbeddingModel,
    EmbeddingResult,
    Image2TextModel,
    TextResult,
    ToolCall,
    Usage,
    estimate_tokens,
)
from providers.errors import ErrorCode, ProviderError, scrub
from providers.http import json_body, parse_retry_after, rate_limit_headers
from providers.registry import register
from providers.wire import (
    DEFAULT_IMAGE_PROMPT,
    PendingCall,
    decode_event,
    estimated,
    message_text,
    parse_arguments,
    reading,
    reported_usage,
)

# --------------------------------------------------------------------------- errors


def _xml_field(root: ET.Element, name: str) -> str | None:
    """The text of the first element called ``name`` (any namespace)."""
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == name:
            return (element.text or "").strip()
    return None


def _parse_aws_error(text: str) -> tuple[str, str | None]:
    """(message, error name) from a JSON body ``{"message", "__type"?}`` or an XML ``<ErrorResponse>``."""
    stripped = text.strip()
    if stripped.startswith("<"):
        try:
            root = ET.fromstring(stripped)
        except ET.ParseError:
            return stripped, None
        return _xml_field(root, "Message") or stripped, _xml_field(root, "Code") or None
    try:
        body = json.loads(stripped)
    except ValueError:
        return stripped, None
    if not isinstance(body, dict):
        return stripped, None
    message = body.get("message") or body.get("Message") or stripped
    kind = body.get("__type") or body.get("code")
    return str(message), str(kind).rsplit("#", 1)[-1] if kind else None


# Bedrock's daily token quota is a ThrottlingException too ("Too many tokens per day, please wait
# before trying again."): only the next day lifts it, so it is QUOTA, not a rate limit to wait out.
_PER_DAY = re.compile(r"per\s+day|daily", re.I)


def _known_code(name: str | None, message: str) -> ErrorCode | None:
    """What an AWS error name says beside the shared table (None: let ``classify`` decide)."""
    if name == "ThrottlingException" and _PER_DAY.search(message):
        return ErrorCode.QUOTA
    return None


def aws_error(response: httpx.Response, *secrets: str | None) -> ProviderError:
    """The ProviderError of a non-2xx AWS answer; the error's name comes from ``x-amzn-ErrorType``
    (``Name:http://internal.amazon.com/...``) or else from the body."""
    try:
        response.read()
        text = response.text
    except httpx.HTTPError:
        text = ""
    message, code = _parse_aws_error(text)
    header = response.headers.get("x-amzn-errortype")
    if header:
        code = header.split(":", 1)[0].strip() or code
    message = message or response.reason_phrase or f"HTTP {response.status_code}"
    return ProviderError(
        scrub(message, *secrets)[:2000],
        status=response.status_code,
        provider_code=code,
        code=_known_code(code, message),
        retry_after=parse_retry_after(response.headers),
        rate_limits=rate_limit_headers(response.headers),
    )


def _invalid(message: str) -> ProviderError:
    return ProviderError(message, code=ErrorCode.INVALID_REQUEST)


# --------------------------------------------------------------------------- assumed roles

STS_VERSION = "2011-06-15"
ROLE_SESSION_NAME = "modelyard-bedrock"
# Assumed credentials are replaced this long before AWS says they expire.
REFRESH_BEFORE_EXPIRY = timedelta(minutes=5)


@dataclass(frozen=True)
class _Session:
    credentials: AwsCredentials
    expires: datetime


class RoleSessions:
    """Temporary credentials from STS AssumeRole, per process, until shortly before they expire.

    Keyed by role ARN, access key id and a digest of the secret key: an access key id is not a
    secret, so one tenant who knows another's must not get that tenant's session. One STS call
    at a time per key (others wait for it), none while holding the table's lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str, str], _Session] = {}
        self._key_locks: dict[tuple[str, str, str], threading.Lock] = {}

    @staticmethod
    def key(role_arn: str, base: AwsCredentials) -> tuple[str, str, str]:
        return role_arn, base.access_key, hashlib.sha256(base.secret_key.encode()).hexdigest()

    def _fresh(self, key: tuple[str, str, str], now: datetime) -> AwsCredentials | None:
        with self._lock:
            session = self._sessions.get(key)
            return session.credentials if session and now < session.expires - REFRESH_BEFORE_EXPIRY else None

    def get(
        self, key: tuple[str, str, str], now: Callable[[], datetime], assume: Callable[[], _Session]
    ) -> AwsCredentials:
        cached = self._fresh(key, now())
        if cached:
            return cached
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            cached = self._fresh(key, now())  # another thread may have assumed the role meanwhile
            if cached:
                return cached
            session = assume()
            with self._lock:
                self._sessions[key] = session
            return session.credentials

    def forget(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._sessions.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._sessions.clear()


ROLE_SESSIONS = RoleSessions()


def _parse_assume_role(text: str) -> _Session:
    """``<AssumeRoleResponse><AssumeRoleResult><Credentials>`` -> the session (SERVER if malformed)."""
    try:
        root = ET.fromstring(text)
        fields = {
            name: _xml_field(root, name) for name in ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")
        }
        expiration = datetime.fromisoformat(str(fields["Expiration"]))
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=UTC)
        if not (fields["AccessKeyId"] and fields["SecretAccessKey"] and fields["SessionToken"]):
            raise ValueError("credentials missing")
    except (ET.ParseError, ValueError) as exc:
        raise ProviderError(
            f"STS AssumeRole answered in an unexpected shape ({type(exc).__name__})", code=ErrorCode.SERVER
        ) from None
    credentials = AwsCredentials(str(fields["AccessKeyId"]), str(fields["SecretAccessKey"]), fields["SessionToken"])
    return _Session(credentials, expiration)


# --------------------------------------------------------------------------- the signed client

AUTH_MODES = ("access_key_secret", "assume_role", "iam_role")
_REGION = re.compile(r"[a-z]{2}(-[a-z0-9]+)+")
_EXPIRED_CODES = frozenset({"ExpiredTokenException", "ExpiredToken"})


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Bedrock(BaseModel):
    """What every Bedrock class shares: the credential, SigV4 signing, the endpoint, errors.

    Options: ``clock`` (a callable returning an aware datetime; tests fix it)."""

    factories: ClassVar[tuple[str, ...]] = ("Bedrock",)
    needs_key = True
    default_base_url = ""  # https://bedrock-runtime.{region}.amazonaws.com; a tenant may give a VPC endpoint
    credential_fields = (
        CredentialField("auth_mode", required=False, secret=False, help="access_key_secret (default) or assume_role"),
        CredentialField("access_key", help="AWS access key id"),
        CredentialField("secret_key", help="AWS secret access key"),
        CredentialField("region", secret=False, help="e.g. us-east-1"),
        CredentialField("role_arn", required=False, secret=False, help="the role to assume (assume_role only)"),
    )
    role_sessions: ClassVar[RoleSessions] = ROLE_SESSIONS

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        super().__init__(model_name, **kwargs)
        self._clock: Callable[[], datetime] = self.options.get("clock") or _utcnow
        self._role_key: tuple[str, str, str] | None = None
        self._assumed: AwsCredentials | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        """The stored secrets and, once a role is assumed, its temporary ones."""
        assumed = self._assumed
        extra = (assumed.access_key, assumed.secret_key, assumed.session_token or "") if assumed else ()
        return super().secrets + tuple(v for v in extra if v)

    # --- the credential

    @property
    def region(self) -> str:
        region = (self.credentials.get("region") or "").strip()
        if not _REGION.fullmatch(region):
            raise _invalid(f"Bedrock needs an AWS region such as us-east-1; got {region!r}")
        return region

    def _base_credentials(self) -> AwsCredentials:
        access_key = (self.credentials.get("access_key") or "").strip()
        secret_key = (self.credentials.get("secret_key") or "").strip()
        if not access_key or not secret_key:
            raise _invalid("Bedrock needs access_key and secret_key")
        return AwsCredentials(access_key, secret_key)

    def aws_credentials(self) -> AwsCredentials:
        """The credentials that sign model calls, per ``auth_mode``."""
        mode = (self.credentials.get("auth_mode") or "access_key_secret").strip()
        if mode not in AUTH_MODES:
            raise _invalid(f"Bedrock auth_mode must be one of {', '.join(AUTH_MODES)}; got {mode!r}")
        if mode == "iam_role":
            raise _invalid(
                "Bedrock auth_mode iam_role (the machine's instance credentials) is not supported: "
                "give access_key_secret, or assume_role with a role_arn"
            )
        base = self._base_credentials()
        if mode == "access_key_secret":
            return base
        role_arn = (self.credentials.get("role_arn") or "").strip()
        if not role_arn.startswith("arn:"):
            raise _invalid("Bedrock auth_mode assume_role needs a role_arn (arn:aws:iam::ACCOUNT:role/NAME)")
        self._role_key = RoleSessions.key(role_arn, base)
        self._assumed = self.role_sessions.get(self._role_key, self._clock, lambda: self._assume_role(base, role_arn))
        return self._assumed

    def _assume_role(self, base: AwsCredentials, role_arn: str) -> _Session:
        """One STS AssumeRole call, signed with the base credentials for service "sts"."""
        url = f"https://sts.{self.region}.amazonaws.com/"
        form = {
            "Action": "AssumeRole",
            "Version": STS_VERSION,
            "RoleArn": role_arn,
            "RoleSessionName": ROLE_SESSION_NAME,
        }
        body = urlencode(form).encode("ascii")
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        signed = sign_v4("POST", url, headers, body, base, self.region, "sts", self._clock())
        response = self._check(self.client.post(url, content=body, headers={**headers, **signed}))
        return _parse_assume_role(response.text)

    # --- HTTP

    @property
    def endpoint(self) -> str:
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise _invalid(f"Bedrock base URL must start with http:// or https://; got {self.base_url!r}")
        return self.base_url or f"https://bedrock-runtime.{self.region}.amazonaws.com"

    def _check(self, response: httpx.Response) -> httpx.Response:
        self.rate_limits = rate_limit_headers(response.headers)
        if response.is_success:
            return response
        error = aws_error(response, *self.secrets)
        if error.provider_code in _EXPIRED_CODES and self._role_key:
            self.role_sessions.forget(self._role_key)  # the next call assumes the role afresh
        raise error

    def _signed(self, operation: str, payload: dict[str, Any], accept: str) -> tuple[str, bytes, dict[str, str]]:
        """URL, body and headers of one signed call to ``/model/{modelId}/{operation}``."""
        url = f"{self.endpoint}/model/{quote(self.model_name, safe='')}/{operation}"
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        signed = sign_v4("POST", url, headers, body, self.aws_credentials(), self.region, "bedrock", self._clock())
        return url, body, {**headers, "Accept": accept, **signed}

    def _call(self, operation: str, payload: dict[str, Any]) -> tuple[dict[str, Any], httpx.Headers]:
        url, body, headers = self._signed(operation, payload, "application/json")
        response = self._check(self.client.post(url, content=body, headers=headers))
        data = json_body(response)
        if not isinstance(data, dict):
            raise ProviderError(f"/{operation} answered with JSON that is not an object", code=ErrorCode.SERVER)
        return data, response.headers


# --------------------------------------------------------------------------- Converse: requests

_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)
EMPTY_TOOL_RESULT = "(no output)"
# The inference parameters Converse takes, by our (OpenAI) names; the others are dropped.
_INFERENCE_NAMES = {"max_tokens": "maxTokens", "temperature": "temperature", "top_p": "topP"}


def _image_block(image_url: Any) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    match = _DATA_URL.fullmatch(str(url or "").strip())
    if not match:
        raise _invalid("Bedrock Converse takes images as data: URLs (base64); links are not fetched")
    image_format = _IMAGE_FORMATS.get(match["mime"].lower())
    if image_format is None:
        raise _invalid(f"Bedrock Converse takes png, jpeg, gif or webp images; got {match['mime']}")
    return {"image": {"format": image_format, "source": {"bytes": "".join(match["data"].split())}}}


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI content (a string or parts) -> Converse blocks; blank text is left out (Bedrock refuses it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content.strip() else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if str(part.get("text") or "").strip():
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url")))
        else:
            raise _invalid(f"Bedrock Converse cannot take a content part of type {kind!r}")
    return blocks


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _tool_use_blocks(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blocks = []
    for call in tool_calls:
        function = call.get("function") or {}
        if not call.get("id") or not function.get("name"):
            raise _invalid("an assistant tool call needs an id and a function name")
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": call["id"],
                    "name": function["name"],
                    "input": parse_arguments(function.get("arguments")),
                }
            }
        )
    return blocks


def _turn(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """One OpenAI message -> (Converse role, content blocks); a tool result is a user turn."""
    role = message.get("role")
    if role == "tool":
        if not message.get("tool_call_id"):
            raise _invalid("a tool message needs its tool_call_id")
        text = _text_of(message.get("content"))
        # Converse refuses a blank text block, and a tool may well have printed nothing.
        content = [{"text": text if text.strip() else EMPTY_TOOL_RESULT}]
        return "user", [{"toolResult": {"toolUseId": message["tool_call_id"], "content": content}}]
    if role == "user":
        return "user", _content_blocks(message.get("content"))
    if role == "assistant":
        return "assistant", _content_blocks(message.get("content")) + _tool_use_blocks(message.get("tool_calls") or [])
    raise _invalid(f"Bedrock Converse cannot take a message with role {role!r}")


def converse_messages(
    system: str | None, messages: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, turns). System messages join the system prompt; consecutive turns of one
    role are merged (Converse wants user and assistant to alternate, and all the results of one
    round of tool calls in one user turn)."""
    system_blocks = [{"text": system}] if system and system.strip() else []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") == "system":
            text = _text_of(message.get("content"))
            if text.strip():
                system_blocks.append({"text": text})
            continue
        role, blocks = _turn(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system_blocks, turns


def inference_config(model_name: str, gen_conf: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI-style generation settings -> ``inferenceConfig``. Penalties, seed and response_format
    have no Converse field and are dropped. Anthropic's newer Claude models refuse temperature
    and top_p together, so for Anthropic models top_p goes when temperature is given."""
    conf = gen_conf or {}
    out = {theirs: conf[ours] for ours, theirs in _INFERENCE_NAMES.items() if conf.get(ours) is not None}
    stop = conf.get("stop")
    if stop:
        out["stopSequences"] = [stop] if isinstance(stop, str) else [str(s) for s in stop]
    if "temperature" in out and "topP" in out and "anthropic." in model_name:
        del out["topP"]
    return out


def _tool_config(tools: list[dict[str, Any]] | None, turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``toolConfig`` from OpenAI tools. Converse refuses toolUse/toolResult blocks without one, so
    a history with tool calls but no tools declares the tools it used, with an open schema."""
    specs = []
    for tool in tools or []:
        function = tool.get("function") or {}
        spec: dict[str, Any] = {
            "name": function["name"],
            "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    if not specs:
        used = [b["toolUse"]["name"] for t in turns for b in t["content"] if "toolUse" in b]
        specs = [{"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object"}}}} for n in dict.fromkeys(used)]
    return {"tools": specs} if specs else None


def converse_body(
    model_name: str,
    system: str | None,
    messages: list[dict[str, Any]],
    gen_conf: dict[str, Any] | None,
    tools: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    system_blocks, turns = converse_messages(system, messages)
    body: dict[str, Any] = {"messages": turns}
    if system_blocks:
        body["system"] = system_blocks
    inference = inference_config(model_name, gen_conf)
    if inference:
        body["inferenceConfig"] = inference
    tool_config = _tool_config(tools, turns)
    if tool_config:
        body["toolConfig"] = tool_config
    return body


# --------------------------------------------------------------------------- Converse: answers

# Converse's stopReason -> the OpenAI finish_reason our results carry (others pass unchanged).
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def _finish(stop_reason: Any) -> str | None:
    return FINISH_REASONS.get(stop_reason, stop_reason) if isinstance(stop_reason, str) else None


def _converse_usage(raw: Any, system: str | None, messages: list[dict[str, Any]], answer: str) -> Usage:
    """``usage`` {inputTokens, outputTokens, totalTokens}, else an estimate."""
    reported = None
    if isinstance(raw, dict):
        reported = reported_usage(
            {
                "input_tokens": raw.get("inputTokens"),
                "output_tokens": raw.get("outputTokens"),
                "total_tokens": raw.get("totalTokens"),
            }
        )
    prompt = "\n".join([system or "", message_text(messages)])
    return reported or estimated(estimate_tokens(prompt.strip()), estimate_tokens(answer))


def converse_result(data: dict[str, Any], system: str | None, messages: list[dict[str, Any]]) -> ChatResult:
    with reading("converse"):
        content = data["output"]["message"]["content"]
        text = "".join(block["text"] for block in content if "text" in block)
        calls = [
            ToolCall(
                block["toolUse"]["toolUseId"], block["toolUse"]["name"], parse_arguments(block["toolUse"].get("input"))
            )
            for block in content
            if "toolUse" in block
        ]
    return ChatResult(
        text, _converse_usage(data.get("usage"), system, messages, text), calls, _finish(data.get("stopReason"))
    )


def _stream_exception(headers: dict[str, str], payload: bytes, secrets: tuple[str, ...]) -> ProviderError:
    """An exception frame (``throttlingException``, ``modelStreamErrorException``...) or an error frame."""
    if headers.get(":message-type") == "error":
        return ProviderError(
            scrub(headers.get(":error-message") or "stream error", *secrets), provider_code=headers.get(":error-code")
        )
    name = headers.get(":exception-type") or ""
    message, _ = _parse_aws_error(payload.decode("utf-8", errors="replace"))
    code = name[:1].upper() + name[1:] or None  # throttlingException -> ThrottlingException
    return ProviderError(scrub(message or name, *secrets)[:2000], provider_code=code, code=_known_code(code, message))


@dataclass
class _StreamState:
    calls: dict[int, PendingCall]
    text: list[str]
    stop_reason: Any = None
    usage: Any = None

    def read(self, event: str | None, data: dict[str, Any]) -> str:
        """Fold one event into the state; return the text it adds."""
        if event == "contentBlockStart":
            tool = data["start"].get("toolUse")
            if tool:
                self.calls[int(data["contentBlockIndex"])] = PendingCall(tool["toolUseId"], tool["name"])
        elif event == "contentBlockDelta":
            delta = data["delta"]
            if "toolUse" in delta:
                self.calls.setdefault(int(data["contentBlockIndex"]), PendingCall()).arguments.append(
                    delta["toolUse"].get("input") or ""
                )
            if "text" in delta:
                self.text.append(delta["text"])
                return str(delta["text"])
        elif event == "messageStop":
            self.stop_reason = data.get("stopReason")
        elif event == "metadata":
            self.usage = data.get("usage")
        return ""

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall(c.id, c.name, parse_arguments("".join(c.arguments))) for _, c in sorted(self.calls.items())]


def stream_deltas(
    frames: Iterable[tuple[dict[str, str], bytes]],
    system: str | None,
    messages: list[dict[str, Any]],
    secrets: tuple[str, ...] = (),
) -> Iterator[ChatDelta]:
    state = _StreamState({}, [])
    for headers, payload in frames:
        if headers.get(":message-type", "event") != "event":
            raise _stream_exception(headers, payload, secrets)
        data = decode_event(payload)
        with reading("converse-stream"):
            text = state.read(headers.get(":event-type"), data)
        if text:
            yield ChatDelta(text=text)
    usage = _converse_usage(state.usage, system, messages, "".join(state.text))
    yield ChatDelta(tool_calls=state.tool_calls(), usage=usage, finish_reason=_finish(state.stop_reason))


# --------------------------------------------------------------------------- chat and image2text


@register
class BedrockChat(_Bedrock, ChatModel):
    def chat(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ChatResult:
        data, _ = self._call("converse", converse_body(self.model_name, system, messages, gen_conf, tools))
        return converse_result(data, system, messages)

    def chat_stream(
        self,
        system: str | None,
        messages: list[dict[str, Any]],
        gen_conf: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Iterator[ChatDelta]:
        """ConverseStream: text deltas as the frames arrive, then one delta with tool calls, usage
        and finish reason. An exception frame mid-stream raises its ProviderError."""
        payload = converse_body(self.model_name, system, messages, gen_conf, tools)
        url, body, headers = self._signed("converse-stream", payload, "application/vnd.amazon.eventstream")
        with self.client.stream("POST", url, content=body, headers=headers) as response:
            self._check(response)
            yield from stream_deltas(event_frames(response.iter_bytes()), system, messages, self.secrets)


@register
class BedrockImage2Text(_Bedrock, Image2TextModel):
    def describe_with_prompt(self, image: bytes, prompt: str | None, mime_type: str = "image/png") -> TextResult:
        data_url = f"data:{mime_type};base64,{base64.b64encode(image).decode('ascii')}"
        content = [  # the image first, as Anthropic's models prefer
            {"type": "image_url", "image_url": {"url": data_url}},
            {"type": "text", "text": prompt or DEFAULT_IMAGE_PROMPT},
        ]
        messages = [{"role": "user", "content": content}]
        data, _ = self._call("converse", converse_body(self.model_name, None, messages, None, None))
        result = converse_result(data, None, messages)
        return TextResult(result.text, result.usage)


# --------------------------------------------------------------------------- embeddings

COHERE_MAX_TEXTS = 96
TITAN_V2_DIMENSIONS = (256, 512, 1024)
_INPUT_TOKENS_HEADER = "x-amzn-bedrock-input-token-count"


def embedding_family(model_name: str) -> str:
    """The embedding family, ``titan`` or ``cohere``, from the model id (a cross-region prefix such as
    ``us.`` allowed)."""
    if "amazon.titan-embed-text" in model_name:
        return "titan"
    if "cohere.embed" in model_name:
        return "cohere"
    raise _invalid(
        f"Bedrock embeddings support Amazon Titan text (amazon.titan-embed-text-*) and Cohere "
        f"(cohere.embed-*) models; got {model_name!r}"
    )


def _header_tokens(headers: httpx.Headers) -> int:
    try:
        return max(0, int(headers.get(_INPUT_TOKENS_HEADER, "")))
    except ValueError:
        return 0


@register
class BedrockEmbedding(_Bedrock, EmbeddingModel):
    """Titan takes one text a call (a batch is that many calls) and has no query mode; Cohere
    takes up to 96 texts a call and embeds queries with ``input_type: search_query``.
    Options: ``dimensions`` (Titan v2: 256, 512 or 1024)."""

    batch_size = COHERE_MAX_TEXTS

    def _encode_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, "search_document")

    def _encode_query_batch(self, texts: list[str]) -> EmbeddingResult:
        return self._embed(texts, "search_query")

    def _embed(self, texts: list[str], input_type: str) -> EmbeddingResult:
        if embedding_family(self.model_name) == "titan":
            results = [self._titan(text) for text in texts]
        else:
            step = COHERE_MAX_TEXTS
            results = [self._cohere(texts[i : i + step], input_type) for i in range(0, len(texts), step)]
        usage = Usage()
        for result in results:
            usage = usage + result.usage
        return EmbeddingResult(np.concatenate([r.vectors for r in results], axis=0), usage)

    def _titan_body(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"inputText": text}
        if "titan-embed-text-v2" in self.model_name:
            dimensions = self.options.get("dimensions")
            if dimensions is not None:
                if int(dimensions) not in TITAN_V2_DIMENSIONS:
                    raise _invalid(f"Titan v2 dimensions must be one of {TITAN_V2_DIMENSIONS}; got {dimensions}")
                body["dimensions"] = int(dimensions)
            body["normalize"] = True
        return body

    def _titan(self, text: str) -> EmbeddingResult:
        data, headers = self._call("invoke", self._titan_body(text))
        with reading("invoke"):
            vector = np.asarray([data["embedding"]], dtype=np.float32)
            if vector.ndim != 2 or vector.shape[1] == 0:
                raise ValueError(f"embedding of shape {vector.shape}")
        tokens = data.get("inputTextTokenCount")
        tokens = tokens if isinstance(tokens, int) and tokens > 0 else _header_tokens(headers)
        return EmbeddingResult(vector, Usage(tokens, 0, tokens) if tokens else estimated(estimate_tokens(text)))

    def _cohere(self, texts: list[str], input_type: str) -> EmbeddingResult:
        data, headers = self._call("invoke", {"texts": texts, "input_type": input_type})
        with reading("invoke"):
            embeddings = data["embeddings"]
            if isinstance(embeddings, dict):  # asked for by type (embed v4 answers so): {"float": [...]}
                embeddings = embeddings["float"]
            vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise ProviderError(
                f"/invoke returned {len(vectors)} vectors for {len(texts)} texts", code=ErrorCode.SERVER
            )
        tokens = _header_tokens(headers)
        return EmbeddingResult(
            vectors, Usage(tokens, 0, tokens) if tokens else estimated(sum(map(estimate_tokens, texts)))
        )
