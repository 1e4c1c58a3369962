"""tests/services.py: env-var services, throwaway servers, fresh databases, clear failures.

Resolution happens once per process, so each path is exercised in a child interpreter with
its own environment; what the child saw comes back as one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from tests import services

pytestmark = pytest.mark.services  # starts and probes real Redis and PostgreSQL servers

ROOT = Path(__file__).resolve().parent.parent
ENV_VARS = (services.REDIS_ENV, services.DATABASE_ENV, services.REDIS_DB_ENV)
MACHINE_REDIS = os.environ.get(services.REDIS_ENV) or "redis://127.0.0.1:6379/0"
MACHINE_DB = os.environ.get(services.DATABASE_ENV) or "postgresql://postgres@127.0.0.1:5432/test"


def run_child(script: str, env: dict[str, str] | None = None) -> dict:
    """Run ``script`` in a fresh interpreter with none of the MODELYARD_TEST_* variables but ``env``."""
    child_env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    child_env.update(env or {})
    child_env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        check=False,
        env=child_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def libpq(url: str) -> str:
    return "postgresql://" + url.partition("://")[2]


def accepts_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but never listens, so connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def base_database() -> str:
    try:
        return services.database_url()
    except services.ServicesUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def base_redis() -> str:
    try:
        return services.redis_url()
    except services.ServicesUnavailable as exc:
        pytest.skip(str(exc))


def test_env_vars_point_at_the_given_services() -> None:
    try:
        services._ping_redis(MACHINE_REDIS)
        services._select_one(MACHINE_DB)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"the machine's Redis/PostgreSQL are not up: {exc}")
    seen = run_child(
        """
        import json
        from tests import services as s
        before = s.describe()
        r, d = s.redis_url(), s.database_url()
        assert s.redis_url() is r and s.database_url() is d  # once per process
        print(json.dumps({"redis": r, "db": d, "started": sorted(s._servers), "before": before,
                          "after": s.describe()}))
    """,
        {services.REDIS_ENV: MACHINE_REDIS, services.DATABASE_ENV: MACHINE_DB},
    )
    assert seen["redis"] == MACHINE_REDIS
    assert seen["db"] == "postgresql+psycopg://" + MACHINE_DB.partition("://")[2]
    assert seen["started"] == []
    assert "not used yet" in seen["before"]
    assert f"(from {services.REDIS_ENV})" in seen["after"] and f"(from {services.DATABASE_ENV})" in seen["after"]


def test_throwaway_servers_take_a_write_and_a_read_and_go_away_at_exit() -> None:
    if shutil.which("redis-server") is None or services._pg_bindir() is None:
        pytest.skip(services.NEEDED)
    seen = run_child("""
        import json, psycopg, redis
        from tests import services as s
        assert "started on first use" in s.describe()
        r, d = s.redis_url(), s.database_url()
        client = redis.Redis.from_url(r)
        client.set("greeting", "hello")
        got_redis = client.get("greeting").decode()
        client.close()
        with psycopg.connect("postgresql://" + d.partition("://")[2], autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x text)")
            conn.execute("INSERT INTO t VALUES ('hello')")
            got_pg = conn.execute("SELECT x FROM t").fetchone()[0]
        servers = {k: {"pid": v.process.pid, "tmpdir": str(v.tmpdir), "seconds": v.startup_seconds}
                   for k, v in s._servers.items()}
        print(json.dumps({"redis": r, "db": d, "got_redis": got_redis, "got_pg": got_pg,
                          "servers": servers, "describe": s.describe()}))
    """)
    assert seen["got_redis"] == "hello" and seen["got_pg"] == "hello"
    assert set(seen["servers"]) == {"redis", "postgres"}
    assert "throwaway" in seen["describe"]
    ports = [urlsplit(seen["redis"]).port, urlsplit(seen["db"]).port]
    assert 6379 not in ports and 5432 not in ports
    for port in ports:  # stopped at the child's exit...
        assert not accepts_connections(port)
    for server in seen["servers"].values():  # ...and their temp dirs removed
        assert not Path(server["tmpdir"]).exists()
        with pytest.raises(ProcessLookupError):
            os.kill(server["pid"], 0)


def test_a_throwaway_server_that_cannot_start_reports_the_end_of_its_log() -> None:
    if shutil.which("redis-server") is None or services._pg_bindir() is None:
        pytest.skip(services.NEEDED)
    seen = run_child("""
        import json, socket
        from tests import services as s
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        s._free_port = lambda: busy.getsockname()[1]  # both servers fail to bind
        messages = []
        for get in (s.redis_url, s.database_url):
            try:
                get()
            except s.ServicesUnavailable as exc:
                messages.append(str(exc))
        print(json.dumps({"messages": messages, "describe": s.describe()}))
    """)
    redis_msg, pg_msg = seen["messages"]
    assert redis_msg.startswith("throwaway Redis (redis-server on redis://127.0.0.1:")
    assert "exited with code" in redis_msg
    assert "Address already in use" in redis_msg.split("--- end of its log:")[1]
    assert pg_msg.startswith("throwaway PostgreSQL (postgres on ") and "exited with code" in pg_msg
    assert "could not bind" in pg_msg.split("--- end of its log:")[1]
    assert "Redis unavailable (throwaway Redis" in seen["describe"] and "\n" not in seen["describe"]


def test_fresh_database_is_created_usable_and_dropped(base_database: str) -> None:
    url = services.fresh_database(base_database)
    name = urlsplit(url).path.lstrip("/")
    assert url.startswith("postgresql+psycopg://") and name.startswith("modelyard_test_")
    lingering = psycopg.connect(libpq(url), autocommit=True)  # drop_database must disconnect it
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (name,)
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (42)")
        assert conn.execute("SELECT x FROM t").fetchone() == (42,)
    services.drop_database(url)
    with psycopg.connect(libpq(base_database), autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None
    with pytest.raises(psycopg.OperationalError):
        lingering.execute("SELECT 1")
    lingering.close()
    with pytest.raises(ValueError, match="refusing to drop 'test'"):
        services.drop_database(base_database.rsplit("/", 1)[0] + "/test")


def test_fresh_redis_db_is_private_and_emptied(base_redis: str) -> None:
    url = services.fresh_redis_db(base_redis)
    db = int(urlsplit(url).path.lstrip("/"))
    assert db != 0
    client = redis.Redis.from_url(url)
    client.set("leftover", "1")
    assert services.fresh_redis_db(base_redis) == url  # same db for the whole run...
    assert client.dbsize() == 0  # ...emptied on each call
    client.close()
    other, _ = services._claim_redis_db(base_redis)  # a second run gets another db
    try:
        assert other != db
    finally:
        admin = redis.Redis.from_url(services._with_redis_db(base_redis, 0))
        admin.delete(services._LOCK_KEY.format(other), services._USED_KEY.format(other))
        admin.close()


def test_fresh_redis_db_leaves_other_peoples_data_alone() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip(services.NEEDED)
    seen = run_child("""
        import json, redis
        from tests import services as s
        base = s.redis_url()  # a throwaway server, so we may plant foreign data
        for db in (1, 2):
            redis.Redis.from_url(s._with_redis_db(base, db)).set("theirs", "1")
        url = s.fresh_redis_db(base)
        kept = [redis.Redis.from_url(s._with_redis_db(base, db)).get("theirs") is not None for db in (1, 2)]
        print(json.dumps({"url": url, "kept": kept}))
    """)
    assert urlsplit(seen["url"]).path == "/3"
    assert seen["kept"] == [True, True]


def test_unreachable_env_urls_give_one_clear_line(closed_port: int) -> None:
    redis_bad = f"redis://:s3cret@127.0.0.1:{closed_port}/0"
    db_bad = f"postgresql://bob:s3cret@127.0.0.1:{closed_port}/test"
    seen = run_child(
        """
        import json
        from tests import services as s
        messages = []
        for get in (s.redis_url, s.database_url, s.database_url):
            try:
                get()
            except s.ServicesUnavailable as exc:
                messages.append(str(exc))
        print(json.dumps({"messages": messages, "describe": s.describe()}))
    """,
        {services.REDIS_ENV: redis_bad, services.DATABASE_ENV: db_bad},
    )
    redis_msg, db_msg, db_again = seen["messages"]
    assert redis_msg.startswith(f"{services.REDIS_ENV}=redis://:***@127.0.0.1:{closed_port}/0 is set but Redis")
    assert db_msg.startswith(f"{services.DATABASE_ENV}=postgresql://bob:***@127.0.0.1:{closed_port}/test is set")
    assert db_again == db_msg  # the failure is remembered, not retried
    for text in (redis_msg, db_msg, seen["describe"]):
        assert "\n" not in text and "s3cret" not in text


def test_no_services_and_no_binaries_says_what_is_needed() -> None:
    seen = run_child(
        """
        import json
        from tests import services as s
        s._PG_BIN_GLOB = "/nonexistent/*/bin"
        messages = []
        for get in (s.redis_url, s.database_url):
            try:
                get()
            except s.ServicesUnavailable as exc:
                messages.append(str(exc))
        print(json.dumps({"messages": messages}))
    """,
        {"PATH": "/nonexistent"},
    )
    assert len(seen["messages"]) == 2
    for message in seen["messages"]:
        assert message.startswith(services.NEEDED) and "\n" not in message
        assert "MODELYARD_TEST_REDIS_URL" in message and "apt-get install redis-server postgresql" in message
