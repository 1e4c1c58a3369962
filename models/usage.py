"""The usage ledger: one ``usage_events`` row per successful provider call, unique on the
task attempt, with ``tenant_llm.used_tokens`` moved in the same transaction; and its summary."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, case, func, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from conf.errors import InvalidRequest
from models.dml import rowcount
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
    cost: float | None = None,
    cached: bool = False,
    cached_tokens: int = 0,
) -> bool:
    """Append the event (``cost`` in USD at the moment's price, None when unpriced; a
    ``cached`` event bills nothing and notes in ``cached_tokens`` what the cache saved)."""
    values = {
        "task_attempt": task_attempt,
        "tenant_id": tm.tenant_id,
        "tenant_llm_id": tm.id,
        "job_id": job_id,
        "model_type": tm.model_type,
        "model": tm.full_name,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "estimated": usage.estimated,
        "latency_ms": latency_ms,
        "cost": cost,
        "cached": cached,
        "cached_tokens": cached_tokens,
    }
    if session.get_bind().dialect.name == "postgresql":
        return bool(session.scalar(_RECORD_USAGE_PG, values))
    event = sqlite_insert(usage_events).values(**values).on_conflict_do_nothing(index_elements=["task_attempt"])
    if rowcount(session, event) == 0:
        return False
    session.execute(
        update(tenant_llm)
        .where(tenant_llm.c.id == tm.id)
        .values(used_tokens=tenant_llm.c.used_tokens + usage.total_tokens)
    )
    return True


# Postgres, on every chunk: one round trip, one statement that is not rebuilt per call. The
# counter moves only if the event was inserted (a conflict means the attempt was counted).
_RECORD_USAGE_PG = text(
    "WITH inserted AS ("
    "INSERT INTO usage_events (task_attempt, tenant_id, tenant_llm_id, job_id, model_type, model,"
    " prompt_tokens, completion_tokens, total_tokens, estimated, latency_ms, cost, cached, cached_tokens)"
    " VALUES (:task_attempt, :tenant_id, :tenant_llm_id, :job_id, :model_type, :model,"
    " :prompt_tokens, :completion_tokens, :total_tokens, :estimated, :latency_ms, :cost, :cached, :cached_tokens)"
    " ON CONFLICT (task_attempt) DO NOTHING RETURNING id), "
    "counter AS (UPDATE tenant_llm SET used_tokens = used_tokens + :total_tokens"
    " WHERE id = :tenant_llm_id AND EXISTS (SELECT FROM inserted)) "
    "SELECT count(*) FROM inserted"
)


GROUPS = ("model", "day", "job")


def _ledger_sums() -> list[Any]:
    ev = usage_events.c
    return [
        func.count().label("calls"),
        func.sum(ev.cached.cast(Integer)).label("cached_calls"),
        func.sum(ev.prompt_tokens).label("prompt_tokens"),
        func.sum(ev.completion_tokens).label("completion_tokens"),
        func.sum(ev.total_tokens).label("total_tokens"),
        func.sum(ev.cached_tokens).label("cached_tokens"),
        func.sum(ev.estimated.cast(Integer)).label("estimated_calls"),
        func.sum(ev.cost).label("cost"),
        func.sum(case((ev.cost.is_(None) & ~ev.cached, 1), else_=0)).label("unpriced_calls"),
    ]


def _sums(row: Any) -> dict[str, Any]:
    return {
        "calls": int(row.calls or 0) - int(row.cached_calls or 0),  # provider calls
        "cached_calls": int(row.cached_calls or 0),  # chunks (or parts) served from the embedding cache
        "prompt_tokens": int(row.prompt_tokens or 0),
        "completion_tokens": int(row.completion_tokens or 0),
        "total_tokens": int(row.total_tokens or 0),
        "cached_tokens": int(row.cached_tokens or 0),
        "estimated_calls": int(row.estimated_calls or 0),
        "cost": round(float(row.cost or 0.0), 10),
        "unpriced_calls": int(row.unpriced_calls or 0),
    }


def usage_report(
    session: Session, tenant_id: str, *, by: str = "model", since: datetime | None = None, until: datetime | None = None
) -> list[dict[str, Any]]:
    """The ledger summed per model, per UTC day or per job, over ``[since, until)``: provider
    calls, tokens, cost (USD at each call's price), and what the embedding cache served."""
    if by not in GROUPS:
        raise InvalidRequest(f"--by must be one of {', '.join(GROUPS)}, not {by!r}")
    ev = usage_events.c
    if by == "day":
        moment = (
            func.timezone("UTC", ev.created_at) if session.get_bind().dialect.name == "postgresql" else ev.created_at
        )
        keys = [func.date(moment).label("day")]
    elif by == "job":
        keys = [ev.job_id.label("job_id"), ev.model.label("model")]
    else:
        keys = [ev.model.label("model"), ev.model_type.label("model_type")]
    query = select(*keys, *_ledger_sums()).where(ev.tenant_id == tenant_id)
    if since is not None:
        query = query.where(ev.created_at >= since)
    if until is not None:
        query = query.where(ev.created_at < until)
    rows = session.execute(query.group_by(*keys).order_by(*keys))
    return [
        {**{k.name: (str(getattr(r, k.name)) if k.name == "day" else getattr(r, k.name)) for k in keys}, **_sums(r)}
        for r in rows
    ]


def usage_summary(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    """Per configured model: the ledger's sums (as :func:`usage_report`) and the running
    ``used_tokens`` counter."""
    ledger = {(r["model"], r["model_type"]): r for r in usage_report(session, tenant_id)}
    empty = dict.fromkeys(
        (
            "calls",
            "cached_calls",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cached_tokens",
            "estimated_calls",
            "unpriced_calls",
        ),
        0,
    )
    out = []
    for tm in session.execute(
        select(tenant_llm)
        .where(tenant_llm.c.tenant_id == tenant_id)
        .order_by(tenant_llm.c.factory, tenant_llm.c.llm_name)
    ):
        model = f"{tm.llm_name}@{tm.factory}"
        row = ledger.get((model, tm.model_type)) or {**empty, "cost": 0.0}
        out.append({**row, "model": model, "model_type": tm.model_type, "used_tokens": tm.used_tokens})
    return out


def parse_moment(value: str | None, name: str) -> datetime | None:
    """``2026-12-01`` or an ISO 8601 moment (UTC unless it says otherwise), for ``--since``/``--until``."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequest(f"{name} must be a date (2026-12-01) or an ISO 8601 time, not {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
