"""Submitting a 100,000-line embedding batch through the HTTP API (official openai client:
upload + create batch) against the same job through the Python producer API. Measures submit
time and the producer's peak memory (each side runs in its own process; the API server's
peak RSS is reported too). No workers: this measures submission only.

    python -m tests.bench.api_submit --lines 100000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.fernet import Fernet

from tests import services
from tests.api_stack import EMBED_MODEL, make_token, start_api
from tests.conftest import Stack, apply_env


def _lines(n: int) -> bytes:
    buf = io.StringIO()
    for i in range(n):
        buf.write(
            json.dumps(
                {
                    "custom_id": f"doc-{i}",
                    "method": "POST",
                    "url": "/v1/embeddings",
                    "body": {"model": EMBED_MODEL, "input": f"document {i} about queues and workers"},
                }
            )
            + "\n"
        )
    return buf.getvalue().encode()


def _child(mode: str, n: int, base_url: str, token: str, tenant: str) -> None:
    start = time.perf_counter()
    if mode == "api":
        import openai

        path = Path(tempfile.mkdtemp()) / "in.jsonl"
        path.write_bytes(_lines(n))
        start = time.perf_counter()
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=0, timeout=600)
        with path.open("rb") as fh:
            f = client.files.create(file=fh, purpose="batch")
        client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    else:
        from tasks import producer

        producer.submit_embedding(
            tenant,
            EMBED_MODEL,
            ({"custom_id": f"doc-{i}", "text": f"document {i} about queues and workers"} for i in range(n)),
        )
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "mode": mode,
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--child", default=None)
    ap.add_argument("--base-url", default="")
    ap.add_argument("--token", default="")
    ap.add_argument("--tenant", default="")
    args = ap.parse_args()
    if args.child:
        _child(args.child, args.lines, args.base_url, args.token, args.tenant)
        return
    db = services.fresh_database(services.database_url())
    redis_url = services.fresh_redis_db(services.redis_url())
    data_dir = Path(tempfile.mkdtemp())
    env = {
        "MODELYARD_DATABASE_URL": db,
        "MODELYARD_BROKER_URL": redis_url,
        "MODELYARD_DATA_DIR": str(data_dir),
        "MODELYARD_SECRET_KEY": Fernet.generate_key().decode(),
    }
    apply_env(env)
    stack = Stack(env=env, data_dir=data_dir, redis_url=redis_url, database_url=db)
    from models.db import get_engine, session_scope
    from models.migrate import upgrade
    from models.tenants import create_tenant, save_llm
    from tasks.runtime import current

    upgrade(get_engine())
    with session_scope() as session:
        tenant = create_tenant(session, "bench", defaults=False)
        save_llm(
            session, tenant, EMBED_MODEL, "embedding", api_key="sk-bench-key-000000", api_base="http://127.0.0.1:9"
        )
    token = make_token(stack, tenant, "jobs")["token"]
    server = start_api(stack, data_dir)
    try:
        for mode in ("producer", "api"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.api_submit",
                    "--child",
                    mode,
                    "--lines",
                    str(args.lines),
                    "--base-url",
                    server.base_url,
                    "--token",
                    token,
                    "--tenant",
                    tenant,
                ],
                check=False,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=1200,
            )
            print(out.stdout.strip() or out.stderr[-2000:])
        status = Path(f"/proc/{server.proc.pid}/status").read_text()
        print("api server", next(line for line in status.splitlines() if line.startswith("VmHWM")))
    finally:
        server.stop()
        current().close()
        services.drop_database(db)


if __name__ == "__main__":
    main()
