"""The CLI's commands that talk to the database and the producer API (no processes here)."""

from __future__ import annotations

import argparse
import base64
from typing import Any

from conf.errors import Conflict
from models import budgets
from models.db import get_engine, session_scope
from models.prices import clear_price, describe_price, set_price
from models.tables import tenants
from models.tenants import create_tenant, resolve_tenant
from models.usage import parse_moment, usage_report, usage_summary
from tasks import producer
from workers.inputs import Columns, read_inputs
from workers.output import note, out, print_json, table
from workers.outputs import check_target, write_results
from workers.progress import job_progress


def db_upgrade(args: argparse.Namespace) -> None:
    from models.migrate import upgrade  # Alembic is slow to import; only this command needs it

    counts = upgrade(get_engine())
    if args.json:
        print_json({"status": "ok", **counts})
    else:
        out.print(f"schema is current; catalog: {counts['factories']} factories, {counts['models']} models")


def tenant_create(args: argparse.Namespace) -> None:
    with session_scope() as session:
        tenant_id = create_tenant(session, args.name)
    if args.json:
        print_json({"id": tenant_id, "name": args.name})
    else:
        out.print(tenant_id)


def tenant_list(args: argparse.Namespace) -> None:
    with session_scope() as session:
        rows = [dict(r._mapping) for r in session.execute(tenants.select().order_by(tenants.c.created_at))]
    if args.json:
        print_json(rows)
    else:
        table("tenants", ["id", "name", "created"], [[r["id"], r["name"], r["created_at"]] for r in rows])


def embed(args: argparse.Namespace) -> int:
    job_id = producer.submit_embedding(
        args.tenant,
        args.model,
        read_inputs(args.files, Columns(args.text_column, args.id_column)),
        idempotency_key=args.idempotency_key,
        chunk_size=args.chunk_size,
        input_type="query" if args.queries else "document",
        cache=not args.no_cache,
    )
    if job_id.existing:
        note(
            f"idempotency key {args.idempotency_key!r} was used for job {job_id} with this same input: that job, "
            "not a new one"
        )
    if job_id.unsent:
        note(
            f"job {job_id} is saved, but the broker is not reachable: its messages will be sent when the broker "
            "is back (by the sweeper; see docs/operations.md). Do not submit it again."
        )
    if not args.wait:
        if args.json:
            print_json({"job_id": job_id})
        else:
            out.print(job_id)
        return 0
    with job_progress(enabled=not args.json) as progress:
        final = producer.wait(job_id, on_progress=progress)
    if args.json:
        print_json({"job_id": job_id, **final})
    else:
        _print_status(final)
    return 0 if final["status"] == "succeeded" else 5


def _print_status(st: dict[str, Any]) -> None:
    items = st["items"]
    out.print(
        f"job {st['id']}: {st['status']} - {items['succeeded']:,} succeeded, {items['failed']:,} failed, "
        f"{items['pending']:,} pending of {items['total']:,}; {st['total_tokens']:,} tokens ({st['model']})"
    )
    for err in st["errors"][:20]:
        out.print(f"  {err['custom_id']}: {err['code']}: {err['message']}", markup=False)
    if st["errors_total"] > 20:
        out.print(f"  ... and {st['errors_total'] - 20:,} more failed items (see --json)")


def job_action(args: argparse.Namespace) -> int:
    if args.action == "status":
        st = producer.status(args.job_id)
    elif args.action == "wait":
        with job_progress(enabled=not args.json) as progress:
            st = producer.wait(args.job_id, timeout=args.timeout, on_progress=progress)
    elif args.action == "cancel":
        producer.cancel(args.job_id)
        st = producer.status(args.job_id)
    else:
        return _results(args)
    if args.json:
        print_json(st)
    else:
        _print_status(st)
    return 0


def _results(args: argparse.Namespace) -> int:
    """Results as JSON lines (or to a file): for a retry, its lineage's (see workers.outputs)."""
    if args.output:
        check_target(args.output)
    purged = producer.status(args.job_id, max_errors=0)["purged_at"]
    if purged:
        raise Conflict(f"job {args.job_id}'s results were purged at {purged[:19]} (MODELYARD_JOB_RETENTION)")
    if args.output:
        out.print(write_results(args.job_id, args.output, result_row), markup=False)
        return 0
    for item in producer.iter_results(args.job_id, lineage=True):
        print_json(result_row(item))
    return 0


def result_row(item: producer.ItemResult) -> dict[str, Any]:
    """One item's outcome as a JSON line (``job results``; the API's results too)."""
    row: dict[str, Any] = {"custom_id": item.custom_id, "status": item.status}
    if item.vector is not None:
        row["embedding"] = [round(float(x), 7) for x in item.vector]
    if item.result is not None:
        row["result"] = item.result
    if item.result_blob is not None:
        row["audio_base64"] = base64.b64encode(item.result_blob).decode()
    if item.error_code:
        row["error"] = {"code": item.error_code, "message": item.error_message}
    return row


def usage(args: argparse.Namespace) -> None:
    since, until = parse_moment(args.since, "--since"), parse_moment(args.until, "--until")
    with session_scope() as session:
        tenant_id = resolve_tenant(session, args.tenant)
        if args.by is None and since is None and until is None:
            rows = usage_summary(session, tenant_id)
        else:
            rows = usage_report(session, tenant_id, by=args.by or "model", since=since, until=until)
    if args.json:
        print_json(rows)
        return
    first = {"day": ["day"], "job": ["job_id", "model"]}.get(args.by or "model", ["model", "model_type"])
    table(
        "usage",
        [*first, "calls", "cached", "prompt", "completion", "total", "cached tokens", "cost USD"],
        [
            [
                *(str(r[k]) for k in first),
                f"{r['calls']:,}",
                f"{r['cached_calls']:,}",
                f"{r['prompt_tokens']:,}",
                f"{r['completion_tokens']:,}",
                f"{r['total_tokens']:,}",
                f"{r['cached_tokens']:,}",
                _usd(r["cost"], r["unpriced_calls"]),
            ]
            for r in rows
        ],
    )


def _usd(cost: float, unpriced: int) -> str:
    text = f"{cost:.6f}".rstrip("0").rstrip(".") if cost else "0"
    return f"{text} (+{unpriced:,} unpriced)" if unpriced else text


def price_action(args: argparse.Namespace) -> None:
    with session_scope() as session:
        if args.action == "set":
            set_price(
                session,
                args.model,
                input_cost=args.input,
                output_cost=args.output,
                batch_input_cost=args.batch_input,
                batch_output_cost=args.batch_output,
            )
        elif args.action == "clear":
            clear_price(session, args.model)
        row = describe_price(session, args.model)
    if args.json:
        print_json(row)
        return
    if row["source"] == "none":
        out.print(f"{args.model}: no price (its calls are recorded without a cost)")
        return
    out.print(
        f"{args.model} ({row['source']}): input {row['input_cost_per_token']:.4g}, "
        f"output {row['output_cost_per_token']:.4g} USD per token"
    )


def budget_action(args: argparse.Namespace) -> None:
    with session_scope() as session:
        tenant_id = resolve_tenant(session, args.tenant)
        if args.action == "set":
            budgets.set_budget(
                session, tenant_id, period=args.period, tokens=args.tokens, cost=args.cost, model=args.model or ""
            )
        elif args.action == "clear":
            budgets.clear_budget(session, tenant_id, args.model or "")
        rows = budgets.show_budgets(session, tenant_id)
    if args.json:
        print_json(rows)
        return
    if not rows:
        out.print("no budgets")
        return
    table(
        "budgets",
        ["model", "period", "limit", "spent", "remaining", "period ends"],
        [
            [
                r["model"] or "(all)",
                r["period"],
                _limits(r, "token_limit", "cost_limit"),
                _limits(r, "spent_tokens", "spent_cost", always=True),
                _limits(r, "remaining_tokens", "remaining_cost"),
                r["period_end"],
            ]
            for r in rows
        ],
    )


def _limits(r: dict[str, Any], tokens: str, cost: str, always: bool = False) -> str:
    parts = []
    if r[tokens] is not None and (always or r["token_limit"] is not None):
        parts.append(f"{r[tokens]:,} tokens")
    if r[cost] is not None and (always or r["cost_limit"] is not None):
        parts.append(f"{r[cost]:.4f} USD")
    return ", ".join(parts)
