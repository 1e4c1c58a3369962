"""AWS Signature Version 4 (``AWS4-HMAC-SHA256``), written from AWS's specification and checked
against its published test vectors: the canonical request, the string to sign, the signing key
derived from the secret (date -> region -> service -> ``aws4_request``) and the headers it adds."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

import httpx

ALGORITHM = "AWS4-HMAC-SHA256"
_UNRESERVED = "-_.~"  # with letters and digits: RFC 3986's unreserved set, never percent-encoded


@dataclass(frozen=True)
class AwsCredentials:
    access_key: str
    secret_key: str
    session_token: str | None = None  # temporary (STS) credentials carry one


def _encode(text: str, safe: str = "") -> str:
    return quote(text, safe=_UNRESERVED + safe)


def _canonical_query(query: str) -> str:
    pairs = []
    for item in query.split("&") if query else []:
        key, _, value = item.partition("=")
        pairs.append((_encode(unquote(key)), _encode(unquote(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(method: str, url: str, headers: Mapping[str, str], payload_hash: str) -> tuple[str, str]:
    """The canonical request and its signed-header list. ``url``'s path is used as sent (already
    percent-encoded) and encoded once more, as SigV4 wants for every service but S3."""
    raw = httpx.URL(url).raw_path.decode("ascii")
    path, _, query = raw.partition("?")
    canonical = {name.lower().strip(): " ".join(str(value).split()) for name, value in headers.items()}
    names = sorted(canonical)
    lines = [
        method.upper(),
        _encode(path or "/", safe="/"),
        _canonical_query(query),
        *(f"{name}:{canonical[name]}" for name in names),
        "",
        ";".join(names),
        payload_hash,
    ]
    return "\n".join(lines), ";".join(names)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """AWS4 + secret -> date -> region -> service -> "aws4_request"."""
    key = _hmac(f"AWS4{secret_key}".encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def sign_v4(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: AwsCredentials,
    region: str,
    service: str,
    now: datetime,
) -> dict[str, str]:
    """The headers that sign this request: ``Host``, ``X-Amz-Date``, ``X-Amz-Security-Token``
    (session credentials only) and ``Authorization``. ``headers`` are the request's other headers
    to sign (send them unchanged); ``body`` is the exact bytes sent."""
    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    added = {"Host": httpx.URL(url).netloc.decode("ascii"), "X-Amz-Date": amz_date}
    if credentials.session_token:
        added["X-Amz-Security-Token"] = credentials.session_token
    request, signed_headers = canonical_request(method, url, {**headers, **added}, hashlib.sha256(body).hexdigest())
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(request.encode("utf-8")).hexdigest()])
    key = signing_key(credentials.secret_key, amz_date[:8], region, service)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    parts = f"Credential={credentials.access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    added["Authorization"] = f"{ALGORITHM} {parts}"
    return added
