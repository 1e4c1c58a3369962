"""compose.yaml and the Dockerfile, checked as a user's ``docker compose up`` would need them.

There is no Docker engine here, so the file is read with PyYAML (which resolves the ``&anchor``
/ ``*alias`` / ``<<:`` merge keys the way Compose does) and its commands are parsed with our
own CLI parser: a typo in a queue name, a flag the CLI does not know, a service without the
database URL, a second beat, or a worker that can start before the schema exists all fail here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.app import QUEUES
from workers.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("conf", "providers", "models", "tasks", "workers")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the ["KEY=value", ...] spelling
        return dict(entry.partition("=")[::2] for entry in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _app_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services that run modelyard itself (its image, or a ``modelyard ...`` command)."""
    return {
        name: svc
        for name, svc in services.items()
        if _command(svc)[:1] == ["modelyard"] or str(svc.get("image", "")).startswith("modelyard")
    }


def _parsed(service: dict[str, Any]):
    return build_parser().parse_args(_command(service)[1:])


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    return {d: {} for d in deps} if isinstance(deps, list) else deps


def test_compose_has_the_production_services(services: dict[str, dict[str, Any]]) -> None:
    """redis, postgres, migrate, beat and flower exist, plus at least one worker service."""
    for name in ("redis", "postgres", "migrate", "beat", "flower"):
        assert name in services, f"compose.yaml has no {name!r} service"
    workers = [n for n, s in _app_services(services).items() if _parsed(s).command == "worker"]
    assert workers, "compose.yaml runs no `modelyard worker`"


def test_every_modelyard_command_parses_with_the_cli(services: dict[str, dict[str, Any]]) -> None:
    """Each service's ``modelyard ...`` command is accepted by ``workers.cli.build_parser()``
    (argparse exits on an unknown flag, a bad ``-P`` choice or a missing argument)."""
    app_services = _app_services(services)
    assert app_services
    for name, svc in app_services.items():
        cmd = _command(svc)
        assert cmd[:1] == ["modelyard"], f"{name}: command {cmd} does not run modelyard"
        try:
            _parsed(svc)
        except SystemExit as exc:
            pytest.fail(f"{name}: `{' '.join(cmd)}` is rejected by the CLI parser (exit {exc.code})")


def test_workers_together_consume_every_queue(services: dict[str, dict[str, Any]]) -> None:
    """The union of the worker services' ``-Q`` lists is exactly ``tasks.app.QUEUES``: every
    model type and maintenance has a consumer, and no worker names a queue that does not exist."""
    consumed: set[str] = set()
    for name, svc in _app_services(services).items():
        args = _parsed(svc)
        if args.command != "worker":
            continue
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        unknown = set(queues) - set(QUEUES)
        assert not unknown, f"{name} consumes unknown queue(s) {sorted(unknown)}"
        consumed |= set(queues)
    assert consumed == set(QUEUES), f"no worker consumes {sorted(set(QUEUES) - consumed)}"


def test_every_app_service_gets_the_database_and_broker(services: dict[str, dict[str, Any]]) -> None:
    """After merging the anchors, each modelyard service points at Postgres (psycopg) and Redis,
    not at the embedded SQLite defaults, and gets the secret key for API keys at rest."""
    for name, svc in _app_services(services).items():
        env = _environment(svc)
        assert env.get("MODELYARD_DATABASE_URL", "").startswith("postgresql+psycopg://"), (
            f"{name}: MODELYARD_DATABASE_URL is {env.get('MODELYARD_DATABASE_URL')!r}"
        )
        assert env.get("MODELYARD_BROKER_URL", "").startswith("redis://"), (
            f"{name}: MODELYARD_BROKER_URL is {env.get('MODELYARD_BROKER_URL')!r}"
        )
        assert env.get("MODELYARD_SECRET_KEY"), f"{name}: no MODELYARD_SECRET_KEY"
        host_db = re.search(r"@([^:/]+)[:/]", env["MODELYARD_DATABASE_URL"])
        assert host_db and host_db[1] in services, f"{name}: the database host is not a compose service"
        assert env["MODELYARD_BROKER_URL"].split("//")[1].split(":")[0] in services, (
            f"{name}: the broker host is not a compose service"
        )


def test_exactly_one_beat(services: dict[str, dict[str, Any]]) -> None:
    """One beat scheduler in the whole file (two would send every sweep twice): one ``modelyard
    beat`` service, not scaled up, and no worker started with ``-B``."""
    beats = []
    for name, svc in _app_services(services).items():
        args = _parsed(svc)
        if args.command == "beat":
            beats.append(name)
            replicas = (svc.get("deploy") or {}).get("replicas", 1)
            assert replicas == 1, f"{name}: beat must run one replica, not {replicas}"
            assert svc.get("scale", 1) == 1
        elif args.command == "worker" and args.beat:
            beats.append(name)
    assert len(beats) == 1, f"expected exactly one beat, found {beats}"


def test_migrate_runs_once_and_workers_wait_for_it(services: dict[str, dict[str, Any]]) -> None:
    """``migrate`` runs ``modelyard db upgrade`` once (not restarted), after Postgres is healthy;
    every worker, beat and flower start only after it completed successfully."""
    migrate = services["migrate"]
    args = _parsed(migrate)
    assert (args.command, args.db_command) == ("db", "upgrade")
    assert str(migrate.get("restart", "no")) in ("no", "False", "false", "on-failure")
    assert _depends_on(migrate).get("postgres", {}).get("condition") == "service_healthy"
    for name, svc in _app_services(services).items():
        if name == "migrate":
            continue
        condition = _depends_on(svc).get("migrate", {}).get("condition")
        assert condition == "service_completed_successfully", (
            f"{name} does not wait for migrate to complete (depends_on.migrate.condition={condition!r})"
        )


def test_flower_is_protected_by_basic_auth(services: dict[str, dict[str, Any]]) -> None:
    """Flower shows task arguments and controls workers: compose must require its password."""
    flower = services["flower"]
    assert _parsed(flower).command == "flower"
    auth = _environment(flower).get("MODELYARD_FLOWER_BASIC_AUTH", "")
    assert auth.startswith("${") and ":?" in auth, f"MODELYARD_FLOWER_BASIC_AUTH should be required, is {auth!r}"


def test_references_inside_the_file_resolve(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    """What ``docker compose config`` would reject: a depends_on naming no service, a named
    volume that is not declared, a service with neither image nor build."""
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name} has neither image nor build"
        for dep in _depends_on(svc):
            assert dep in services, f"{name} depends on unknown service {dep!r}"
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name} uses undeclared volume {source!r}"


def _dockerfile_copies() -> list[list[str]]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    return [line.split()[1:] for line in lines if line.strip().upper().startswith("COPY ")]


def test_dockerfile_copies_the_five_packages() -> None:
    """The image holds conf, providers, models, tasks and workers (what pyproject packages),
    and every file or directory it copies exists in the build context."""
    copies = _dockerfile_copies()
    copied = {src.rstrip("/") for *sources, _dest in copies for src in sources if not src.startswith("--")}
    missing = [p for p in PACKAGES if p not in copied]
    assert not missing, f"the Dockerfile does not COPY {missing}"
    absent = [src for src in copied if not (ROOT / src).exists()]
    assert not absent, f"the Dockerfile copies files that are not in the build context: {absent}"


def test_api_service_serves_and_checks_readiness(services: dict[str, dict[str, Any]]) -> None:
    """``modelyard api`` binds all interfaces inside its container, publishes its port, keeps
    uploaded files on a volume, and its health check asks /readyz (database and broker)."""
    api = services["api"]
    args = _parsed(api)
    assert args.command == "api" and args.host == "0.0.0.0"
    assert any(str(p).endswith(f":{args.port}") for p in api.get("ports", []))
    check = " ".join(api["healthcheck"]["test"])
    assert f"127.0.0.1:{args.port}/readyz" in check
    data_dir = _environment(api)["MODELYARD_DATA_DIR"]
    assert any(str(v).endswith(f":{data_dir}") for v in api.get("volumes", []))
