"""The usage ledger: one ``usage_events`` row per successful provider call, unique on the
task attempt, with ``tenant_llm.used_tokens`` moved in the same transaction; and its summary."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models.tables import tenant_llm, usage_events
from models.tenants import TenantModel
from providers.base import Usage


def record_usage(
    session: Session,
    tm: TenantModel,
    usage: Usage,
    *,
    task_attempt: str,
    job_id: str | None = None,
    latency_ms: float | None = None,
) -> bool:
    values = dict(
        task_attempt=task_attempt,
        tenant_id=tm.tenant_id,
        tenant_llm_id=tm.id,
        job_id=job_id,
        model_type=tm.model_type,
        model=tm.full_name,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        estimated=usage.estimated,
        latency_ms=latency_ms,
    )
    if session.get_bind().dialect.name == "postgresql":
        return bool(session.scalar(_RECORD_USAGE_PG, values))
    event = sqlite_insert(usage_events).values(**values).on_conflict_do_nothing(index_elements=["task_attempt"])
    if session.execute(event).rowcount == 0:
        return False
    session.execute(
        update(tenant_llm).where(tenant_llm.c.id == tm.id).values(used_tokens=tenant_llm.c.used_tokens + usage.total_tokens)
    )
    return True


# Postgres, on every chunk: one round trip, one statement that is not rebuilt per call. The
# counter moves only if the event was inserted (a conflict means the attempt was counted).
_RECORD_USAGE_PG = text(
    "WITH inserted AS ("
    "INSERT INTO usage_events (task_attempt, tenant_id, tenant_llm_id, job_id, model_type, model,"
    " prompt_tokens, completion_tokens, total_tokens, estimated, latency_ms)"
    " VALUES (:task_attempt, :tenant_id, :tenant_llm_id, :job_id, :model_type, :model,"
    " :prompt_tokens, :completion_tokens, :total_tokens, :estimated, :latency_ms)"
    " ON CONFLICT (task_attempt) DO NOTHING RETURNING id), "
    "counter AS (UPDATE tenant_llm SET used_tokens = used_tokens + :total_tokens"
    " WHERE id = :tenant_llm_id AND EXISTS (SELECT FROM inserted)) "
    "SELECT count(*) FROM inserted"
)


def usage_summary(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    """Per model: calls, tokens from the ledger, and the running ``used_tokens`` counter."""
    ledger = {
        (r.model, r.model_type): r
        for r in session.execute(
            select(
                usage_events.c.model,
                usage_events.c.model_type,
                func.count().label("calls"),
                func.sum(usage_events.c.prompt_tokens).label("prompt_tokens"),
                func.sum(usage_events.c.completion_tokens).label("completion_tokens"),
                func.sum(usage_events.c.total_tokens).label("total_tokens"),
                func.sum(usage_events.c.estimated.cast(tenant_llm.c.max_tokens.type)).label("estimated_calls"),
            )
            .where(usage_events.c.tenant_id == tenant_id)
            .group_by(usage_events.c.model, usage_events.c.model_type)
        )
    }
    out = []
    for tm in session.execute(select(tenant_llm).where(tenant_llm.c.tenant_id == tenant_id).order_by(tenant_llm.c.factory, tenant_llm.c.llm_name)):
        model = f"{tm.llm_name}@{tm.factory}"
        row = ledger.get((model, tm.model_type))
        out.append({
            "model": model,
            "model_type": tm.model_type,
            "calls": int(row.calls) if row else 0,
            "prompt_tokens": int(row.prompt_tokens or 0) if row else 0,
            "completion_tokens": int(row.completion_tokens or 0) if row else 0,
            "total_tokens": int(row.total_tokens or 0) if row else 0,
            "estimated_calls": int(row.estimated_calls or 0) if row else 0,
            "used_tokens": tm.used_tokens,
        })
    return out
