"""The ``modelyard`` command line.

Every listing takes ``--json``; every error is one line on stderr and a non-zero exit
(2: bad request, 3: not found, 4: conflict, 1: anything else). Keys are never printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from conf.errors import UserError
from providers.base import MODEL_TYPES
from tasks.runtime import Runtime
from workers.output import error


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error reported like every other error: one line on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"modelyard: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {n}")
    return n


def _usd_per_token(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError(f"a price is USD per token, at least 0 and below 1: {value!r}")
    return number


def _usd(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"an amount in USD is 0 or more: {value!r}")
    return number


def _limit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpm", type=_count, default=None, help="requests per minute on this model's key (0: none set)")
    p.add_argument("--tpm", type=_count, default=None, help="tokens per minute on this model's key (0: none set)")
    p.add_argument(
        "--max-concurrency",
        type=_count,
        default=None,
        help="most calls in flight at once on this model's key, fleet-wide (0: no cap)",
    )


def _key_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api-key", default=None, help="the provider key; - reads it from standard input")
    p.add_argument(
        "--field",
        action="append",
        metavar="NAME=VALUE",
        help="one part of a multi-part credential (see `modelyard factories`); VALUE - reads standard "
        "input, @PATH reads a file (e.g. a service-account JSON key)",
    )
    p.add_argument("--base-url", default="", help="the provider's base URL (default: the factory's)")
    p.add_argument("--skip-check", action="store_true", help="save without testing the key (its state: unchecked)")
    _json_flag(p)


def build_parser() -> argparse.ArgumentParser:
    from workers import commands as c
    from workers import launch
    from workers import llm_commands as m

    parser = _Parser(prog="modelyard", description="AI model jobs for many tenants on Celery workers.")
    parser.add_argument("--version", action="version", version=f"modelyard {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    p = db.add_parser("upgrade", help="migrate the schema to the newest version and load the model catalog")
    _json_flag(p)
    p.set_defaults(func=c.db_upgrade)

    p = sub.add_parser("worker", help="run a Celery worker")
    p.add_argument(
        "-Q", "--queues", default=",".join((*MODEL_TYPES, "maintenance")), help="comma-separated queues (default: all)"
    )
    p.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=None,
        help="threads (or processes with prefork) per worker; default: MODELYARD_JOB_MAX_INFLIGHT",
    )
    p.add_argument(
        "-P",
        "--pool",
        default="threads",
        choices=("threads", "prefork", "solo"),
        help="threads (default) for provider calls over HTTP; prefork for the CPU-bound Builtin model",
    )
    p.add_argument("-l", "--loglevel", default="info")
    p.add_argument("-n", "--hostname", default=None, help="node name (default: celery@HOST)")
    p.add_argument("-B", "--beat", action="store_true", help="also run the beat scheduler in this worker")
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="run Celery in this process and exit with its status (for a supervisor that restarts it); "
        "default: run it in a child process and start a new one if it exits non-zero",
    )
    p.set_defaults(func=launch.worker)

    p = sub.add_parser("beat", help="run the celery beat scheduler (sweeps stalled chunks)")
    p.add_argument("-l", "--loglevel", default="info")
    p.set_defaults(func=launch.beat)

    p = sub.add_parser("flower", help="run Flower, the Celery monitor, against the configured broker")
    p.add_argument("--port", type=int, default=5555)
    p.add_argument("--address", default="127.0.0.1")
    p.set_defaults(func=launch.flower)

    p = sub.add_parser("demo", help="embed a bundled corpus with the local model, then search it (needs no server)")
    p.set_defaults(func=launch.demo)

    tenant = sub.add_parser("tenant", help="tenants").add_subparsers(dest="tenant_command", required=True)
    p = tenant.add_parser("create", help="create a tenant")
    p.add_argument("name")
    _json_flag(p)
    p.set_defaults(func=c.tenant_create)
    p = tenant.add_parser("list", help="list tenants")
    _json_flag(p)
    p.set_defaults(func=c.tenant_list)

    p = sub.add_parser("factories", help="the catalog's providers and the model types modelyard supports for each")
    _json_flag(p)
    p.add_argument("--markdown", action="store_true", help="print the factory x model type table of the README")
    p.set_defaults(func=m.factories)

    keys = sub.add_parser("keys", help="a tenant's provider keys").add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("set", help="test a key on a factory's models and, if one accepts it, save it for all of them")
    p.add_argument("--tenant", required=True, help="tenant id or name")
    p.add_argument("--factory", required=True, help="the catalog's factory name, e.g. OpenAI")
    _key_flags(p)
    p.set_defaults(func=m.keys_set)
    p = keys.add_parser("rotate", help="re-encrypt every stored key under the newest MODELYARD_SECRET_KEY")
    _json_flag(p)
    p.set_defaults(func=m.keys_rotate)

    llm = sub.add_parser("llm", help="a tenant's models").add_subparsers(dest="llm_command", required=True)
    for action, help_text in (
        ("add", "test a model's key with a real call, then configure it for a tenant"),
        ("delete", "remove a tenant's model"),
        ("enable", "enable a tenant's model"),
        ("disable", "disable a tenant's model"),
    ):
        p = llm.add_parser(action, help=help_text)
        p.add_argument("--tenant", required=True, help="tenant id or name")
        p.add_argument("--model", required=True, help="NAME@FACTORY, e.g. text-embedding-3-small@OpenAI")
        p.add_argument("--type", required=True, choices=MODEL_TYPES, dest="model_type")
        if action == "add":
            _key_flags(p)
            p.add_argument("--max-tokens", type=int, default=None, help="input limit (default: the catalog's)")
            _limit_flags(p)
            p.set_defaults(func=m.llm_add)
        else:
            _json_flag(p)
            p.set_defaults(func=m.llm_change, action=action)
    p = llm.add_parser("set-limits", help="change a tenant's own rate limits on a model (0 clears one)")
    p.add_argument("--tenant", required=True, help="tenant id or name")
    p.add_argument("--model", required=True, help="NAME@FACTORY")
    p.add_argument("--type", required=True, choices=MODEL_TYPES, dest="model_type")
    _limit_flags(p)
    _json_flag(p)
    p.set_defaults(func=m.llm_set_limits)
    p = llm.add_parser("delete-factory", help="remove all of a tenant's models of one factory")
    p.add_argument("--tenant", required=True, help="tenant id or name")
    p.add_argument("--factory", required=True)
    _json_flag(p)
    p.set_defaults(func=m.llm_delete_factory)
    p = llm.add_parser("default", help="show, set or clear a tenant's default model per type")
    p.add_argument("--tenant", required=True, help="tenant id or name")
    p.add_argument("--type", choices=MODEL_TYPES, default=None, dest="model_type")
    change = p.add_mutually_exclusive_group()
    change.add_argument("--model", help="NAME@FACTORY: one of the tenant's enabled models of --type")
    change.add_argument("--clear", action="store_true", help="remove the tenant's default of --type")
    _json_flag(p)
    p.set_defaults(func=m.llm_default)
    p = llm.add_parser("list", help="every catalog model, and whether it is available to the tenant")
    p.add_argument("--tenant", required=True, help="tenant id or name")
    p.add_argument("--type", choices=MODEL_TYPES, default=None, dest="model_type", help="only models of this type")
    _json_flag(p)
    p.set_defaults(func=m.llm_list)

    p = sub.add_parser("my-llms", help="a tenant's configured models, by factory")
    p.add_argument("--tenant", required=True)
    p.add_argument("--details", action="store_true", help="also key state, last validation and error, base URL")
    _json_flag(p)
    p.set_defaults(func=m.my_llms)

    p = sub.add_parser(
        "limits", help="a tenant's rate limits per key and model: configured, advertised, in use, paused"
    )
    p.add_argument("--tenant", required=True)
    _json_flag(p)
    p.set_defaults(func=m.limits)

    p = sub.add_parser(
        "embed", help="submit a batch embedding job from .txt / .jsonl / .csv / .tsv / .parquet files or - (stdin)"
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--model", required=True, help="NAME@FACTORY")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--text-column", default=None, help="table inputs (.csv, .tsv, .parquet): the text's column (default: text)"
    )
    p.add_argument(
        "--id-column",
        default=None,
        help="table inputs: the custom id's column (default: custom_id if there is one, else the file and row)",
    )
    p.add_argument("--wait", action="store_true", help="wait for the job, with a progress bar")
    p.add_argument(
        "--idempotency-key",
        default=None,
        help="the same key with the same input returns the same job; with another input it is refused (exit 4)",
    )
    p.add_argument(
        "--chunk-size", type=int, default=None, help="texts per task (default: MODELYARD_EMBEDDING_CHUNK_SIZE)"
    )
    p.add_argument(
        "--queries",
        action="store_true",
        help="the texts are search queries: use the provider's query mode (default: documents)",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="call the provider for every text, even those the embedding cache holds"
    )
    _json_flag(p)
    p.set_defaults(func=c.embed)

    job = sub.add_parser("job", help="follow a job").add_subparsers(dest="job_command", required=True)
    for action, help_text in (
        ("status", "a job's status, counts and item errors"),
        ("wait", "wait for a job to end"),
        ("results", "a job's results as JSON lines"),
        ("cancel", "cancel a job"),
    ):
        p = job.add_parser(action, help=help_text)
        p.add_argument("job_id", metavar="JOB")
        _json_flag(p)
        if action == "wait":
            p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
        if action == "results":
            p.add_argument(
                "--output",
                "-o",
                default=None,
                help="write to this file instead: .jsonl (the lines printed without -o), .npy (the "
                "vectors; their custom ids in NAME.ids.txt beside it) or .parquet (the parquet extra)",
            )
        p.set_defaults(func=c.job_action, action=action)

    from workers import token_commands as t

    p = sub.add_parser("api", help="serve the HTTP API (OpenAI-compatible /v1 and native /api)")
    p.add_argument("--host", default=None, help="bind address (default: MODELYARD_API_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: MODELYARD_API_PORT, 8000)")
    p.set_defaults(func=t.api)

    token = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    p = token.add_parser("create", help="make an API token and print it, once")
    p.add_argument("--tenant", default=None, help="tenant id or name (omit for an operator token, scope admin)")
    p.add_argument("--name", default=None, help="a name to tell tokens apart")
    p.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="jobs, models or admin; repeat or comma-separate (default: jobs,models; admin without --tenant)",
    )
    _json_flag(p)
    p.set_defaults(func=t.token_create)
    p = token.add_parser("list", help="API tokens: name, scopes, last four characters")
    p.add_argument("--tenant", default=None, help="only this tenant's tokens")
    _json_flag(p)
    p.set_defaults(func=t.token_list)
    p = token.add_parser("revoke", help="revoke an API token")
    p.add_argument("token", metavar="TOKEN_ID", help="the token's id (or, with --tenant, its name)")
    p.add_argument("--tenant", default=None)
    _json_flag(p)
    p.set_defaults(func=t.token_revoke)

    from workers import job_commands as j

    j.add_job_commands(job)

    p = sub.add_parser("usage", help="a tenant's calls, tokens and cost, per model, day or job")
    p.add_argument("--tenant", required=True)
    p.add_argument("--since", default=None, help="from this UTC date or ISO 8601 time (inclusive)")
    p.add_argument("--until", default=None, help="to this UTC date or ISO 8601 time (exclusive)")
    p.add_argument("--by", choices=("model", "day", "job"), default=None, help="group by (default: model)")
    _json_flag(p)
    p.set_defaults(func=c.usage)

    budget = sub.add_parser("budget", help="a tenant's spending limits per day or month")
    budget_sub = budget.add_subparsers(dest="budget_command", required=True)
    p = budget_sub.add_parser("set", help="set (or replace) a token and/or cost limit per day or month")
    p.add_argument("--tenant", required=True)
    p.add_argument("--tokens", type=_count, default=None, help="token limit per period")
    p.add_argument("--cost", type=_usd, default=None, help="cost limit in USD per period")
    p.add_argument("--period", choices=("day", "month"), required=True, help="UTC day or month")
    p.add_argument("--model", default=None, help="NAME@FACTORY: a budget for this model only (default: all)")
    _json_flag(p)
    p.set_defaults(func=c.budget_action, action="set")
    for action, what in (
        ("show", "limit, spent, remaining and period end of each budget"),
        ("clear", "remove a budget"),
    ):
        p = budget_sub.add_parser(action, help=what)
        p.add_argument("--tenant", required=True)
        if action == "clear":
            p.add_argument("--model", default=None, help="the model's own budget (default: the tenant-wide one)")
        _json_flag(p)
        p.set_defaults(func=c.budget_action, action=action)

    price = sub.add_parser("price", help="a model's price (USD per token): show, or an operator's override")
    price_sub = price.add_subparsers(dest="price_command", required=True)
    for action in ("show", "set", "clear"):
        p = price_sub.add_parser(
            action,
            help={
                "show": "the price that applies and where it comes from",
                "set": "override the price for calls from now on",
                "clear": "drop the override (the catalog's price applies)",
            }[action],
        )
        p.add_argument("--model", required=True, help="NAME@FACTORY")
        if action == "set":
            p.add_argument("--input", type=_usd_per_token, required=True, help="USD per input token")
            p.add_argument("--output", type=_usd_per_token, default=0.0, help="USD per output token")
            p.add_argument("--batch-input", type=_usd_per_token, default=None, help="batch-API USD per input token")
            p.add_argument("--batch-output", type=_usd_per_token, default=None, help="batch-API USD per output token")
        _json_flag(p)
        p.set_defaults(func=c.price_action, action=action)
    return parser


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("modelyard")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    # Our log lines are for workers' logs; a command says what matters itself, in one line (without
    # this, Python's last-resort handler would print the producer's warnings raw on stderr).
    logging.getLogger("modelyard").addHandler(logging.NullHandler())
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # This process's runtime, handed to the command (``args.runtime``) and active while it runs.
        runtime = Runtime.from_env()
        try:
            with runtime.active():
                args.runtime = runtime
                code = int(args.func(args) or 0)
        finally:
            runtime.close()
        sys.stdout.flush()  # here, not at exit: a reader that went away is a closed pipe below
        return code
    except UserError as exc:
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except BrokenPipeError:
        return closed_pipe()
    except Exception as exc:  # noqa: BLE001 - one line, not a stack trace; details at debug level
        error(internal_error_line(exc))
        return 1


def closed_pipe() -> int:
    """The reader went away (``modelyard job results J | head``): stop quietly, as ``cat`` does.
    Standard output is pointed at /dev/null so that the interpreter's last flush finds no pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141  # 128 + SIGPIPE, the status a shell reports for `cat` in the same place


def internal_error_line(exc: BaseException) -> str:
    """A bug or an outage in one line: the driver's own first line for a database error (never
    SQLAlchemy's statement and parameters, which would echo inputs), scrubbed of secrets."""
    from providers.errors import scrub

    orig = getattr(exc, "orig", None)  # sqlalchemy.exc.DBAPIError wraps the driver's exception
    shown = orig if isinstance(orig, BaseException) else exc
    first = (str(shown).strip().splitlines() or [""])[0]
    return f"{type(shown).__name__}: {scrub(first)[:300]}"


if __name__ == "__main__":
    sys.exit(main())
