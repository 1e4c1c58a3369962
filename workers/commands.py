"""The CLI's commands that talk to the database and the producer API (no processes here)."""
from __future__ import annotations

import argparse
import base64
from typing import Any

from conf.errors import Conflict
from models.db import get_engine, session_scope
from models.tables import tenants
from models.tenants import create_tenant, resolve_tenant
from models.usage import usage_summary
from tasks import producer
from workers.cli import note, print_json
from workers.inputs import Columns, read_inputs
from workers.outputs import check_target, write_results
from workers.progress import job_progress
from workers.tables import out, table


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
    job_id = producer.submit_embedding(args.tenant, args.model, read_inputs(args.files, Columns(args.text_column, args.id_column)),
                                       idempotency_key=args.idempotency_key, chunk_size=args.chunk_size,
                                       input_type="query" if args.queries else "document")
    if job_id.existing:
        note(f"idempotency key {args.idempotency_key!r} was used for job {job_id} with this same input: that job, "
             "not a new one")
    if job_id.unsent:
        note(f"job {job_id} is saved, but the broker is not reachable: its messages will be sent when the broker "
             "is back (by the sweeper; see docs/operations.md). Do not submit it again.")
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
    out.print(f"job {st['id']}: {st['status']} - {items['succeeded']:,} succeeded, {items['failed']:,} failed, "
              f"{items['pending']:,} pending of {items['total']:,}; {st['total_tokens']:,} tokens ({st['model']})")
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
    with session_scope() as session:
        rows = usage_summary(session, resolve_tenant(session, args.tenant))
    if args.json:
        print_json(rows)
        return
    table("usage", ["model", "type", "calls", "prompt", "completion", "total", "used_tokens"],
           [[r["model"], r["model_type"], r["calls"], f"{r['prompt_tokens']:,}", f"{r['completion_tokens']:,}",
             f"{r['total_tokens']:,}", f"{r['used_tokens']:,}"] for r in rows])
