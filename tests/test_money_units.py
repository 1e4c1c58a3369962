"""Pure pieces of money and signals: pricing arithmetic, budget periods, token shares of the
cache, basic-auth checks, the price importer, and docs that name only real series."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conf.catalog import catalog_prices
from conf.price_import import build
from models.budgets import period_bounds
from models.prices import Price
from providers.base import Usage
from tasks.embed_cache import _apportion
from workers.metrics import check_basic_auth

ROOT = Path(__file__).resolve().parents[1]


def test_cost_bills_prompt_at_input_and_completion_at_output() -> None:
    p = Price(2e-6, 8e-6)
    assert p.cost(Usage(100, 50, 150)) == pytest.approx(100 * 2e-6 + 50 * 8e-6)
    assert p.cost(Usage(0, 0, 70)) == pytest.approx(70 * 2e-6)  # a total without the split: input price
    assert p.estimate(10) == pytest.approx(10 * 8e-6)


def test_budget_periods_are_utc_days_and_months() -> None:
    moment = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds("day", moment) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_bounds("month", moment) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


@pytest.mark.parametrize(("total", "weights"), [(75, [3, 3, 4, 5]), (7, [1, 1, 1]), (1000, [1]), (0, [2, 3])])
def test_cache_token_shares_add_up_to_what_was_billed(total: int, weights: list[int]) -> None:
    shares = _apportion(total, weights)
    assert sum(shares) == (total or sum(weights)) and len(shares) == len(weights)


def test_basic_auth_check() -> None:
    def header(pair: str) -> str:
        return "Basic " + base64.b64encode(pair.encode()).decode()

    assert check_basic_auth(header("prom:pw"), "prom:pw")
    assert check_basic_auth(header("b:2"), "a:1,b:2")
    assert not check_basic_auth(header("prom:wrong"), "prom:pw")
    assert not check_basic_auth(None, "prom:pw")
    assert not check_basic_auth("Bearer x", "prom:pw")
    assert not check_basic_auth("Basic %%%", "prom:pw")
    assert check_basic_auth(None, "")  # no auth configured


def test_price_import_takes_only_the_factorys_own_provider() -> None:
    prices = {
        "text-embedding-3-small": {
            "litellm_provider": "openai",
            "input_cost_per_token": 2e-8,
            "output_cost_per_token": 0.0,
        },
        "voyage/voyage-3": {"litellm_provider": "voyage", "input_cost_per_token": 6e-8},
        "gpt-4o": {"litellm_provider": "openrouter", "input_cost_per_token": 9.0},  # a reseller's: not OpenAI's
    }
    table = build(prices)
    assert table["text-embedding-3-small@OpenAI"]["input_cost_per_token"] == 2e-8
    assert table["voyage-3@Voyage AI"] == {"input_cost_per_token": 6e-8}
    assert "gpt-4o@OpenAI" not in table
    assert catalog_prices()["text-embedding-3-small@OpenAI"]["input_cost_per_token"] == pytest.approx(2e-8)


def test_dashboard_and_alerts_name_only_series_that_exist() -> None:
    import yaml

    source = (ROOT / "tasks" / "metrics.py").read_text() + (ROOT / "workers" / "metrics.py").read_text()
    defined = set(re.findall(r'"(modelyard_[a-z_]+)"', source))
    exprs = [
        r["expr"] for g in yaml.safe_load((ROOT / "docs" / "alerts.yml").read_text())["groups"] for r in g["rules"]
    ]
    dash = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {re.sub(r"_(total|bucket|count|sum)$", "", m) for e in exprs for m in re.findall(r"modelyard_[a-z_]+", e)}
    assert used and used <= defined, used - defined


def test_cache_store_lookup_and_eviction_on_sqlite(tmp_path: Path) -> None:
    from sqlalchemy.orm import Session

    from models import embed_cache
    from models.db import make_engine
    from models.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'c.sqlite'}")
    upgrade(engine)
    fp = embed_cache.model_fingerprint("OpenAI", "m", "", "document", None, 0)
    keys = [embed_cache.cache_key(fp, f"text {i}") for i in range(30)]
    with Session(engine) as session, session.begin():
        assert embed_cache.store(session, "t1", [(k, bytes([i]) * 4, i) for i, k in enumerate(keys)]) == 30
        assert embed_cache.store(session, "t1", [(keys[0], b"new!", 99)]) == 1  # present: kept as it was
    with Session(engine) as session, session.begin():
        found = embed_cache.lookup(session, "t1", keys + keys[:3])
        assert found[keys[0]] == (b"\0" * 4, 0) and len(found) == 30
        assert embed_cache.lookup(session, "t2", keys) == {}  # another scope sees nothing
        assert embed_cache.evict(session, "t1", 10) == 20
        assert len(embed_cache.lookup(session, "t1", keys)) == 10
    assert embed_cache.cache_key(fp, "a") != embed_cache.cache_key(
        embed_cache.model_fingerprint("OpenAI", "m", "", "query", None, 0), "a"
    )
    engine.dispose()
