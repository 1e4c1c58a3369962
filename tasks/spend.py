"""A chunk's side of budgets and the ledger: reserve the estimated spend before the call,
write the priced usage event and settle the reservation after it, give it back on failure."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from models import budgets
from models.bundle import LLMBundle, Recorded
from models.db import session_scope
from models.prices import price_of
from providers.base import Usage

log = logging.getLogger("modelyard.spend")


def reserve(bundle: LLMBundle, tokens: int) -> budgets.Reservation | str:
    """Reserve ``tokens`` (and their cost at the model's price) on the tenant's budgets, or
    the name of the budget that is spent (the call must not be made)."""
    with session_scope() as session:

        def cost_of(n: int) -> float:  # looked up only when a budget applies
            price, _ = price_of(session, bundle.model)
            return price.estimate(n) if price is not None else 0.0

        return budgets.reserve(session, bundle.tenant_model.tenant_id, bundle.model, tokens, cost_of)


def record(
    session: Session,
    bundle: LLMBundle,
    held: budgets.Reservation,
    usage: Usage,
    *,
    task_attempt: str,
    job_id: str | None,
    latency_ms: float | None,
) -> Recorded | None:
    """The usage event (priced now) and the reservation settled to it, in the caller's transaction."""
    done = bundle.record_usage(session, usage, task_attempt=task_attempt, job_id=job_id, latency_ms=latency_ms)
    budgets.settle(session, held, done.tokens if done else 0, (done.cost or 0.0) if done else 0.0)
    return done


def release(held: budgets.Reservation) -> None:
    """Give back a reservation the call did not use (it failed, or waits in the queue). Once."""
    if held.settled or not held.rows:
        return
    try:
        with session_scope() as session:
            budgets.settle(session, held, 0, 0.0)
    except Exception:  # spend is over-counted (the safe side) rather than the chunk lost
        log.exception("could not give back a budget reservation")
