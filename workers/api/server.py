"""``modelyard api``: serve the API with uvicorn (one process; run several behind a proxy to scale)."""

from __future__ import annotations

import uvicorn

from conf.settings import get_settings


def serve(host: str | None = None, port: int | None = None, log_level: str = "info") -> None:
    settings = get_settings()
    from workers.api.app import create_app

    # The access log has method, path and status: never a header (the token) or a body (a key).
    uvicorn.run(
        create_app(),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level=log_level,
        proxy_headers=True,
        server_header=False,
    )
