"""The tables (SQLAlchemy Core), shared by the stores and the Alembic migrations.

Ids: tenants and jobs have short random string ids that users see; everything else has
an integer surrogate key. Vectors are stored as raw little-endian float32 bytes.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite autoincrements only INTEGER PRIMARY KEY; Postgres gets a bigint identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _now() -> Column:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


llm_factories = Table(
    "llm_factories",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("tags", JSON, nullable=False, default=list),
    Column("base_url", String(512), nullable=False, default=""),
    Column("rank", Integer, nullable=False, default=0),
    Column("internal", Boolean, nullable=False, default=False),
)

llms = Table(
    "llms",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("factory", String(128), ForeignKey("llm_factories.name", ondelete="CASCADE"), nullable=False),
    Column("llm_name", String(256), nullable=False),
    Column("model_type", String(32), nullable=False),
    Column("max_tokens", Integer, nullable=False, default=0),
    Column("is_tools", Boolean, nullable=False, default=False),
    Column("tags", JSON, nullable=False, default=list),
    Column("batch_size", Integer),
    Column("dimensions", Integer),
    UniqueConstraint("factory", "llm_name", "model_type"),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(256), nullable=False, unique=True),
    _now(),
)

tenant_llm = Table(
    "tenant_llm",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("factory", String(128), nullable=False),
    Column("llm_name", String(256), nullable=False),
    Column("model_type", String(32), nullable=False),
    Column("api_key_enc", Text),  # Fernet token; NULL for models that need no key
    Column("key_version", Integer, nullable=False, default=1),  # bumped on every key change
    Column("key_hint", String(8)),  # the key's last four characters, for people to tell keys apart
    Column("api_base", String(1024), nullable=False, default=""),
    Column("max_tokens", Integer, nullable=False, default=0),
    Column("used_tokens", BigInteger, nullable=False, default=0),
    Column("status", String(16), nullable=False, default="enabled"),  # enabled | disabled
    Column("key_state", String(16), nullable=False, default="unchecked"),  # unchecked | valid | invalid
    Column("key_checked_at", DateTime(timezone=True)),
    Column("key_error", Text),
    # The tenant's own limits for this model's key (NULL: none set; see tasks/limiter.py).
    Column("rpm_limit", Integer),
    Column("tpm_limit", Integer),
    Column("max_concurrency", Integer),
    _now(),
    UniqueConstraint("tenant_id", "factory", "llm_name", "model_type"),
)

# A tenant's default model per type (models/defaults.py): a row that no longer names one of the
# tenant's enabled models is ignored, so deleting a model needs no cascade here.
tenant_default_models = Table(
    "tenant_default_models",
    metadata,
    Column("tenant_id", String(32), ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
    Column("model_type", String(32), primary_key=True),
    Column("llm_name", String(256), nullable=False),
    Column("factory", String(128), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_llm_id", BigInteger, ForeignKey("tenant_llm.id", ondelete="SET NULL")),
    Column("model_type", String(32), nullable=False),
    Column("model", String(400), nullable=False),  # llm_name@factory
    Column("status", String(16), nullable=False, default="queued"),
    Column("idempotency_key", String(256)),
    Column("options", JSON, nullable=False, default=dict),
    Column("items_total", Integer, nullable=False, default=0),
    Column("items_succeeded", Integer, nullable=False, default=0),
    Column("items_failed", Integer, nullable=False, default=0),
    Column("chunks_total", Integer, nullable=False, default=0),
    Column("chunks_done", Integer, nullable=False, default=0),
    Column("total_tokens", BigInteger, nullable=False, default=0),
    _now(),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    # sha256 of the canonical request (type, model, options, every item): an idempotency key
    # given again with a different request is a conflict, never the old job (tasks/request_hash.py).
    Column("request_hash", String(64)),
    Column("retry_of", String(32)),  # the job whose failed items this job retries (job retry)
    Column("purged_at", DateTime(timezone=True)),  # inputs and results deleted (retention)
    UniqueConstraint("tenant_id", "idempotency_key"),
    Index("ix_jobs_tenant_created", "tenant_id", "created_at"),  # job list, newest first
    Index("ix_jobs_created", "created_at"),
    Index(
        "ix_jobs_finished_unpurged",
        "finished_at",  # the retention sweep's candidates
        postgresql_where=text("purged_at IS NULL"),
        sqlite_where=text("purged_at IS NULL"),
    ),
    Index("ix_jobs_retry_of", "retry_of"),
)

# A chunk is the unit of work one task message carries: a slice of a job's items.
job_chunks = Table(
    "job_chunks",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    # pending|queued (its message sent)|running (claimed: deadline_at is the lease)|succeeded|failed|cancelled
    Column("status", String(16), nullable=False, default="pending"),
    Column("first_item", Integer, nullable=False),  # job_items.seq of its first item
    Column("item_count", Integer, nullable=False),
    Column("releases", Integer, nullable=False, default=0),  # times a message was sent for it
    Column("deadline_at", DateTime(timezone=True)),  # passed: the sweeper sends a new release
    UniqueConstraint("job_id", "seq"),
    Index("ix_job_chunks_status_deadline", "status", "deadline_at"),
    # The next chunk to release, without walking past the job's finished ones.
    Index(
        "ix_job_chunks_pending",
        "job_id",
        "seq",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

job_items = Table(
    "job_items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("custom_id", String(256), nullable=False),
    Column("status", String(16), nullable=False, default="pending"),  # pending|succeeded|failed|cancelled
    Column("text", Text),  # embedding input, chat / tts prompt
    Column("payload", JSON),  # structured input: messages, query + documents, prompt
    Column("blob", LargeBinary),  # binary input: an image, a recording
    Column("vector", LargeBinary),  # float32 embedding
    Column("result", JSON),  # text answers, scores, tool calls
    Column("result_blob", LargeBinary),  # synthesized audio
    Column("error_code", String(32)),
    Column("error_message", Text),
    UniqueConstraint("job_id", "seq"),
    UniqueConstraint("job_id", "custom_id"),
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("task_attempt", String(128), nullable=False, unique=True),  # "<task id>:<retry number>"
    Column("tenant_id", String(32), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_llm_id", BigInteger, ForeignKey("tenant_llm.id", ondelete="SET NULL")),
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="SET NULL")),
    Column("model_type", String(32), nullable=False),
    Column("model", String(400), nullable=False),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("total_tokens", Integer, nullable=False, default=0),
    Column("estimated", Boolean, nullable=False, default=False),
    Column("latency_ms", Float),
    _now(),
    # USD at the prices of the moment of the call (NULL: the model has no price); never rewritten.
    Column("cost", Float),
    # Served from the embedding cache: no provider call, zero billed tokens; cached_tokens is
    # what the provider would have billed (an estimate), so reports show what the cache saved.
    Column("cached", Boolean, nullable=False, default=False, server_default=text("false")),
    Column("cached_tokens", Integer, nullable=False, default=0, server_default=text("0")),
    Index("ix_usage_events_tenant_created", "tenant_id", "created_at"),
)

# The fleet-wide limiter's state when it lives in the database (no Redis): one row per
# bucket (a keyed hash of a provider key, and the model), its state as JSON (tasks/limiter.py).
limiter_buckets = Table(
    "limiter_buckets",
    metadata,
    Column("bucket", String(64), primary_key=True),
    Column("state", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# The HTTP API's tenant tokens: only a hash of the secret part is stored; people see the
# token's name and last characters. A token with no tenant is an operator's (scope admin).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(32), primary_key=True),  # also the token's public prefix
    Column("tenant_id", String(32), ForeignKey("tenants.id", ondelete="CASCADE")),
    Column("name", String(256), nullable=False),
    Column("secret_hash", String(64), nullable=False),  # sha256 hex of the secret part
    Column("hint", String(8), nullable=False),  # the token's last four characters
    Column("scopes", JSON, nullable=False, default=list),
    _now(),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_api_tokens_tenant_id", "tenant_id"),
)

# Files uploaded through the API (OpenAI's /v1/files): the bytes live under the data dir.
api_files = Table(
    "api_files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("filename", String(512), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    _now(),
    Index("ix_api_files_tenant_id", "tenant_id"),
)

# OpenAI batches: each is one modelyard job, with the request's own fields.
api_batches = Table(
    "api_batches",
    metadata,
    Column("job_id", String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(40), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("metadata", JSON),
    Column("encoding_format", String(16)),  # embeddings: float | base64
    _now(),
    Index("ix_api_batches_tenant_created", "tenant_id", "created_at"),
)

# An operator's price for a model (USD per token), over the catalog's conf/prices.json.
model_prices = Table(
    "model_prices",
    metadata,
    Column("model", String(400), primary_key=True),  # llm_name@factory
    Column("input_cost_per_token", Float, nullable=False),
    Column("output_cost_per_token", Float, nullable=False),
    Column("input_cost_per_token_batches", Float),
    Column("output_cost_per_token_batches", Float),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# A tenant's spending limit per day or month, for every model ('') or one. spent_* is what
# the current period has used, with the estimates of calls in flight reserved in advance and
# corrected after them (models/budgets.py): a chunk may start only while it is under the limit.
budgets = Table(
    "budgets",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(32), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("model", String(400), nullable=False, default=""),
    Column("period", String(8), nullable=False),  # day | month (UTC)
    Column("token_limit", BigInteger),
    Column("cost_limit", Float),
    Column("period_start", DateTime(timezone=True), nullable=False),
    Column("spent_tokens", BigInteger, nullable=False, default=0),
    Column("spent_cost", Float, nullable=False, default=0.0),
    _now(),
    UniqueConstraint("tenant_id", "model"),
)

# The embedding cache: vectors by a hash of (factory, model, input type, dimensions, text),
# per scope (a tenant id, or '*' when an operator shares it between tenants).
embedding_cache = Table(
    "embedding_cache",
    metadata,
    Column("scope", String(32), primary_key=True),
    Column("key", LargeBinary(32), primary_key=True),  # sha256
    Column("vector", LargeBinary, nullable=False),
    Column("tokens", Integer, nullable=False, default=0),  # what computing it was billed (estimated)
    Column("used_at", DateTime(timezone=True), nullable=False),  # eviction drops the least recently used
    Index("ix_embedding_cache_scope_used", "scope", "used_at"),
)
