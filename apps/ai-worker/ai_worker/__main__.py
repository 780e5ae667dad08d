"""`python -m ai_worker`: validate settings, then serve on WORKER_HOST:WORKER_PORT."""

from __future__ import annotations

import sys

import uvicorn

from .app import create_app
from .config import ConfigError, load_settings
from .jsonlog import setup_logging


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    app = create_app(settings)
    # log_config=None: uvicorn's own loggers propagate to our JSON root handler.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        # Named, not "auto": the dev venv has uvloop and httptools (the mock servers' uvicorn extras),
        # and the worker must run the same loop there as in production.
        loop="asyncio",
        http="h11",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
