"""Per-tenant budgets: a token and/or cost (USD) limit per UTC day or month, for all of a
tenant's models (model ``''``) or one model.

A chunk reserves its estimated spend before its provider call (:func:`reserve`) and the
reservation is corrected to what the call really cost when the usage event is written
(:func:`settle`, same transaction) or given back when the call fails (:func:`release`). The
reservation takes the budget rows ``FOR UPDATE`` in one transaction, so workers check and
reserve one after another: a chunk starts only while every budget it falls under is below
its limit, counting the reservations of the chunks in flight. Spend can pass the limit only
by what the chunks already admitted really use -- at most one chunk per worker slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from conf.catalog import split_model_name
from conf.errors import InvalidRequest, NotFound
from models.dml import rowcount
from models.jobs import utcnow
from models.tables import budgets, usage_events

PERIODS = ("day", "month")


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC period holding ``now``: [start, end)."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def describe(row: Any) -> str:
    """A budget's name in an error line: ``the tenant's daily budget (1,000 tokens)``."""
    limits = [
        f"{row.token_limit:,} tokens" if row.token_limit is not None else "",
        f"{row.cost_limit:g} USD" if row.cost_limit is not None else "",
    ]
    scope = f"{row.model}" if row.model else "all models"
    return (
        f"the {'daily' if row.period == 'day' else 'monthly'} budget for {scope} ({', '.join(x for x in limits if x)})"
    )


def _spent(row: Any, fresh: bool = False) -> bool:
    """Whether the budget is used up (``fresh``: its period has just started, nothing spent)."""
    tokens, cost = (0, 0.0) if fresh else (row.spent_tokens, row.spent_cost)
    return (row.token_limit is not None and tokens >= row.token_limit) or (
        row.cost_limit is not None and cost >= row.cost_limit
    )


def _ledger_spend(session: Session, tenant_id: str, model: str, since: datetime) -> tuple[int, float]:
    ev = usage_events.c
    query = select(func.coalesce(func.sum(ev.total_tokens), 0), func.coalesce(func.sum(ev.cost), 0.0)).where(
        ev.tenant_id == tenant_id, ev.created_at >= since
    )
    if model:
        query = query.where(ev.model == model)
    tokens, cost = session.execute(query).one()
    return int(tokens), float(cost)


MAX_TOKENS = 2**63 - 1  # the token_limit column is a bigint
MAX_COST = 1e12  # USD; also keeps out inf and nan


def set_budget(
    session: Session,
    tenant_id: str,
    *,
    period: str,
    tokens: int | None = None,
    cost: float | None = None,
    model: str = "",
) -> dict[str, Any]:
    """Set (or replace) a budget; what the ledger already shows for the current period counts."""
    if model:
        try:
            split_model_name(model)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
    if period not in PERIODS:
        raise InvalidRequest(f"--period must be day or month, not {period!r}")
    if tokens is None and cost is None:
        raise InvalidRequest("a budget needs --tokens or --cost (or both)")
    if (tokens is not None and not 0 <= tokens <= MAX_TOKENS) or (cost is not None and not 0 <= cost <= MAX_COST):
        raise InvalidRequest(f"budget limits must be 0 or more, at most {MAX_TOKENS:,} tokens and {MAX_COST:,.0f} USD")
    start, _ = period_bounds(period, utcnow())
    spent_tokens, spent_cost = _ledger_spend(session, tenant_id, model, start)
    values = {
        "period": period,
        "token_limit": tokens,
        "cost_limit": cost,
        "period_start": start,
        "spent_tokens": spent_tokens,
        "spent_cost": spent_cost,
    }
    changed = rowcount(
        session, update(budgets).where(budgets.c.tenant_id == tenant_id, budgets.c.model == model).values(**values)
    )
    if not changed:
        session.execute(budgets.insert().values(tenant_id=tenant_id, model=model, **values))
    return next(b for b in show_budgets(session, tenant_id) if b["model"] == (model or None))


def clear_budget(session: Session, tenant_id: str, model: str = "") -> None:
    if rowcount(session, delete(budgets).where(budgets.c.tenant_id == tenant_id, budgets.c.model == model)) == 0:
        raise NotFound(f"no budget set for {'model ' + model if model else 'this tenant'}")


def show_budgets(session: Session, tenant_id: str) -> list[dict[str, Any]]:
    """Each budget: limits, spent this period (reservations of calls in flight included),
    remaining, and when the period ends."""
    now = utcnow()
    out = []
    for row in session.execute(select(budgets).where(budgets.c.tenant_id == tenant_id).order_by(budgets.c.model)):
        start, end = period_bounds(row.period, now)
        fresh = _aware(row.period_start) < start
        spent_tokens, spent_cost = (0, 0.0) if fresh else (int(row.spent_tokens), float(row.spent_cost))
        out.append(
            {
                "model": row.model or None,
                "period": row.period,
                "token_limit": row.token_limit,
                "cost_limit": row.cost_limit,
                "spent_tokens": spent_tokens,
                "spent_cost": round(spent_cost, 10),
                "remaining_tokens": max(0, row.token_limit - spent_tokens) if row.token_limit is not None else None,
                "remaining_cost": round(max(0.0, row.cost_limit - spent_cost), 10)
                if row.cost_limit is not None
                else None,
                "period_start": start.isoformat(),
                "period_end": end.isoformat(),
                "exhausted": _spent(row) and not fresh,
            }
        )
    return out


@dataclass
class Reservation:
    """What a chunk reserved on each budget row it falls under (none: no budget applies)."""

    rows: list[tuple[int, datetime]] = field(default_factory=list)  # (budget id, its period start)
    tokens: int = 0
    cost: float = 0.0
    settled: bool = False


def _rows_for_update(session: Session, tenant_id: str, model: str) -> list[Any]:
    query = (
        select(budgets)
        .where(budgets.c.tenant_id == tenant_id, budgets.c.model.in_(("", model)))
        .order_by(budgets.c.id)
        .with_for_update()
    )
    return list(session.execute(query))


def reserve(
    session: Session, tenant_id: str, model: str, tokens: int, cost_of: Callable[[int], float]
) -> Reservation | str:
    """Reserve a call's estimated spend (``tokens``, and ``cost_of(tokens)`` USD) on every
    budget it falls under, or (reserving nothing) the name of the budget that is spent.
    Atomic across workers: the rows are locked, checked and moved in the caller's one
    transaction."""
    rows = _rows_for_update(session, tenant_id, model)
    if not rows:
        return Reservation()
    now = utcnow()
    held = Reservation(tokens=tokens, cost=cost_of(tokens))
    for row in rows:
        start, _ = period_bounds(row.period, now)
        fresh = _aware(row.period_start) < start
        if _spent(row, fresh):
            return describe(row)
        if fresh:  # a new day or month: the spend starts over
            session.execute(
                update(budgets).where(budgets.c.id == row.id).values(period_start=start, spent_tokens=0, spent_cost=0.0)
            )
        held.rows.append((row.id, start))
    cost = held.cost
    for budget_id, start in held.rows:
        session.execute(
            update(budgets)
            .where(budgets.c.id == budget_id, budgets.c.period_start == start)
            .values(spent_tokens=budgets.c.spent_tokens + tokens, spent_cost=budgets.c.spent_cost + cost)
        )
    return held


def refusal(session: Session, tenant_id: str, model: str) -> str | None:
    """The name of a spent budget the model falls under, if any (a submit is refused)."""
    now = utcnow()
    for row in session.execute(
        select(budgets).where(budgets.c.tenant_id == tenant_id, budgets.c.model.in_(("", model)))
    ):
        start, _ = period_bounds(row.period, now)
        if _aware(row.period_start) >= start and _spent(row):
            return f"{describe(row)} is spent until {period_bounds(row.period, now)[1]:%Y-%m-%d %H:%M} UTC"
    return None


def settle(session: Session, held: Reservation, tokens: int, cost: float) -> None:
    """Replace the reservation by what the call really used (0 and 0: give it back). Once."""
    if held.settled or not held.rows:
        held.settled = True
        return
    held.settled = True
    for budget_id, start in held.rows:  # a period that has rolled over since is left alone
        session.execute(
            update(budgets)
            .where(budgets.c.id == budget_id, budgets.c.period_start == start)
            .values(
                spent_tokens=budgets.c.spent_tokens + (tokens - held.tokens),
                spent_cost=budgets.c.spent_cost + (cost - held.cost),
            )
        )
