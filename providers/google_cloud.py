"""Vertex AI serving Google's Gemini models ("Google Cloud"), signed in as a service account.

The request and answer are Gemini's (:mod:`providers.gemini`); only the URL and the auth differ::

    POST https://{region}-aiplatform.googleapis.com/v1/projects/{project}/locations/{region}
         /publishers/google/models/{model}:generateContent          (region "global": no prefix)
    Authorization: Bearer {access token}

The access token comes from the OAuth 2.0 JWT-bearer grant (RFC 7523), as Google documents it
for service accounts: a JWT signed RS256 with the key's ``private_key`` (header ``kid`` = its
``private_key_id``; claims ``iss`` = ``client_email``, ``scope`` = cloud-platform, ``aud`` =
``token_uri``, ``iat``, ``exp`` = iat + 3600) is posted as a form to the key's ``token_uri``::

    POST https://oauth2.googleapis.com/token
         grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion={jwt}
    -> {"access_token", "expires_in", "token_type": "Bearer"}

A token is kept per key, process-wide, until five minutes before it expires; one lock per key
makes concurrent callers wait for one exchange instead of racing to make many.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import quote, urlsplit

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.base import CredentialField
from providers.errors import ErrorCode, ProviderError, scrub
from providers.gemini import GeminiChat, GeminiImage2Text, GeminiWire
from providers.http import json_body, parse_retry_after, rate_limit_headers
from providers.registry import register
from providers.wire import (
    reading,
)

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # seconds; Google's maximum
REFRESH_MARGIN = 300.0  # fetch a new token this long before the old one expires
DEFAULT_REGION = "global"

_REGION = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# Project ids, also the older domain-scoped form "example.com:my-project".
_PROJECT = re.compile(r"(?:[a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _bad_key(message: str) -> ProviderError:
    return ProviderError(f"Google Cloud service account key: {message}", code=ErrorCode.AUTHENTICATION)


@dataclass(frozen=True)
class ServiceAccount:
    """The fields of a service account JSON key that signing in needs."""

    client_email: str
    private_key: str
    private_key_id: str
    token_uri: str
    project_id: str

    @classmethod
    def from_json(cls, text: str) -> ServiceAccount:
        try:
            raw = json.loads(text)
        except ValueError:
            raise _bad_key("not valid JSON") from None
        if not isinstance(raw, dict) or raw.get("type") != "service_account":
            raise _bad_key('not a key of "type": "service_account"')
        missing = [k for k in ("client_email", "private_key", "private_key_id", "token_uri") if not raw.get(k)]
        if missing:
            raise _bad_key(f"lacks {', '.join(missing)}")
        token_uri = str(raw["token_uri"])
        parts = urlsplit(token_uri)
        host = parts.hostname or ""
        # The JWT goes where the key says; only to Google's token endpoints.
        if parts.scheme != "https" or not (host.endswith(".googleapis.com") or host == "accounts.google.com"):
            raise _bad_key(f"token_uri {token_uri!r} is not a Google token endpoint")
        return cls(
            str(raw["client_email"]),
            str(raw["private_key"]),
            str(raw["private_key_id"]),
            token_uri,
            str(raw.get("project_id") or ""),
        )

    @property
    def cache_key(self) -> str:
        """Names this key exactly: the private key is part of it, so a look-alike key with the
        same email and id but another private key never receives the real key's token."""
        material = "\n".join((self.client_email, self.private_key_id, self.token_uri, self.private_key))
        return hashlib.sha256(material.encode()).hexdigest()


def signed_jwt(account: ServiceAccount, now: float) -> str:
    """The RS256-signed assertion for the JWT-bearer grant."""
    try:
        key = serialization.load_pem_private_key(account.private_key.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise _bad_key("private_key is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _bad_key("private_key is not an RSA key")
    header = {"alg": "RS256", "typ": "JWT", "kid": account.private_key_id}
    issued = int(now)
    claims = {
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": account.token_uri,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url(signature)}"


def _token_error(response: httpx.Response, *secrets: str | None) -> ProviderError:
    """An OAuth error answer ``{"error": "invalid_grant", "error_description": ...}`` (RFC 6749 5.2)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    code = body.get("error") if isinstance(body.get("error"), str) else None
    message = str(body.get("error_description") or code or response.reason_phrase or f"HTTP {response.status_code}")
    return ProviderError(
        scrub(f"service account sign-in failed: {message}", *secrets)[:2000],
        status=response.status_code,
        provider_code=code,
        retry_after=parse_retry_after(response.headers),
        rate_limits=rate_limit_headers(response.headers),
    )


class AccessTokens:
    """One service account's access token, fetched when missing or about to expire (thread-safe)."""

    def __init__(self, account: ServiceAccount, clock: Callable[[], float] = time.time) -> None:
        self.account = account
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def get(self, client: httpx.Client) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - REFRESH_MARGIN:
                self._token, self._expires_at = self._exchange(client)
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (Google refused it) so that the next call fetches another."""
        with self._lock:
            if self._token == token:
                self._token = None

    @property
    def current(self) -> str | None:
        return self._token

    def _exchange(self, client: httpx.Client) -> tuple[str, float]:
        now = self._clock()
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": signed_jwt(self.account, now)}
        response = client.post(self.account.token_uri, data=form)
        if not response.is_success:
            raise _token_error(response, self.account.private_key, form["assertion"])
        data = json_body(response)
        with reading("token"):
            token = str(data["access_token"])
            lifetime = float(data.get("expires_in") or ASSERTION_LIFETIME)
        return token, now + lifetime


_TOKENS: dict[str, AccessTokens] = {}
_TOKENS_LOCK = threading.Lock()


def access_tokens(account: ServiceAccount) -> AccessTokens:
    """The process-wide token holder for this key (provider instances come and go per job)."""
    with _TOKENS_LOCK:
        holder = _TOKENS.get(account.cache_key)
        if holder is None:
            holder = _TOKENS[account.cache_key] = AccessTokens(account)
        return holder


class VertexWire(GeminiWire):
    """Gemini's wire behind Vertex AI's URLs, with a service account's bearer token."""

    factories = ("Google Cloud",)
    default_base_url = ""  # derived from the region; a configured base URL replaces the host part
    credential_fields = (
        CredentialField("project_id", required=False, secret=False, help="defaults to the key's project_id"),
        CredentialField("region", required=False, secret=False, help=f"e.g. us-central1; default {DEFAULT_REGION}"),
        CredentialField("service_account_json", help="the service account's whole JSON key"),
    )

    @cached_property
    def account(self) -> ServiceAccount:
        return ServiceAccount.from_json(self.credentials.get("service_account_json") or "")

    @property
    def tokens(self) -> AccessTokens:
        return access_tokens(self.account)

    @property
    def secrets(self) -> tuple[str, ...]:
        extra: list[str] = []
        try:
            extra.append(self.account.private_key)
            extra.append(self.tokens.current or "")
        except ProviderError:  # a malformed key: nothing more to hide than the JSON itself
            pass
        return super().secrets + tuple(v for v in extra if v)

    def _location(self) -> tuple[str, str]:
        region = self.credentials.get("region") or DEFAULT_REGION
        project = self.credentials.get("project_id") or self.account.project_id
        if not _REGION.fullmatch(region):
            raise ProviderError(f"Google Cloud region {region!r} is not a region name", code=ErrorCode.INVALID_REQUEST)
        if not _PROJECT.fullmatch(project):
            raise ProviderError(f"Google Cloud project id {project!r} is not valid", code=ErrorCode.INVALID_REQUEST)
        return project, region

    def request_url(self, path: str) -> str:
        project, region = self._location()
        host = "aiplatform.googleapis.com" if region == "global" else f"{region}-aiplatform.googleapis.com"
        root = self.base_url or f"https://{host}"
        model_path = (
            f"v1/projects/{quote(project, safe='')}/locations/{region}/publishers/google/models/{self.model_path()}"
        )
        return f"{root}/{model_path}:{path}"

    def request_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens.get(self.client)}"}

    def check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code == 401:  # expired or revoked: the next call signs in afresh
            sent = response.request.headers.get("authorization", "").removeprefix("Bearer ")
            self.tokens.invalidate(sent)
        return super().check(response)


@register
class GoogleCloudChat(VertexWire, GeminiChat):
    """Gemini chat on Vertex AI."""


@register
class GoogleCloudImage2Text(VertexWire, GeminiImage2Text):
    """Gemini image description on Vertex AI."""
