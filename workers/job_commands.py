"""``modelyard job list|retry|delete``: finding jobs, retrying what failed, deleting what a
pipeline has copied out."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta

from models.jobs import TERMINAL
from tasks import producer
from workers.output import out, print_json, table

STATUSES = ("queued", "running", *TERMINAL)
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def since(value: str) -> datetime:
    """``2h``, ``7d`` ... ago, or an ISO date / date-time (UTC unless it says otherwise)."""
    m = _AGO.match(value.strip().lower())
    if m:
        return datetime.now(UTC) - timedelta(seconds=float(m.group(1)) * _UNIT[m.group(2)])
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time ago (30m, 2h, 7d) or an ISO date, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _limit(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if not 1 <= n <= 10_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 10000, got {n}")
    return n


def add_job_commands(job: argparse._SubParsersAction) -> None:
    p = job.add_parser("list", help="jobs, newest first, with their counts and tokens")
    p.add_argument("--tenant", default=None, help="only this tenant's jobs (id or name)")
    p.add_argument("--status", choices=STATUSES, default=None)
    p.add_argument(
        "--since",
        type=since,
        default=None,
        metavar="WHEN",
        help="created since: a time ago (30m, 2h, 7d) or an ISO date / date-time (UTC)",
    )
    p.add_argument("--limit", type=_limit, default=50, help="at most this many (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=job_list)

    p = job.add_parser("retry", help="a new job of a finished job's failed items (same custom ids), linked to it")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("--json", action="store_true", help='print {"job_id": ...}')
    p.set_defaults(func=job_retry)

    p = job.add_parser("delete", help="delete an ended job's inputs and results and the job (the usage ledger stays)")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=job_delete)


def job_list(args: argparse.Namespace) -> None:
    rows = producer.list_jobs(tenant=args.tenant, status=args.status, since=args.since, limit=args.limit)
    if args.json:
        print_json(rows)
        return
    table(
        "jobs (newest first)",
        ["id", "tenant", "model", "status", "items", "ok", "failed", "tokens", "created", "retry of"],
        [
            [
                r["id"],
                r["tenant"],
                r["model"],
                r["status"] + (" (purged)" if r["purged_at"] else ""),
                f"{r['items_total']:,}",
                f"{r['items_succeeded']:,}",
                f"{r['items_failed']:,}",
                f"{r['total_tokens']:,}",
                (r["created_at"] or "")[:19],
                r["retry_of"],
            ]
            for r in rows
        ],
    )


def job_retry(args: argparse.Namespace) -> None:
    new = producer.retry(args.job_id)
    if args.json:
        print_json({"job_id": new, "retry_of": args.job_id})
    else:
        out.print(new)


def job_delete(args: argparse.Namespace) -> None:
    rows = producer.delete(args.job_id)
    if args.json:
        print_json({"job_id": args.job_id, "deleted": True, "rows": rows})
    else:
        out.print(f"deleted job {args.job_id} ({rows:,} item and chunk rows); its usage stays in the ledger")
