"""Jobs (status, live progress, item errors, tokens, cost; cancel; results) and usage. The job
operations are the JSON API's (``workers.api.jobs``), so ownership is checked the same way."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from models.db import session_scope
from models.usage import usage_report
from tasks import producer
from workers.api import jobs as api_jobs
from workers.api.web.render import render
from workers.api.web.session import PREFIX, Session, check_csrf, needs, signed_in

router = APIRouter(prefix=PREFIX, include_in_schema=False)
RUNNING = ("queued", "running")


def progress(items: dict[str, int]) -> int:
    """Percent of a job's items that are done (succeeded or failed)."""
    return 100 if not items["total"] else (items["succeeded"] + items["failed"]) * 100 // items["total"]


def _costs(tenant_id: str, since: datetime | None = None) -> dict[str, float | None]:
    """Each job's cost from the usage ledger (None where one of its calls had no price), counting
    the calls since ``since`` (a job's creation, for one job)."""
    with session_scope() as db:
        rows = usage_report(db, tenant_id, by="job", since=since)
    costs: dict[str, float | None] = {}
    for r in rows:
        known = costs.get(r["job_id"], 0.0)
        costs[r["job_id"]] = None if known is None or r["unpriced_calls"] else known + r["cost"]
    return costs


@router.get("/jobs", response_class=HTMLResponse)
def jobs(request: Request, session: Session = Depends(signed_in)) -> HTMLResponse:
    tenant_id = needs(session, "jobs")
    rows = producer.list_jobs(tenant=tenant_id, limit=50)
    for r in rows:
        r["items"] = {"total": r["items_total"], "succeeded": r["items_succeeded"], "failed": r["items_failed"]}
    costs = _costs(tenant_id) if session.can("models") else None
    return render(request, session, "jobs.html", jobs=rows, costs=costs, progress=progress, running=RUNNING)


def job_cost(session: Session, status: dict[str, Any]) -> float | None:
    """The job's cost so far; unknown (None) to a token that may not read usage."""
    if not session.can("models"):
        return None
    since = datetime.fromisoformat(status["created_at"]) if status["created_at"] else None
    return _costs(session.tenant_id, since).get(status["id"], 0.0)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(request: Request, job_id: str, session: Session = Depends(signed_in)) -> HTMLResponse:
    status = api_jobs.owned_status(needs(session, "jobs"), job_id)
    cost = job_cost(session, status)
    return render(
        request, session, "job.html", job=status, cost=cost, progress=progress(status["items"]), running=RUNNING
    )


@router.get("/jobs/{job_id}/progress.json")
def job_progress(job_id: str, session: Session = Depends(signed_in)) -> dict[str, Any]:
    """What the page's script polls while a job runs."""
    status = api_jobs.owned_status(needs(session, "jobs"), job_id)
    return {
        "status": status["status"],
        "percent": progress(status["items"]),
        "items": status["items"],
        "total_tokens": status["total_tokens"],
        "cost": job_cost(session, status),
    }


@router.post("/jobs/{job_id}/cancel", dependencies=[Depends(check_csrf)])
def job_cancel(job_id: str, session: Session = Depends(signed_in)) -> RedirectResponse:
    api_jobs.cancel(job_id, needs(session, "jobs"))
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}?notice=cancelled", status_code=303)


@router.get("/jobs/{job_id}/results")
def job_results(
    job_id: str, format: Literal["jsonl", "npy"] = Query(default="jsonl"), session: Session = Depends(signed_in)
) -> StreamingResponse:
    response = api_jobs.results(job_id, format, needs(session, "jobs"))
    response.headers["Content-Disposition"] = f'attachment; filename="{job_id}.{format}"'
    return response


@router.get("/usage", response_class=HTMLResponse)
def usage(request: Request, session: Session = Depends(signed_in)) -> HTMLResponse:
    tenant_id = needs(session, "models")
    with session_scope() as db:
        by_model = usage_report(db, tenant_id, by="model")
        by_day = usage_report(db, tenant_id, by="day")
    return render(request, session, "usage.html", by_model=by_model, by_day=by_day)
