"""Reading the usage ledger."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.tables import tenant_llm, usage_events


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
