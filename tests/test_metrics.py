"""Prometheus metrics over real HTTP: a prefork worker's ``/metrics`` (its pool processes'
counts summed through the multiprocess directory) after a known job, behind basic auth; the
API's ``/metrics`` behind an operator token. The exposition is parsed with prometheus_client's
own text parser."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from tests.api_stack import free_port, make_token, start_api
from tests.conftest import Stack
from tests.fakeprovider import FakeProvider
from tests.test_e2e_embedding import MODEL, corpus, make_tenant, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

AUTH = ("prom", "s3cret-scrape")


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(got: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in got.items() if n == name and set(labels.items()) <= ls)


@pytest.fixture
def metered(stack: Stack, worker_factory) -> tuple[str, int]:
    port = free_port()
    worker_factory(
        concurrency=2, extra_env={"MODELYARD_METRICS_PORT": str(port), "MODELYARD_METRICS_BASIC_AUTH": ":".join(AUTH)}
    )
    return f"http://127.0.0.1:{port}/metrics", port


def test_worker_metrics_count_a_known_job_and_refuse_an_unauthenticated_scrape(
    stack: Stack, metered: tuple[str, int], fake_provider: FakeProvider, tmp_path
) -> None:
    from models.db import session_scope
    from models.tables import usage_events
    from tasks import producer

    url, port = metered
    tenant = make_tenant(fake_provider.base_url)
    fake_provider.rate_limit(retry_after=0.2, times=1, path="embeddings")  # one 429, then retried
    job = producer.submit_embedding(tenant, MODEL, corpus(30, "metric"), chunk_size=10)
    assert wait_for(job)["status"] == "succeeded"

    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, auth=("prom", "wrong"), timeout=10).status_code == 401
    scrape = httpx.get(url, auth=AUTH, timeout=10)
    assert scrape.status_code == 200
    got = samples(scrape.text)
    model = {"factory": "OpenAI", "model": MODEL, "model_type": "embedding"}
    assert value(got, "modelyard_provider_calls_total", code="OK", **model) == 3
    assert value(got, "modelyard_provider_calls_total", code="RATE_LIMIT", **model) == 1
    assert value(got, "modelyard_provider_call_seconds_count", factory="OpenAI", model_type="embedding") == 4
    assert value(got, "modelyard_rate_limit_pauses_total", factory="OpenAI") == 1
    assert value(got, "modelyard_retries_total", model_type="embedding", code="RATE_LIMIT") == 1
    assert value(got, "modelyard_chunks_total", model_type="embedding", status="succeeded") == 3
    assert value(got, "modelyard_jobs_finished_total", model_type="embedding", status="succeeded") == 1
    with session_scope() as session:
        tokens, cost = session.execute(
            select(func.sum(usage_events.c.total_tokens), func.sum(usage_events.c.cost)).where(
                usage_events.c.job_id == job
            )
        ).one()
    assert value(got, "modelyard_tokens_total", tenant=tenant, model=MODEL) == tokens
    assert value(got, "modelyard_cost_usd_total", tenant=tenant, model=MODEL) == pytest.approx(cost)
    for queue in ("embedding", "chat", "maintenance"):
        assert ("modelyard_queue_depth", frozenset({("queue", queue)})) in got
    assert value(got, "modelyard_state_up", source="database") == 1
    labels = {v for (_, ls) in got for _, v in ls}
    assert job not in labels and not any("metric" in v for v in labels)  # no job ids, no texts

    # The API's /metrics: an operator token, not a tenant's, and never none. Pointed at the
    # worker's directory (same host), it shows the worker's counts too.
    api = start_api(
        stack, tmp_path, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(stack.data_dir / "metrics" / f"worker-{port}")}
    )
    try:
        assert httpx.get(f"{api.base_url}/metrics", timeout=10).status_code == 401
        tenant_token = make_token(stack, tenant, "jobs", "models")["token"]
        assert (
            httpx.get(
                f"{api.base_url}/metrics", headers={"Authorization": f"Bearer {tenant_token}"}, timeout=10
            ).status_code
            == 403
        )
        operator = make_token(stack, None)["token"]
        api_scrape = httpx.get(f"{api.base_url}/metrics", headers={"Authorization": f"Bearer {operator}"}, timeout=10)
        assert api_scrape.status_code == 200
        api_got = samples(api_scrape.text)
        assert value(api_got, "modelyard_provider_calls_total", code="OK", **model) == 3
        assert ("modelyard_queue_depth", frozenset({("queue", "embedding")})) in api_got

        # Usage and budgets through the API, with the tenant's token (scope models).
        tenant_api = httpx.Client(
            base_url=api.base_url, headers={"Authorization": f"Bearer {tenant_token}"}, timeout=10
        )
        (day,) = tenant_api.get("/api/usage", params={"by": "day"}).json()
        assert day["calls"] == 3 and day["total_tokens"] == tokens and day["cost"] == pytest.approx(cost)
        assert tenant_api.get("/api/usage", params={"since": "not a date"}).status_code == 400
        put = tenant_api.put("/api/budgets", json={"period": "day", "tokens": tokens})
        assert put.status_code == 200 and put.json()["spent_tokens"] == tokens and put.json()["exhausted"]
        refused = tenant_api.post("/v1/embeddings", json={"model": MODEL, "input": "one more"})
        assert refused.status_code == 429 and "daily budget" in refused.json()["error"]["message"]
        assert tenant_api.delete("/api/budgets").status_code == 200
        assert tenant_api.get("/api/budgets").json() == []
    finally:
        api.stop()


def test_budget_gauge_shows_the_spent_share(stack: Stack, fake_provider: FakeProvider) -> None:
    from models.budgets import reserve, set_budget
    from models.db import session_scope
    from workers.metrics import exposition

    tenant = make_tenant(fake_provider.base_url)
    with session_scope() as session:
        set_budget(session, tenant, period="day", tokens=1000, cost=1.0)
        reserve(session, tenant, MODEL, 900, lambda _: 0.25)
    got = samples(exposition()[0].decode())
    assert value(got, "modelyard_budget_spent_ratio", tenant=tenant, limit="tokens", period="day") == pytest.approx(0.9)
    assert value(got, "modelyard_budget_spent_ratio", tenant=tenant, limit="cost", period="day") == pytest.approx(0.25)
