"""The API under test: ``modelyard api`` served by uvicorn in a subprocess on a free loopback
port, against the test stack's Postgres and Redis; tenants and tokens made through the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import ROOT, Stack, cli

KEY = "sk-test-valid-key-0001"  # the key the fake_provider fixture accepts
EMBED_MODEL = "text-embedding-3-small@OpenAI"
CHAT_MODEL = "gpt-4o-mini@OpenAI"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServer:
    proc: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)


def start_api(stack: Stack, log_dir: Path, extra_env: dict[str, str] | None = None) -> ApiServer:
    port = free_port()
    log = log_dir / f"api-{port}.log"
    env = {**os.environ, **stack.env, **(extra_env or {})}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ApiServer(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"api exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"api not ready:\n{server.log_text()[-3000:]}")


def make_tenant(base_url: str) -> str:
    """A tenant whose embedding and chat models call the fake provider at ``base_url``."""
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm

    with session_scope() as session:
        tenant_id = create_tenant(session, f"api-{uuid.uuid4().hex[:10]}", defaults=False)
        save_llm(session, tenant_id, EMBED_MODEL, "embedding", api_key=KEY, api_base=base_url)
        save_llm(session, tenant_id, CHAT_MODEL, "chat", api_key=KEY, api_base=base_url)
    return tenant_id


def make_token(stack: Stack, tenant: str | None, *scopes: str) -> dict:
    args = ["token", "create", "--json"] + (["--tenant", tenant] if tenant else [])
    for scope in scopes:
        args += ["--scope", scope]
    done = cli(stack, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
