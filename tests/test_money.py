"""Money end to end: prices and cost on the ledger, usage reports, budgets that hold (also
under two worker processes), and the embedding cache -- real worker processes, real Redis and
Postgres, the fake OpenAI-compatible provider on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from tests.conftest import Stack, cli
from tests.fakeprovider import FakeProvider, fake_tokens, fake_vectors
from tests.test_e2e_embedding import KEY, MODEL, corpus, embedding_calls, make_tenant, texts_of, wait_for

pytestmark = [pytest.mark.services, pytest.mark.slow]

PRICE = 3e-8  # USD per token, the operator's override in these tests


def events(job_id: str) -> list[Any]:
    from models.db import session_scope
    from models.tables import usage_events

    with session_scope() as session:
        return session.execute(
            select(usage_events).where(usage_events.c.job_id == job_id).order_by(usage_events.c.id)
        ).all()


def set_price(value: float) -> None:
    from models.db import session_scope
    from models.prices import set_price as store

    with session_scope() as session:
        store(session, MODEL, input_cost=value)


@pytest.fixture
def priced(stack: Stack) -> Iterator[None]:
    """The operator's price overrides MODEL's for the test only (other tests expect the catalog's)."""
    yield
    from models.db import session_scope
    from models.tables import model_prices

    with session_scope() as session:
        session.execute(model_prices.delete().where(model_prices.c.model == MODEL))


def submit(tenant: str, items: list[dict[str, str]], **kw: Any) -> str:
    from tasks import producer

    return producer.submit_embedding(tenant, MODEL, items, **kw)


def inputs_sent(fp: FakeProvider) -> int:
    return sum(call.n_inputs for call in embedding_calls(fp))


@pytest.fixture
def tenant(stack: Stack, fake_provider: FakeProvider) -> str:
    return make_tenant(fake_provider.base_url)


# --------------------------------------------------------------------------- prices and reports


def test_cost_is_tokens_times_price_and_a_price_change_keeps_history(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str, priced: None
) -> None:
    worker_factory(concurrency=2)
    set_price(PRICE)
    first = submit(tenant, corpus(30, "a"), chunk_size=10)
    assert wait_for(first)["status"] == "succeeded"
    rows = events(first)
    assert len(rows) == 3 and all(r.total_tokens > 0 for r in rows)
    for r in rows:
        assert r.cost == pytest.approx(r.total_tokens * PRICE, rel=1e-9)
        assert not r.cached

    set_price(PRICE * 10)
    second = submit(tenant, corpus(10, "b"), chunk_size=10)
    assert wait_for(second)["status"] == "succeeded"
    assert [r.cost for r in events(first)] == [r.cost for r in rows]  # history is not rewritten
    (new,) = events(second)
    assert new.cost == pytest.approx(new.total_tokens * PRICE * 10, rel=1e-9)

    report = cli(stack, "usage", "--tenant", tenant, "--by", "job", "--json")
    assert report.returncode == 0, report.stderr
    by_job = {r["job_id"]: r for r in json.loads(report.stdout)}
    assert by_job[first]["calls"] == 3 and by_job[second]["calls"] == 1
    assert by_job[first]["cost"] == pytest.approx(sum(r.total_tokens for r in rows) * PRICE, rel=1e-6)
    assert by_job[first]["total_tokens"] == fake_tokens(texts_of(corpus(30, "a")))
    by_day = json.loads(cli(stack, "usage", "--tenant", tenant, "--by", "day", "--json").stdout)
    assert len(by_day) == 1 and by_day[0]["calls"] == 4
    later = json.loads(cli(stack, "usage", "--tenant", tenant, "--since", "2999-01-01", "--json").stdout)
    assert later == []
    bad = cli(stack, "usage", "--tenant", tenant, "--since", "yesterday")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--since" in bad.stderr


def test_catalog_prices_come_from_the_published_data_and_an_override_wins(stack: Stack) -> None:
    from models.db import session_scope
    from models.prices import price_of

    with session_scope() as session:
        price, source = price_of(session, MODEL)
        assert source == "catalog" and price is not None and price.input_cost_per_token == pytest.approx(2e-8)
        assert price.input_cost_per_token_batches == pytest.approx(1e-8)
        assert price_of(session, "no-such-model@OpenAI") == (None, "none")


# --------------------------------------------------------------------------- budgets


def test_a_budget_stops_a_running_job_with_budget_items_and_refuses_the_next_submit(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    items = corpus(200, "budget")
    per_chunk = fake_tokens(texts_of(items[:10]))
    limit = per_chunk * 5  # about five of the twenty chunks
    out = cli(stack, "budget", "set", "--tenant", tenant, "--tokens", str(limit), "--period", "day", "--json")
    assert out.returncode == 0, out.stderr
    worker_factory(concurrency=1)
    job = submit(tenant, items, chunk_size=10)
    final = wait_for(job)
    assert final["status"] == "partial"
    codes = {e["code"] for e in final["errors"]}
    assert codes == {"BUDGET"} and final["items"]["failed"] >= 100
    spent = sum(r.total_tokens for r in events(job))
    assert limit <= spent <= limit + 2 * per_chunk  # one chunk may cross the line
    assert inputs_sent(fake_provider) == final["items"]["succeeded"]  # the refused chunks made no call

    from models.db import session_scope
    from models.tables import job_items

    with session_scope() as session:  # not lost: the failed items keep their inputs, for a retry
        kept = (
            session.execute(
                select(job_items.c.text).where(job_items.c.job_id == job, job_items.c.error_code == "BUDGET")
            )
            .scalars()
            .all()
        )
    assert kept and all(kept)

    shown = json.loads(cli(stack, "budget", "show", "--tenant", tenant, "--json").stdout)
    assert shown[0]["spent_tokens"] == spent and shown[0]["remaining_tokens"] == 0 and shown[0]["exhausted"]

    refused = cli(stack, "embed", "--tenant", tenant, "--model", MODEL, "-", "--json")
    assert refused.returncode != 0 and refused.stderr.count("\n") == 1
    assert "daily budget" in refused.stderr and "spent" in refused.stderr

    assert cli(stack, "budget", "clear", "--tenant", tenant).returncode == 0
    assert json.loads(cli(stack, "budget", "show", "--tenant", tenant, "--json").stdout) == []
    again = submit(tenant, corpus(5, "after"))
    assert wait_for(again)["status"] == "succeeded"


def test_a_budget_holds_under_two_concurrent_worker_processes(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    from models.budgets import set_budget
    from models.db import session_scope

    items = corpus(400, "race")
    per_chunk = max(fake_tokens(texts_of(items[i : i + 10])) for i in range(0, 400, 10))
    limit = per_chunk * 8
    with session_scope() as session:
        set_budget(session, tenant, period="month", tokens=limit)
    fake_provider.latency_ms = 50  # calls overlap
    workers = [worker_factory(concurrency=2), worker_factory(concurrency=2)]
    job = submit(tenant, items, chunk_size=10)
    final = wait_for(job)
    in_flight = 2 * len(workers)  # chunks admitted together at most: one per worker slot
    spent = sum(r.total_tokens for r in events(job))
    assert limit <= spent <= limit + in_flight * per_chunk
    assert {e["code"] for e in final["errors"]} == {"BUDGET"}
    assert all("succeeded in" in w.log_text() for w in workers)  # both processes took chunks


# --------------------------------------------------------------------------- the embedding cache


def test_cache_resubmitting_ten_thousand_texts_calls_nothing_and_returns_identical_vectors(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    from tasks import producer

    worker_factory(concurrency=2)
    items = corpus(10_000, "big")
    first = submit(tenant, items, chunk_size=500)
    assert wait_for(first, timeout=180)["status"] == "succeeded"
    calls_before = len(embedding_calls(fake_provider))
    second = submit(tenant, items, chunk_size=500)
    assert wait_for(second, timeout=180)["status"] == "succeeded"
    assert len(embedding_calls(fake_provider)) == calls_before  # zero provider calls
    np.testing.assert_array_equal(producer.results(second).vectors, producer.results(first).vectors)
    np.testing.assert_array_equal(producer.results(second).vectors, fake_vectors(texts_of(items)))
    cached = events(second)
    assert cached and all(r.cached and r.total_tokens == 0 for r in cached)
    assert sum(r.cached_tokens for r in cached) == sum(r.total_tokens for r in events(first))


def test_cache_half_seen_calls_for_the_other_half_only_and_no_cache_calls_for_all(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    from tasks import producer

    worker_factory(concurrency=2)
    seen, unseen = corpus(50, "seen"), corpus(50, "new")
    assert wait_for(submit(tenant, seen, chunk_size=20))["status"] == "succeeded"
    before = inputs_sent(fake_provider)
    mixed = [x for pair in zip(seen, unseen, strict=True) for x in pair]  # interleaved: every chunk is half cached
    job = submit(tenant, mixed, chunk_size=20)
    assert wait_for(job)["status"] == "succeeded"
    assert inputs_sent(fake_provider) - before == 50
    np.testing.assert_array_equal(producer.results(job).vectors, fake_vectors(texts_of(mixed)))
    report = json.loads(cli(stack, "usage", "--tenant", tenant, "--by", "job", "--json").stdout)
    row = next(r for r in report if r["job_id"] == job)
    assert row["cached_calls"] == 5 and row["total_tokens"] == fake_tokens(texts_of(unseen))

    before = inputs_sent(fake_provider)
    nocache = submit(tenant, mixed, chunk_size=20, cache=False)
    assert wait_for(nocache)["status"] == "succeeded"
    assert inputs_sent(fake_provider) - before == 100


def test_cache_of_tenant_a_never_serves_tenant_b(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    worker_factory(concurrency=2)
    items = corpus(40, "private")
    assert wait_for(submit(tenant, items, chunk_size=20))["status"] == "succeeded"
    other = make_tenant(fake_provider.base_url, KEY)
    before = inputs_sent(fake_provider)
    assert wait_for(submit(other, items, chunk_size=20))["status"] == "succeeded"
    assert inputs_sent(fake_provider) - before == 40


def test_cache_is_bounded_and_can_be_shared_when_the_operator_says_so(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    from models.db import session_scope
    from models.tables import embedding_cache

    worker_factory(
        concurrency=1, extra_env={"MODELYARD_EMBED_CACHE": "shared", "MODELYARD_EMBED_CACHE_MAX_ENTRIES": "20"}
    )
    items = corpus(100, "bounded")
    assert wait_for(submit(tenant, items, chunk_size=10))["status"] == "succeeded"
    with session_scope() as session:
        held = session.scalar(select(func.count()).select_from(embedding_cache).where(embedding_cache.c.scope == "*"))
    assert 0 < held <= 20  # evicted down to the bound after each chunk (a tenth of it)

    other = make_tenant(fake_provider.base_url, KEY)  # shared: the most recent texts serve another tenant
    before = inputs_sent(fake_provider)
    assert wait_for(submit(other, items[-held:], chunk_size=10))["status"] == "succeeded"
    assert inputs_sent(fake_provider) == before


def test_a_spent_budget_still_serves_what_the_cache_holds(
    stack: Stack, worker_factory, fake_provider: FakeProvider, tenant: str
) -> None:
    from models.budgets import set_budget
    from models.db import session_scope

    worker = worker_factory(concurrency=1)
    seen, unseen = corpus(10, "kept"), corpus(10, "refused")
    assert wait_for(submit(tenant, seen, chunk_size=20))["status"] == "succeeded"
    worker.stop()
    job = submit(tenant, seen + unseen, chunk_size=20)  # submitted while the budget still had room
    with session_scope() as session:
        set_budget(session, tenant, period="day", tokens=1)  # today's ledger already spent it
    before = len(embedding_calls(fake_provider))
    worker_factory(concurrency=1)
    final = wait_for(job)
    assert final["status"] == "partial" and final["items"]["succeeded"] == 10
    assert {e["custom_id"] for e in final["errors"]} == {x["custom_id"] for x in unseen}
    assert {e["code"] for e in final["errors"]} == {"BUDGET"}
    assert len(embedding_calls(fake_provider)) == before


def test_budget_and_price_commands_refuse_bad_input_with_one_line_and_write_nothing(stack: Stack, tenant: str) -> None:
    for args in (
        ["budget", "set", "--tenant", tenant, "--period", "day"],  # no limit
        ["budget", "set", "--tenant", tenant, "--period", "week", "--tokens", "5"],
        ["budget", "set", "--tenant", tenant, "--period", "day", "--cost", "-1"],
        ["budget", "set", "--tenant", tenant, "--period", "day", "--tokens", "5", "--model", "no-factory"],
        ["budget", "clear", "--tenant", tenant],  # none set
        ["price", "set", "--model", MODEL, "--input", "2"],  # not USD per token
        ["price", "set", "--model", "no-factory", "--input", "1e-6"],
    ):
        done = cli(stack, *args)
        assert done.returncode != 0 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, args
    assert json.loads(cli(stack, "budget", "show", "--tenant", tenant, "--json").stdout) == []
    shown = json.loads(cli(stack, "price", "show", "--model", MODEL, "--json").stdout)
    assert shown["source"] in ("catalog", "override") and shown["model"] == MODEL
    text = cli(stack, "budget", "set", "--tenant", tenant, "--cost", "2.5", "--period", "month")
    assert text.returncode == 0 and "2.5000 USD" in text.stdout
