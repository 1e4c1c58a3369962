"""Settings from the environment, all optional (README.md's settings table lists the variables and
their defaults; tests/test_settings_defaults.py keeps the two in step).

:func:`load_settings` reads them; each process does so once at start-up, for the runtime it
builds (tasks.runtime), whose activation makes them what :func:`get_settings` returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from conf.errors import UserError


class SettingsError(UserError):
    """A setting has a value we cannot use; the message names the variable."""


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None


def _env_bool(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    broker_url: str
    secret_keys: tuple[str, ...]  # empty: the embedded default creates one in data_dir
    llm_max_retries: int
    llm_base_delay: float
    llm_max_delay: float
    llm_timeout_seconds: float
    job_max_inflight_chunks: int
    embedding_chunk_size: int
    max_text_chars: int
    max_job_items: int
    stall_seconds: float
    flower_basic_auth: str
    key_validation_timeout: float
    key_revalidate_seconds: float
    key_revalidate_spread_seconds: float
    allow_private_base_urls: bool
    tenant_defaults_path: str
    langfuse_public_key: str
    langfuse_secret_key: str
    langfuse_host: str
    limits_url: str  # "" = the broker's Redis, else the database; "off": no fleet-wide limiter
    limit_max_wait: float

    @property
    def limiter_url(self) -> str:
        """Where the fleet-wide limiter keeps its state: a redis:// URL, "database", or "off"."""
        if self.limits_url:
            return self.limits_url
        return self.broker_url if self.broker_url.startswith(("redis://", "rediss://")) else "database"

    @property
    def limit_slot_ttl(self) -> float:
        """How long a concurrency slot outlives a worker that died holding it."""
        return 2 * self.llm_timeout_seconds + 10

    api_host: str
    api_port: int
    api_max_upload_bytes: int
    api_wait_seconds: float
    # The embedding cache: "tenant" (each tenant its own; the default), "shared" (between
    # tenants), "off"; and the most vectors one scope keeps (least recently used evicted).
    embed_cache: str = "tenant"
    embed_cache_max_entries: int = 1_000_000
    # Prometheus: the worker's /metrics port (0: not served) and its basic auth (user:password).
    metrics_port: int = 0
    metrics_basic_auth: str = ""
    metrics_host: str = "127.0.0.1"

    @property
    def chunk_lease_seconds(self) -> float:
        """How long a running chunk is held without a renewal (renewed every third of it while
        its worker lives): one provider call and then some, so only a dead worker loses it."""
        return 2 * self.llm_timeout_seconds + 10

    # Input limits (tasks/validation.py): each refusal names the variable.
    max_custom_id_chars: int = 256  # job_items.custom_id is varchar(256): the most it can be
    max_payload_bytes: int = 4 * 1024 * 1024  # one item's text + JSON payload; also the longest input line
    max_blob_bytes: int = 25 * 1024 * 1024  # one image / audio item (providers' own caps are 20-25 MB)
    max_payload_depth: int = 32  # nesting of a JSON payload (or a .jsonl line)
    max_chat_messages: int = 1000  # messages in one chat item
    # Retention (tasks/maintenance.py purge_expired): a finished job's items are deleted this
    # long after it ended (0: kept forever), this many rows per transaction.
    job_retention_seconds: float = 7 * 86400.0
    purge_batch_rows: int = 5000

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url.startswith("sqla+")

    @property
    def broker_visibility_timeout(self) -> int:
        """Above the longest retry countdown plus one call, so Redis never redelivers a waiting retry."""
        return int(max(3600.0, 2 * (self.llm_max_delay + self.llm_timeout_seconds)))

    @property
    def tracing_enabled(self) -> bool:
        return bool(self.langfuse_public_key and self.langfuse_secret_key)


def load_settings() -> Settings:
    """The settings the environment holds now (raises SettingsError naming a bad variable)."""
    data_dir = Path(os.environ.get("MODELYARD_DATA_DIR", "").strip() or "./.modelyard").resolve()
    database_url = os.environ.get("MODELYARD_DATABASE_URL", "").strip() or f"sqlite:///{data_dir / 'modelyard.sqlite'}"
    broker_url = os.environ.get("MODELYARD_BROKER_URL", "").strip() or f"sqla+sqlite:///{data_dir / 'broker.sqlite'}"
    secrets = tuple(k.strip() for k in os.environ.get("MODELYARD_SECRET_KEY", "").split(",") if k.strip())
    s = Settings(
        data_dir=data_dir,
        database_url=database_url,
        broker_url=broker_url,
        secret_keys=secrets,
        llm_max_retries=_env_int("LLM_MAX_RETRIES", 5),
        llm_base_delay=_env_float("LLM_BASE_DELAY", 2.0),
        llm_max_delay=_env_float("LLM_MAX_DELAY", 300.0),
        llm_timeout_seconds=_env_float("LLM_TIMEOUT_SECONDS", 60.0),
        job_max_inflight_chunks=_env_int("MODELYARD_JOB_MAX_INFLIGHT", 8),
        embedding_chunk_size=_env_int("MODELYARD_EMBEDDING_CHUNK_SIZE", 64),
        max_text_chars=_env_int("MODELYARD_MAX_TEXT_CHARS", 200_000),
        max_job_items=_env_int("MODELYARD_MAX_JOB_ITEMS", 2_000_000),
        stall_seconds=_env_float("MODELYARD_STALL_SECONDS", 600.0),
        flower_basic_auth=os.environ.get("MODELYARD_FLOWER_BASIC_AUTH", "").strip(),
        key_validation_timeout=_env_float("MODELYARD_KEY_VALIDATION_TIMEOUT", 20.0),
        key_revalidate_seconds=_env_float("MODELYARD_KEY_REVALIDATE_SECONDS", 86400.0),
        key_revalidate_spread_seconds=_env_float("MODELYARD_KEY_REVALIDATE_SPREAD_SECONDS", 3600.0),
        allow_private_base_urls=_env_bool("MODELYARD_ALLOW_LINK_LOCAL_BASE_URLS"),
        tenant_defaults_path=os.environ.get("MODELYARD_TENANT_DEFAULTS", "").strip(),
        langfuse_public_key=os.environ.get("LANGFUSE_PUBLIC_KEY", "").strip(),
        langfuse_secret_key=os.environ.get("LANGFUSE_SECRET_KEY", "").strip(),
        langfuse_host=os.environ.get("LANGFUSE_HOST", "").strip() or "https://cloud.langfuse.com",
        limits_url=os.environ.get("MODELYARD_LIMITS_URL", "").strip(),
        limit_max_wait=_env_float("MODELYARD_LIMIT_MAX_WAIT", 1.0),
        api_host=os.environ.get("MODELYARD_API_HOST", "").strip() or "127.0.0.1",
        api_port=_env_int("MODELYARD_API_PORT", 8000),
        api_max_upload_bytes=_env_int("MODELYARD_API_MAX_UPLOAD_BYTES", 200 * 1024 * 1024),
        api_wait_seconds=_env_float("MODELYARD_API_WAIT_SECONDS", 60.0),
        max_custom_id_chars=_env_int("MODELYARD_MAX_CUSTOM_ID_CHARS", 256),
        max_payload_bytes=_env_int("MODELYARD_MAX_PAYLOAD_BYTES", 4 * 1024 * 1024),
        max_blob_bytes=_env_int("MODELYARD_MAX_BLOB_BYTES", 25 * 1024 * 1024),
        max_payload_depth=_env_int("MODELYARD_MAX_PAYLOAD_DEPTH", 32),
        max_chat_messages=_env_int("MODELYARD_MAX_CHAT_MESSAGES", 1000),
        embed_cache=os.environ.get("MODELYARD_EMBED_CACHE", "").strip().lower() or "tenant",
        embed_cache_max_entries=_env_int("MODELYARD_EMBED_CACHE_MAX_ENTRIES", 1_000_000),
        metrics_port=_env_int("MODELYARD_METRICS_PORT", 0),
        metrics_basic_auth=os.environ.get("MODELYARD_METRICS_BASIC_AUTH", "").strip(),
        metrics_host=os.environ.get("MODELYARD_METRICS_HOST", "").strip() or "127.0.0.1",
        job_retention_seconds=_env_duration("MODELYARD_JOB_RETENTION", 7 * 86400.0),
        purge_batch_rows=_env_int("MODELYARD_PURGE_BATCH_ROWS", 5000),
    )
    if s.embed_cache not in ("tenant", "shared", "off") or s.embed_cache_max_entries < 1:
        raise SettingsError(
            "MODELYARD_EMBED_CACHE must be tenant, shared or off, and MODELYARD_EMBED_CACHE_MAX_ENTRIES at least 1"
        )
    if not 0 <= s.metrics_port < 65536 or (s.metrics_basic_auth and ":" not in s.metrics_basic_auth):
        raise SettingsError(
            "MODELYARD_METRICS_PORT must be a port (0: off) and MODELYARD_METRICS_BASIC_AUTH user:password"
        )
    if s.llm_max_retries < 0:
        raise SettingsError("LLM_MAX_RETRIES must be 0 or more")
    if s.llm_base_delay <= 0 or s.llm_max_delay < s.llm_base_delay:
        raise SettingsError("LLM_BASE_DELAY must be positive and not above LLM_MAX_DELAY")
    if s.job_max_inflight_chunks < 1 or s.embedding_chunk_size < 1:
        raise SettingsError("MODELYARD_JOB_MAX_INFLIGHT and MODELYARD_EMBEDDING_CHUNK_SIZE must be at least 1")
    if s.key_validation_timeout <= 0 or s.key_revalidate_seconds <= 0 or s.key_revalidate_spread_seconds < 0:
        raise SettingsError("MODELYARD_KEY_VALIDATION_TIMEOUT and MODELYARD_KEY_REVALIDATE_SECONDS must be positive")
    if s.limits_url not in ("", "database", "off") and not s.limits_url.startswith(("redis://", "rediss://")):
        raise SettingsError("MODELYARD_LIMITS_URL must be a redis:// URL, 'database' or 'off'")
    if s.limit_max_wait < 0:
        raise SettingsError("MODELYARD_LIMIT_MAX_WAIT must be 0 or more")
    if not 0 < s.api_port < 65536 or s.api_max_upload_bytes < 1 or s.api_wait_seconds <= 0:
        raise SettingsError(
            "MODELYARD_API_PORT must be a port, MODELYARD_API_MAX_UPLOAD_BYTES and MODELYARD_API_WAIT_SECONDS positive"
        )
    if not 1 <= s.max_custom_id_chars <= 256:
        raise SettingsError("MODELYARD_MAX_CUSTOM_ID_CHARS must be between 1 and 256 (the custom_id column's width)")
    if min(s.max_payload_bytes, s.max_blob_bytes, s.max_payload_depth, s.max_chat_messages) < 1:
        raise SettingsError(
            "MODELYARD_MAX_PAYLOAD_BYTES, MODELYARD_MAX_BLOB_BYTES, MODELYARD_MAX_PAYLOAD_DEPTH and "
            "MODELYARD_MAX_CHAT_MESSAGES must be at least 1"
        )
    if s.job_retention_seconds < 0 or s.purge_batch_rows < 1:
        raise SettingsError(
            "MODELYARD_JOB_RETENTION must be 0 (keep forever) or more; MODELYARD_PURGE_BATCH_ROWS at least 1"
        )
    return s


def _env_duration(name: str, default: float) -> float:
    """Seconds, or a number with a unit: 90s, 30m, 12h, 7d."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(raw[-1])
    try:
        return float(raw[:-1] if unit else raw) * (unit or 1)
    except ValueError:
        raise SettingsError(f"{name} must be seconds or a duration like 12h or 7d, got {raw!r}") from None


class NoRuntimeError(RuntimeError):
    """Code that needs the process's runtime ran before one was activated (a bug, not a user error)."""


_active: Settings | None = None


def activate_settings(settings: Settings | None) -> None:
    """Make ``settings`` what :func:`get_settings` returns (None: no settings; called by tasks.runtime)."""
    global _active
    _active = settings


def get_settings() -> Settings:
    """The active runtime's settings."""
    if _active is None:
        raise NoRuntimeError("no runtime is active in this process (build one with tasks.runtime.Runtime)")
    return _active
