"""``modelyard api``: serve the API with uvicorn (one process; run several behind a proxy to scale)."""

from __future__ import annotations

import uvicorn

from tasks.runtime import Runtime


def serve(runtime: Runtime, host: str | None = None, port: int | None = None, log_level: str = "info") -> None:
    settings = runtime.settings
    from workers.api.app import create_app

    # The access log has method, path and status: never a header (the token) or a body (a key).
    uvicorn.run(
        create_app(runtime),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level=log_level,
        proxy_headers=True,
        server_header=False,
    )
