"""Every setting at its documented default: the README's settings table against what the code
reads from an empty environment, and the embedded defaults a fresh machine runs on (the data
dir under the current directory, its SQLite database and its secret key file, mode 0600).

The suite's own fixtures override LLM_*, MODELYARD_STALL_SECONDS and the URLs for speed and
isolation; the tests here (and those in test_e2e_limits.py and test_broker_restart.py that
unset them) are where the defaults themselves run."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PREFIXES = ("MODELYARD_", "LLM_", "LANGFUSE_")
# README variable -> Settings attribute, for every default the table states as a number.
NUMERIC = {
    "LLM_MAX_RETRIES": "llm_max_retries",
    "LLM_BASE_DELAY": "llm_base_delay",
    "LLM_MAX_DELAY": "llm_max_delay",
    "LLM_TIMEOUT_SECONDS": "llm_timeout_seconds",
    "MODELYARD_JOB_MAX_INFLIGHT": "job_max_inflight_chunks",
    "MODELYARD_EMBEDDING_CHUNK_SIZE": "embedding_chunk_size",
    "MODELYARD_MAX_TEXT_CHARS": "max_text_chars",
    "MODELYARD_MAX_JOB_ITEMS": "max_job_items",
    "MODELYARD_STALL_SECONDS": "stall_seconds",
    "MODELYARD_KEY_VALIDATION_TIMEOUT": "key_validation_timeout",
    "MODELYARD_KEY_REVALIDATE_SECONDS": "key_revalidate_seconds",
    "MODELYARD_KEY_REVALIDATE_SPREAD_SECONDS": "key_revalidate_spread_seconds",
    "MODELYARD_MAX_CUSTOM_ID_CHARS": "max_custom_id_chars",
    "MODELYARD_MAX_PAYLOAD_BYTES": "max_payload_bytes",
    "MODELYARD_MAX_BLOB_BYTES": "max_blob_bytes",
    "MODELYARD_MAX_PAYLOAD_DEPTH": "max_payload_depth",
    "MODELYARD_MAX_CHAT_MESSAGES": "max_chat_messages",
    "MODELYARD_LIMIT_MAX_WAIT": "limit_max_wait",
    "MODELYARD_API_PORT": "api_port",
    "MODELYARD_API_MAX_UPLOAD_BYTES": "api_max_upload_bytes",
    "MODELYARD_API_WAIT_SECONDS": "api_wait_seconds",
    "MODELYARD_EMBED_CACHE_MAX_ENTRIES": "embed_cache_max_entries",
    "MODELYARD_METRICS_PORT": "metrics_port",
    "MODELYARD_PURGE_BATCH_ROWS": "purge_batch_rows",
}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}


def _readme_defaults() -> dict[str, str]:
    rows = re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", (ROOT / "README.md").read_text(), re.MULTILINE)
    return {name: cell.strip() for name, cell in rows}


def test_the_readme_states_the_defaults_the_code_uses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from conf.settings import load_settings

    for name in list(os.environ):
        if name.startswith(PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    documented = _readme_defaults()
    for variable, attribute in NUMERIC.items():
        stated = documented[variable].split()[0]  # "0 (off)" -> "0"
        assert float(stated) == float(getattr(settings, attribute)), f"{variable}: README {stated}"
    assert documented["LLM_MAX_RETRIES"] == "5" and documented["MODELYARD_STALL_SECONDS"] == "600"
    assert settings.data_dir == tmp_path / ".modelyard" and documented["MODELYARD_DATA_DIR"] == "`./.modelyard`"
    assert settings.database_url == f"sqlite:///{tmp_path / '.modelyard' / 'modelyard.sqlite'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / '.modelyard' / 'broker.sqlite'}"
    assert settings.secret_keys == () and settings.limiter_url == "database"
    assert settings.broker_visibility_timeout == 3600  # above the longest countdown at the defaults


def test_a_fresh_directory_runs_on_the_embedded_defaults(tmp_path: Path) -> None:
    """No MODELYARD_* variable at all, as on a user's first run: the data dir is ./.modelyard,
    the database a SQLite file in it, and the secret key a file only its owner can read."""

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", *args],
            check=False,
            cwd=tmp_path,
            env=_clean_env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done

    provider_key = "sk-default-dir-key-0123456789"
    cli("db", "upgrade")
    cli("tenant", "create", "first", "--json")
    cli(
        "llm",
        "add",
        "--tenant",
        "first",
        "--model",
        "text-embedding-3-small@OpenAI",
        "--type",
        "embedding",
        "--api-key",
        "-",
        "--skip-check",
        stdin=provider_key + "\n",
    )
    data = tmp_path / ".modelyard"
    database = data / "modelyard.sqlite"
    assert database.is_file() and provider_key.encode() not in database.read_bytes()  # stored encrypted
    assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600
    assert "…6789" in cli("my-llms", "--tenant", "first", "--details").stdout
