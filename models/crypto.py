"""API keys at rest: Fernet tokens under ``MODELYARD_SECRET_KEY``.

Several comma-separated keys (newest first) form a MultiFernet: the newest encrypts,
all of them decrypt, so old rows stay readable while ``keys rotate`` re-encrypts them.
With no setting, the embedded default creates a key file (mode 0600) in the data dir.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from conf.errors import UserError
from conf.settings import NoRuntimeError, Settings


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


class Cipher:
    """The keys of one runtime's settings. They are read on first use (the embedded default's
    key file is made then), so that a malformed setting fails the command that needs a key."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._fernets: tuple[Fernet, ...] | None = None
        self._lock = threading.Lock()

    def keys(self) -> tuple[str, ...]:
        return self._settings.secret_keys or (_embedded_key(self._settings.data_dir),)

    def fernets(self) -> tuple[Fernet, ...]:
        """One Fernet per configured key, newest first."""
        with self._lock:
            if self._fernets is None:
                try:
                    self._fernets = tuple(Fernet(k.encode()) for k in self.keys())
                except (ValueError, TypeError):
                    raise SecretKeyError(
                        "MODELYARD_SECRET_KEY must be one or more comma-separated Fernet keys (make one with: "
                        "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
                    ) from None
            return self._fernets

    def multi(self) -> MultiFernet:
        return MultiFernet(self.fernets())


_active: Cipher | None = None


def activate_cipher(cipher: Cipher | None) -> None:
    """Make ``cipher`` the one this module's functions use (called by tasks.runtime)."""
    global _active
    _active = cipher


def _cipher() -> Cipher:
    if _active is None:
        raise NoRuntimeError("no runtime is active in this process (build one with tasks.runtime.Runtime)")
    return _active


def is_current(token: str) -> bool:
    """Whether the newest key (the first in MODELYARD_SECRET_KEY) encrypted this token."""
    try:
        _cipher().fernets()[0].decrypt(token.encode())
    except InvalidToken:
        return False
    return True


def keyed_hash(*parts: str) -> str:
    """An HMAC-SHA256 of ``parts`` under the newest secret key: names a provider key (the
    limiter's buckets) without revealing it, even to someone who can read Redis."""
    cipher = _cipher()
    cipher.fernets()  # the same clear error for a malformed secret
    mac = hmac.new(b"modelyard-limits:" + cipher.keys()[0].encode(), digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part.encode("utf-8", "surrogatepass") + b"\0")
    return mac.hexdigest()[:40]


def encrypt(plaintext: str) -> str:
    return _cipher().multi().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _cipher().multi().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            "a stored API key cannot be decrypted with MODELYARD_SECRET_KEY: "
            "the setting is missing the key it was encrypted with"
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt under the newest key (no-op in meaning; new token bytes)."""
    try:
        return _cipher().multi().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError("a stored API key cannot be decrypted with MODELYARD_SECRET_KEY") from None
