"""The CLI's commands that talk to the database and the producer API (no processes here)."""
from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from conf.catalog import load_catalog
from conf.errors import InvalidRequest
from models.db import get_engine, session_scope
from models.tables import tenants
from models.tenants import (
    TenantModel,
    add_llm,
    create_tenant,
    delete_llm,
    list_tenant_models,
    resolve_tenant,
    set_llm_status,
)
from models.usage import usage_summary
from providers.registry import supported
from tasks import producer
from workers.cli import print_json
from workers.inputs import read_inputs
from workers.progress import job_progress

out = Console()


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)


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
        _table("tenants", ["id", "name", "created"], [[r["id"], r["name"], r["created_at"]] for r in rows])


def factories(args: argparse.Namespace) -> None:
    have = supported()
    rows = []
    for f in sorted(load_catalog(), key=lambda f: (-f.rank, f.name)):
        catalog_types = sorted({t for m in f.models for t in m.model_types})
        rows.append({
            "name": f.name,
            "models": len(f.models),
            "catalog_types": catalog_types,
            "supported_types": have.get(f.name, []),
            "unsupported_types": [t for t in catalog_types if t not in have.get(f.name, [])],
            "internal": f.internal,
            "base_url": f.base_url,
        })
    if args.json:
        print_json(rows)
        return
    _table("factories", ["factory", "models", "supported", "unsupported", "internal"],
           [[r["name"], r["models"], ",".join(r["supported_types"]) or "-", ",".join(r["unsupported_types"]) or "-",
             "yes" if r["internal"] else ""] for r in rows])


def _read_key(value: str | None) -> str | None:
    if value == "-":
        key = sys.stdin.readline().strip()
        if not key:
            raise InvalidRequest("expected the API key on standard input")
        return key
    return value


def _model_json(tm: TenantModel) -> dict[str, Any]:
    return {"model": tm.full_name, "factory": tm.factory, "type": tm.model_type, "status": tm.status,
            "used_tokens": tm.used_tokens, "api_base": tm.api_base, "max_tokens": tm.max_tokens,
            "key_state": tm.key_state, "has_key": tm.has_key}


def llm_action(args: argparse.Namespace) -> None:
    with session_scope() as session:
        tenant_id = resolve_tenant(session, args.tenant)
        if args.action == "add":
            tm = add_llm(session, tenant_id, args.model, args.model_type, api_key=_read_key(args.api_key),
                         api_base=args.base_url, max_tokens=args.max_tokens)
        elif args.action == "delete":
            delete_llm(session, tenant_id, args.model, args.model_type)
            tm = None
        else:
            tm = set_llm_status(session, tenant_id, args.model, args.model_type, enabled=args.action == "enable")
    result = _model_json(tm) if tm else {"model": args.model, "type": args.model_type, "deleted": True}
    if args.json:
        print_json(result)
    else:
        out.print(f"{args.model} ({args.model_type}): {'deleted' if tm is None else tm.status}")


def my_llms(args: argparse.Namespace) -> None:
    with session_scope() as session:
        models = list_tenant_models(session, resolve_tenant(session, args.tenant))
    if args.json:
        print_json([_model_json(m) for m in models])
        return
    _table("models", ["factory", "model", "type", "status", "used tokens", "key"],
           [[m.factory, m.llm_name, m.model_type, m.status, f"{m.used_tokens:,}",
             m.key_state if m.has_key else "none"] for m in models])


def embed(args: argparse.Namespace) -> int:
    job_id = producer.submit_embedding(args.tenant, args.model, read_inputs(args.files),
                                       idempotency_key=args.idempotency_key, chunk_size=args.chunk_size)
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
    if args.output:
        res = producer.results(args.job_id)
        np.save(args.output, res.vectors)
        out.print(f"wrote {res.vectors.shape[0]:,} x {res.vectors.shape[1]} vectors to {args.output}; "
                  f"{len(res.errors):,} items failed")
        return 0
    for item in producer.iter_results(args.job_id):
        row: dict[str, Any] = {"custom_id": item.custom_id, "status": item.status}
        if item.vector is not None:
            row["embedding"] = [round(float(x), 7) for x in item.vector]
        if item.result is not None:
            row["result"] = item.result
        if item.result_blob is not None:
            row["audio_base64"] = base64.b64encode(item.result_blob).decode()
        if item.error_code:
            row["error"] = {"code": item.error_code, "message": item.error_message}
        print_json(row)
    return 0


def usage(args: argparse.Namespace) -> None:
    with session_scope() as session:
        rows = usage_summary(session, resolve_tenant(session, args.tenant))
    if args.json:
        print_json(rows)
        return
    _table("usage", ["model", "type", "calls", "prompt", "completion", "total", "used_tokens"],
           [[r["model"], r["model_type"], r["calls"], f"{r['prompt_tokens']:,}", f"{r['completion_tokens']:,}",
             f"{r['total_tokens']:,}", f"{r['used_tokens']:,}"] for r in rows])
