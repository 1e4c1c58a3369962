"""API keys at rest (models/crypto.py): Fernet, several keys for rotation, clear errors."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from models import crypto

UseKeys = Callable[..., None]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runtime_from_env: Callable[[], object]) -> UseKeys:
    """Sets MODELYARD_SECRET_KEY to the keys given (none: unset) and starts a process's runtime on it."""

    def use_keys(*keys: str) -> None:
        monkeypatch.setenv("MODELYARD_DATA_DIR", str(tmp_path))
        if keys:
            monkeypatch.setenv("MODELYARD_SECRET_KEY", ",".join(keys))
        else:
            monkeypatch.delenv("MODELYARD_SECRET_KEY", raising=False)
        runtime_from_env()

    use_keys()
    return use_keys


def test_round_trip_and_ciphertext_hides_the_key(env: UseKeys) -> None:
    env(Fernet.generate_key().decode())
    token = crypto.encrypt("sk-live-1234567890")
    assert "sk-live" not in token
    assert crypto.decrypt(token) == "sk-live-1234567890"


def test_embedded_default_creates_a_private_key_file_once(env: UseKeys, tmp_path: Path) -> None:
    token = crypto.encrypt("secret-value")
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    env()  # a new process reads the same file
    assert crypto.decrypt(token) == "secret-value"


def test_old_rows_decrypt_after_a_new_key_is_prepended_and_rotate_moves_them(env: UseKeys) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env(old)
    token = crypto.encrypt("sk-abc-123456")
    env(new, old)
    assert crypto.decrypt(token) == "sk-abc-123456"
    rotated = crypto.rotate(token)
    env(new)  # the old key is retired
    assert crypto.decrypt(rotated) == "sk-abc-123456"
    with pytest.raises(crypto.SecretKeyError, match="MODELYARD_SECRET_KEY"):
        crypto.decrypt(token)


def test_malformed_setting_names_the_variable(env: UseKeys) -> None:
    env("not-a-fernet-key")
    with pytest.raises(crypto.SecretKeyError, match="MODELYARD_SECRET_KEY must be"):
        crypto.encrypt("x")
