"""Prometheus exposition: a worker's ``/metrics`` (its own HTTP server) and the API's.

Multiprocess design: a prefork worker's counting happens in its pool processes, which come
and go. ``modelyard worker`` with ``MODELYARD_METRICS_PORT`` set points
``PROMETHEUS_MULTIPROC_DIR`` at a directory of its own under the data dir (emptied at start)
*before* the task modules -- and so prometheus_client -- are imported; every pool process then
counts in its own memory-mapped files there, and the main process's server sums them at each
scrape (``MultiProcessCollector``). Counters and histograms only: they sum correctly across
processes, alive or gone.

State read at scrape time (:class:`StateCollector`): queue depth per queue from the broker,
jobs and chunks not yet finished by status, and how much of each budget is spent.

Protection: the worker's server asks for basic auth when ``MODELYARD_METRICS_BASIC_AUTH`` is
set (and binds ``MODELYARD_METRICS_HOST``, loopback by default); the API's ``/metrics`` takes an
operator token (scope ``admin``). Flower's own ``/metrics`` is put behind Flower's basic auth
(:func:`protect_flower_metrics`).
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger("modelyard.metrics")


def prepare_worker() -> None:
    """Before the worker imports its tasks: the multiprocess directory, and the server."""
    from conf.errors import InvalidRequest
    from conf.settings import get_settings

    settings = get_settings()
    if not settings.metrics_port:
        return
    if not settings.metrics_basic_auth and settings.metrics_host not in ("127.0.0.1", "localhost", "::1"):
        raise InvalidRequest(
            f"MODELYARD_METRICS_HOST={settings.metrics_host} exposes /metrics beyond this host: "
            "set MODELYARD_METRICS_BASIC_AUTH=user:password too"
        )
    directory = settings.data_dir / "metrics" / f"worker-{settings.metrics_port}"
    shutil.rmtree(directory, ignore_errors=True)  # a previous run's counts would be summed in
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    serve(settings.metrics_host, settings.metrics_port, settings.metrics_basic_auth)


def registry() -> Any:
    """Everything to expose: the worker processes' counts (multiprocess, when this process has
    a directory) or this process's own, and the state read now."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    reg = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(reg)
    else:
        from tasks.metrics import ALL

        for metric in ALL:
            reg.register(metric)
    reg.register(StateCollector())
    return reg


def exposition() -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(registry()), CONTENT_TYPE_LATEST


class StateCollector:
    """Gauges read when scraped: queue depth, unfinished jobs and chunks, budgets spent."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            "modelyard_state_up", "1 if the broker and database answered this scrape", labels=["source"]
        )
        try:
            depth = GaugeMetricFamily(
                "modelyard_queue_depth", "Messages waiting per queue (from the broker)", labels=["queue"]
            )
            for queue, n in _queue_depths():
                depth.add_metric([queue], n)
            yield depth
            up.add_metric(["broker"], 1)
        except Exception as exc:  # noqa: BLE001 - a scrape reports, never fails
            log.warning("metrics: the broker did not answer (%s)", type(exc).__name__)
            up.add_metric(["broker"], 0)
        try:
            yield from _database_state(GaugeMetricFamily)
            up.add_metric(["database"], 1)
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: the database did not answer (%s)", type(exc).__name__)
            up.add_metric(["database"], 0)
        yield up


def _queue_depths() -> list[tuple[str, int]]:
    from tasks.app import QUEUES
    from tasks.runtime import current

    out = []
    with current().celery.connection_for_read() as conn:
        channel = conn.default_channel
        for queue in QUEUES:
            try:
                # kombu types the channel as its StdChannel base, which omits queue_declare; every transport's has it.
                declared = channel.queue_declare(queue=queue, passive=True)  # type: ignore[attr-defined]
                out.append((queue, int(declared.message_count)))
            except Exception:  # noqa: BLE001 - a queue not declared yet holds nothing
                out.append((queue, 0))
    return out


def _database_state(family: Callable[..., Any]) -> Iterator[Any]:
    from sqlalchemy import func, select

    from models.budgets import show_budgets
    from models.db import session_scope
    from models.tables import budgets, job_chunks, jobs

    with session_scope() as session:
        job_rows = session.execute(
            select(jobs.c.model_type, jobs.c.status, func.count())
            .where(jobs.c.status.in_(("queued", "running")))
            .group_by(jobs.c.model_type, jobs.c.status)
        )
        g = family("modelyard_jobs", "Jobs not finished, by status", labels=["model_type", "status"])
        for model_type, status, n in job_rows:
            g.add_metric([model_type, status], n)
        yield g
        chunk_rows = session.execute(
            select(job_chunks.c.status, func.count())
            .where(job_chunks.c.status.in_(("pending", "queued", "running")))
            .group_by(job_chunks.c.status)
        )
        g = family("modelyard_chunks_open", "Chunks not finished, by status", labels=["status"])
        for status, n in chunk_rows:
            g.add_metric([status], n)
        yield g
        g = family(
            "modelyard_budget_spent_ratio",
            "Spent share of each budget this period (1: spent)",
            labels=["tenant", "model", "period", "limit"],
        )
        for tenant_id in session.scalars(select(budgets.c.tenant_id).distinct()):
            for b in show_budgets(session, tenant_id):
                if b["token_limit"]:
                    g.add_metric(
                        [tenant_id, b["model"] or "", b["period"], "tokens"], b["spent_tokens"] / b["token_limit"]
                    )
                if b["cost_limit"]:
                    g.add_metric([tenant_id, b["model"] or "", b["period"], "cost"], b["spent_cost"] / b["cost_limit"])
        yield g


# --------------------------------------------------------------------------- the worker's server


def check_basic_auth(header: str | None, allowed: str) -> bool:
    """``Authorization: Basic ...`` against ``user:password[,user:password...]``, in constant time."""
    if not allowed:
        return True
    scheme, _, encoded = (header or "").partition(" ")
    if scheme != "Basic":
        return False
    try:
        given = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return any(hmac.compare_digest(given.encode(), pair.strip().encode()) for pair in allowed.split(","))


def wsgi_app(basic_auth: str) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/metrics", "/metrics/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not check_basic_auth(environ.get("HTTP_AUTHORIZATION"), basic_auth):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Basic realm="modelyard metrics"')],
            )
            return [b"unauthorized\n"]
        body, content_type = exposition()
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # `format`: the stdlib's parameter name
        return


def serve(host: str, port: int, basic_auth: str) -> WSGIServer:
    """``/metrics`` on a daemon thread of this (the worker's main) process."""
    server = make_server(host, port, wsgi_app(basic_auth), handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics%s", host, port, " (basic auth)" if basic_auth else "")
    return server


# --------------------------------------------------------------------------- Flower


def protect_flower_metrics() -> None:
    """Flower 2.x serves ``/metrics`` without asking for its basic auth; route it through a
    handler that does (Flower's own ``authenticated`` check, as its other pages use)."""
    import tornado.web
    from flower import urls
    from flower.views.monitor import Metrics

    class AuthenticatedMetrics(Metrics):
        @tornado.web.authenticated
        async def get(self) -> None:
            await super().get()

    for i, entry in enumerate(urls.handlers):  # the list Flower's app is built from
        if isinstance(entry, tuple) and len(entry) >= 2 and entry[1] is Metrics:
            urls.handlers[i] = (entry[0], AuthenticatedMetrics, *entry[2:])
