"""API keys at rest: Fernet tokens under ``MODELYARD_SECRET_KEY``.

Several comma-separated keys (newest first) form a MultiFernet: the newest encrypts,
all of them decrypt, so old rows stay readable while ``keys rotate`` re-encrypts them.
With no setting, the embedded default creates a key file (mode 0600) in the data dir.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from conf.errors import UserError
from conf.settings import get_settings


class SecretKeyError(UserError):
    """The secret key setting is missing, malformed, or does not match the stored keys."""


def _key_file(data_dir: Path) -> Path:
    return data_dir / "secret.key"


def _embedded_key(data_dir: Path) -> str:
    path = _key_file(data_dir)
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(Fernet.generate_key().decode())
    return path.read_text().strip()


def _cipher() -> MultiFernet:
    return MultiFernet(_fernets())


def _keys() -> tuple[str, ...]:
    settings = get_settings()
    return settings.secret_keys or (_embedded_key(settings.data_dir),)


@functools.lru_cache(maxsize=1)
def _fernets() -> tuple[Fernet, ...]:
    """One Fernet per configured key, newest first."""
    keys = _keys()
    try:
        return tuple(Fernet(k.encode()) for k in keys)
    except (ValueError, TypeError):
        raise SecretKeyError(
            "MODELYARD_SECRET_KEY must be one or more comma-separated Fernet keys "
            "(make one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        ) from None


def is_current(token: str) -> bool:
    """Whether the newest key (the first in MODELYARD_SECRET_KEY) encrypted this token."""
    try:
        _fernets()[0].decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def keyed_hash(*parts: str) -> str:
    """An HMAC-SHA256 of ``parts`` under the newest secret key: names a provider key (the
    limiter's buckets) without revealing it, even to someone who can read Redis."""
    _fernets()  # the same clear error for a malformed secret
    mac = hmac.new(b"modelyard-limits:" + _keys()[0].encode(), digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return mac.hexdigest()[:40]


def reset_cipher() -> None:
    _fernets.cache_clear()


def encrypt(plaintext: str) -> str:
    return _cipher().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _cipher().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            "a stored API key cannot be decrypted with MODELYARD_SECRET_KEY: "
            "the setting is missing the key it was encrypted with"
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt under the newest key (no-op in meaning; new token bytes)."""
    try:
        return _cipher().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError("a stored API key cannot be decrypted with MODELYARD_SECRET_KEY") from None
