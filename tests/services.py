"""Real Redis and PostgreSQL for the test suite.

Each service is resolved once per process, on first use:

1. ``MODELYARD_TEST_REDIS_URL`` / ``MODELYARD_TEST_DATABASE_URL`` when set (checked with a PING
   and a ``SELECT 1``; one clear line naming the variable if they don't answer);
2. otherwise a throwaway ``redis-server`` / PostgreSQL (``initdb`` + ``postgres``) started on a
   free 127.0.0.1 port in a temp dir, stopped and removed at interpreter exit;
3. otherwise :class:`ServicesUnavailable`, whose message says what to set or install.

Tests never use those base URLs directly: :func:`fresh_database` makes a uniquely named
database (dropped with :func:`drop_database`) and :func:`fresh_redis_db` picks a logical Redis
database no one else is using, so a shared server's data is never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

REDIS_ENV = "MODELYARD_TEST_REDIS_URL"
DATABASE_ENV = "MODELYARD_TEST_DATABASE_URL"
REDIS_DB_ENV = "MODELYARD_TEST_REDIS_DB"  # optional: use this Redis db number, no locking
STARTUP_TIMEOUT = 30.0  # seconds for a throwaway server to accept connections
TEST_DB_PREFIX = "modelyard_test_"
NEEDED = (
    "modelyard's tests need Redis and PostgreSQL: set MODELYARD_TEST_REDIS_URL and "
    "MODELYARD_TEST_DATABASE_URL, or install redis-server and PostgreSQL (initdb, postgres) so the "
    "tests can start throwaway servers (Debian: apt-get install redis-server postgresql)"
)
_PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_LOCK_KEY = "modelyard:testdb:{}"  # in Redis db 0: db N is in use by a test run (expires)
_USED_KEY = "modelyard:testdb:{}:used"  # in Redis db 0: db N holds only modelyard test data


class ServicesUnavailable(RuntimeError):
    """Redis or PostgreSQL can't be had for the tests; the message says why and what to do."""


class ServicesRefused(RuntimeError):
    """A test not marked ``services`` asked for Redis or PostgreSQL (see tests/service_guard.py)."""


@dataclass
class _Server:
    label: str
    url: str
    process: subprocess.Popen[bytes]
    tmpdir: Path
    stop_signal: int
    owner_pid: int
    startup_seconds: float = 0.0


_lock = threading.RLock()
_resolved: dict[str, str | ServicesUnavailable] = {}
_servers: dict[str, _Server] = {}
_created_databases: set[str] = set()
_redis_dbs: dict[str, tuple[int, str | None]] = {}  # base URL -> (db, lock token or None)
_refusal: str | None = None  # set while a test that is not marked `services` runs


def refuse(reason: str | None) -> str | None:
    """From now on, fail every request for a service with ``reason`` (None: serve them again).
    Returns the reason in force before, to put back."""
    global _refusal
    before, _refusal = _refusal, reason
    return before


def _check_allowed() -> None:
    if _refusal is not None:
        raise ServicesRefused(_refusal)


# --- public API -------------------------------------------------------------------------------


def redis_url() -> str:
    """A Redis URL for the tests (see the module doc); resolved once per process."""
    return _once("redis", _resolve_redis)


def database_url() -> str:
    """A ``postgresql+psycopg://`` URL of a PostgreSQL server; resolved once per process."""
    return _once("postgres", _resolve_postgres)


def fresh_database(base_url: str) -> str:
    """Create a new, uniquely named database on ``base_url``'s server and return its URL."""
    _check_allowed()
    name = f"{TEST_DB_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"
    with _pg_connect(base_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    url = _with_path(_sqlalchemy_url(base_url), name)
    with _lock:
        if not _created_databases:  # the cleanup finds nothing to do once they are all dropped
            atexit.unregister(_drop_leftover_databases)
            atexit.register(_drop_leftover_databases)
        _created_databases.add(url)
    return url


def drop_database(url: str) -> None:
    """Drop a database made by :func:`fresh_database`, disconnecting whoever still uses it."""
    name = unquote(urlsplit(url).path.lstrip("/"))
    if not name.startswith(TEST_DB_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: only databases made by fresh_database are dropped")
    try:
        conn = _pg_connect(_with_path(url, "postgres"))
    except psycopg.OperationalError:
        conn = _pg_connect(_with_path(url, "template1"))
    with conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))
    with _lock:
        _created_databases.discard(_sqlalchemy_url(url))


def fresh_redis_db(base_url: str) -> str:
    """Return ``base_url`` pointed at a Redis db this process owns, emptied (FLUSHDB).

    The db is picked once per process and server: ``MODELYARD_TEST_REDIS_DB`` if set, else the
    first of 1..15 whose lock key (``SET modelyard:testdb:N NX EX 3600`` in db 0) we get and that
    is empty or known to hold only modelyard test data. It is emptied and unlocked at exit.
    """
    _check_allowed()
    with _lock:
        if base_url not in _redis_dbs:
            _redis_dbs[base_url] = _claim_redis_db(base_url)
            atexit.register(lambda: _release_redis_db(base_url))
        db = _redis_dbs[base_url][0]
    url = _with_redis_db(base_url, db)
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def describe() -> str:
    """One line saying which services the tests use (starts nothing, prints no password)."""
    return "; ".join((_describe("redis", "Redis", REDIS_ENV), _describe("postgres", "PostgreSQL", DATABASE_ENV)))


# --- resolution -------------------------------------------------------------------------------


def _once(key: str, resolve: Callable[[], str]) -> str:
    _check_allowed()
    with _lock:
        if key not in _resolved:
            try:
                _resolved[key] = resolve()
            except ServicesUnavailable as exc:
                _resolved[key] = exc
        result = _resolved[key]
    if isinstance(result, ServicesUnavailable):
        raise ServicesUnavailable(str(result))
    return result


def _resolve_redis() -> str:
    url = os.environ.get(REDIS_ENV, "").strip()
    if url:
        _check_env(REDIS_ENV, "Redis", url, _ping_redis)
        return url
    exe = shutil.which("redis-server")
    if exe is None:
        raise ServicesUnavailable(f"{NEEDED} [not found: redis-server]")
    return _start_redis(exe)


def _resolve_postgres() -> str:
    url = os.environ.get(DATABASE_ENV, "").strip()
    if url:
        if url.partition("://")[0].split("+")[0] not in ("postgresql", "postgres"):
            raise ServicesUnavailable(f"{DATABASE_ENV}={_redact(url)} is not a postgresql:// URL")
        _check_env(DATABASE_ENV, "PostgreSQL", url, _select_one)
        return _sqlalchemy_url(url)
    bindir = _pg_bindir()
    if bindir is None:
        raise ServicesUnavailable(f"{NEEDED} [not found: initdb, postgres]")
    return _start_postgres(bindir)


def _check_env(var: str, label: str, url: str, probe: Callable[[str], None]) -> None:
    try:
        probe(url)
    except Exception as exc:  # noqa: BLE001 - any failure means "does not answer"
        raise ServicesUnavailable(
            f"{var}={_redact(url)} is set but {label} there does not answer: {_one_line(exc, url)}"
        ) from None


def _ping_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    finally:
        client.close()


def _select_one(url: str) -> None:
    with _pg_connect(url, timeout=3) as conn:
        conn.execute("SELECT 1").fetchone()


# --- throwaway servers ------------------------------------------------------------------------


def _start_redis(exe: str) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-redis-"))
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    cmd = [
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        str(tmp),
    ]
    return _run_server("redis", "Redis", cmd, tmp, url, signal.SIGTERM, lambda: _ping_redis(url), {})


def _start_postgres(bindir: Path) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-pg-"))
    as_user: dict[str, object] = {}
    if os.geteuid() == 0:  # postgres refuses to run as root
        user = _unprivileged_user()
        os.chown(tmp, user.pw_uid, user.pw_gid)
        as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    data, log = tmp / "data", tmp / "server.log"
    started = time.monotonic()
    with open(log, "wb") as out:
        initdb = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            timeout=STARTUP_TIMEOUT * 2,
            check=False,
            **as_user,  # type: ignore[call-overload]
        )
    if initdb.returncode != 0:
        tail = _tail(log)
        shutil.rmtree(tmp, ignore_errors=True)
        raise ServicesUnavailable(
            f"initdb for the throwaway PostgreSQL failed (exit {initdb.returncode})\n--- end of its log:\n{tail}"
        )
    port = _free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    cmd = [
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(tmp),
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
    ]
    return _run_server(
        "postgres",
        "PostgreSQL",
        cmd,
        tmp,
        url,
        signal.SIGINT,  # SIGINT: fast shutdown
        lambda: _select_one(url),
        as_user,
        started,
    )


def _run_server(
    key: str,
    label: str,
    cmd: list[str],
    tmp: Path,
    url: str,
    stop_signal: int,
    probe: Callable[[], None],
    as_user: dict[str, object],
    started: float | None = None,
) -> str:
    started = time.monotonic() if started is None else started
    log = tmp / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            start_new_session=True,
            **as_user,
        )  # type: ignore[call-overload]
    server = _Server(label, url, proc, tmp, stop_signal, os.getpid())
    deadline = started + STARTUP_TIMEOUT
    while True:
        if proc.poll() is not None:
            why = f"exited with code {proc.returncode}"
            break
        try:
            probe()
        except Exception as exc:  # noqa: BLE001 - not up yet
            why = f"did not accept connections within {STARTUP_TIMEOUT:.0f}s ({_one_line(exc, url)})"
        else:
            server.startup_seconds = time.monotonic() - started
            _servers[key] = server
            atexit.register(lambda: _stop(server))
            return url
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    tail = _tail(log)
    _stop(server)
    raise ServicesUnavailable(f"throwaway {label} ({Path(cmd[0]).name} on {url}) {why}\n--- end of its log:\n{tail}")


def _stop(server: _Server) -> None:
    if os.getpid() != server.owner_pid:  # a forked child inherited our atexit handlers
        return
    proc = server.process
    if proc.poll() is None:
        proc.send_signal(server.stop_signal)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    shutil.rmtree(server.tmpdir, ignore_errors=True)


def _pg_bindir() -> Path | None:
    """The directory holding both ``initdb`` and ``postgres``: PATH first, then Debian's layout."""
    dirs = [Path(found).resolve().parent for name in ("initdb", "postgres") if (found := shutil.which(name))]

    def version(d: str) -> int:
        digits = Path(d).parent.name
        return int(digits) if digits.isdigit() else 0

    dirs += [Path(d) for d in sorted(glob.glob(_PG_BIN_GLOB), key=version, reverse=True)]
    return next((d for d in dirs if (d / "initdb").is_file() and (d / "postgres").is_file()), None)


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServicesUnavailable("running as root, and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


# --- Redis databases --------------------------------------------------------------------------


def _claim_redis_db(base_url: str) -> tuple[int, str | None]:
    override = os.environ.get(REDIS_DB_ENV, "").strip()
    if override:
        if not override.isdigit():
            raise ServicesUnavailable(f"{REDIS_DB_ENV} must be a Redis database number, got {override!r}")
        return int(override), None
    admin = redis.Redis.from_url(_with_redis_db(base_url, 0), socket_timeout=10, decode_responses=True)
    try:
        try:
            count = int(admin.config_get("databases").get("databases", 16))
        except redis.ResponseError:  # CONFIG may be disabled on a managed server
            count = 16
        token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        for db in range(1, count):
            if not admin.set(_LOCK_KEY.format(db), token, nx=True, ex=3600):
                continue  # another test run has it
            probe = redis.Redis.from_url(_with_redis_db(base_url, db), socket_timeout=10)
            try:
                foreign = probe.dbsize() > 0 and not admin.exists(_USED_KEY.format(db))
            finally:
                probe.close()
            if foreign:  # someone else's data: leave it alone
                admin.delete(_LOCK_KEY.format(db))
                continue
            admin.set(_USED_KEY.format(db), "1", ex=30 * 86400)
            return db, token
    finally:
        admin.close()
    raise ServicesUnavailable(
        f"no free Redis database on {_redact(base_url)}: 1..{count - 1} are locked by other test runs or hold "
        f"other data; set {REDIS_DB_ENV} to the number of one the tests may empty"
    )


def _release_redis_db(base_url: str) -> None:
    db, token = _redis_dbs.get(base_url, (0, None))
    if token is None or token.split(":")[-2] != str(os.getpid()):
        return  # an explicit MODELYARD_TEST_REDIS_DB, or a forked child: not ours to release
    client = redis.Redis.from_url(_with_redis_db(base_url, db), socket_timeout=3)
    admin = redis.Redis.from_url(_with_redis_db(base_url, 0), socket_timeout=3, decode_responses=True)
    try:
        client.flushdb()
        if admin.get(_LOCK_KEY.format(db)) == token:
            admin.delete(_LOCK_KEY.format(db))
    except redis.RedisError:
        pass  # the server is gone: nothing to release
    finally:
        client.close()
        admin.close()


def _with_redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "db"]
    if parts.scheme == "unix":
        return urlunsplit(parts._replace(query=urlencode([*query, ("db", str(db))])))
    return urlunsplit(parts._replace(path=f"/{db}", query=urlencode(query)))


# --- PostgreSQL helpers -----------------------------------------------------------------------


def _sqlalchemy_url(url: str) -> str:
    return "postgresql+psycopg://" + url.partition("://")[2]


def _pg_connect(url: str, timeout: int = 10) -> psycopg.Connection:
    return psycopg.connect("postgresql://" + url.partition("://")[2], autocommit=True, connect_timeout=timeout)


def _with_path(url: str, database: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def _drop_leftover_databases() -> None:
    for url in list(_created_databases):
        if not urlsplit(url).path.lstrip("/").startswith(f"{TEST_DB_PREFIX}{os.getpid()}_"):
            continue  # a forked child: the parent drops its own databases
        with contextlib.suppress(psycopg.Error):  # the server is gone
            drop_database(url)


# --- reporting --------------------------------------------------------------------------------


def _describe(key: str, label: str, var: str) -> str:
    with _lock:
        result, server = _resolved.get(key), _servers.get(key)
    if isinstance(result, ServicesUnavailable):
        return f"{label} unavailable ({str(result).splitlines()[0]})"
    if server is not None:
        return f"{label} throwaway {_redact(server.url)} (started in {server.startup_seconds:.2f}s)"
    if result is not None:
        return f"{label} {_redact(result)} (from {var})"
    if os.environ.get(var, "").strip():
        return f"{label} {_redact(os.environ[var].strip())} (from {var}, not used yet)"
    return f"{label} throwaway server (started on first use)"


def _redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "(an unparsable URL)"


def _one_line(exc: BaseException, url: str) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return (text.replace(password, "***") if password else text)[:300]
