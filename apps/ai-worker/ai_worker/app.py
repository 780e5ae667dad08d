"""FastAPI app: its lifespan starts and stops the consumer; GET /health reports on it."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .config import Settings, load_settings
from .worker import Worker


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings are read from the environment here unless given."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = Worker(settings)
        app.state.worker = worker
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()

    app = FastAPI(title="Traffic Dam AI worker", lifespan=lifespan)
    app.state.settings = settings

    @app.get("/health")
    async def health() -> JSONResponse:
        worker: Worker | None = getattr(app.state, "worker", None)
        redis_ok = bool(worker) and await worker.redis_ok()
        if worker is None or not worker.running:
            status = "stopping"
        elif redis_ok:
            status = "ok"
        else:
            status = "degraded"
        body = {
            "status": status,
            "workerId": settings.worker_id,
            "inFlight": worker.in_flight if worker else 0,
            "redis": redis_ok,
        }
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    return app
