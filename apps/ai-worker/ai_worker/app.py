"""FastAPI app: its lifespan starts and stops the consumer; GET /health reports on it.

With WORKER_ADMIN_TOKEN set, /admin/faults reads and changes the fault injection
(faults.py); without it those routes are not registered at all, so they answer 404.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .config import Settings, load_settings
from .faults import Faults, FaultsError, parse_patch
from .jsonlog import event
from .metrics import CONTENT_TYPE, WorkerMetrics
from .worker import Worker

log = logging.getLogger("ai_worker.admin")

MAX_ADMIN_BODY = 16_384


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Settings are read from the environment here unless given."""
    settings = settings or load_settings()
    faults = Faults.from_settings(settings)
    metrics = WorkerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = Worker(settings, faults=faults, metrics=metrics)
        app.state.worker = worker
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()

    app = FastAPI(title="Traffic Dam AI worker", lifespan=lifespan)
    app.state.settings = settings
    app.state.faults = faults

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
            "backend": settings.backend,
            "model": worker.backend.model if worker else None,
            "faults": faults.snapshot(),
        }
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    if settings.admin_token:
        _add_admin_routes(app, settings, faults)
    return app


def _problem(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="ai-worker-admin"'} if status == 401 else None
    return JSONResponse({"error": error, "message": message, **extra}, status_code=status, headers=headers)


def _add_admin_routes(app: FastAPI, settings: Settings, faults: Faults) -> None:
    assert settings.admin_token
    # Compare digests: constant time, and the token's length does not leak either.
    expected = hashlib.sha256(settings.admin_token.encode("utf-8")).digest()

    def refused(request: Request) -> JSONResponse | None:
        """None when the request carries the admin token, else the 401/403 answer."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            status, error, message = 401, "unauthorized", "an admin token is required: Authorization: Bearer <token>"
        elif hmac.compare_digest(hashlib.sha256(token.encode("utf-8")).digest(), expected):
            return None
        else:
            status, error, message = 403, "forbidden", "the admin token is not valid"
        event(
            log, logging.WARNING, "admin request refused",
            workerId=settings.worker_id, method=request.method, path=request.url.path, status=status,
            client=request.client.host if request.client else None,
        )
        return _problem(status, error, message)

    def changed(request: Request, action: str, fields: list[str]) -> None:
        event(
            log, logging.WARNING, "faults changed",
            workerId=settings.worker_id, action=action, fields=fields, faults=faults.snapshot(),
            client=request.client.host if request.client else None,
        )

    @app.get("/admin/faults")
    async def get_faults(request: Request) -> JSONResponse:
        if (no := refused(request)) is not None:
            return no
        return JSONResponse(faults.snapshot())

    @app.put("/admin/faults")
    async def put_faults(request: Request) -> JSONResponse:
        if (no := refused(request)) is not None:
            return no
        raw = await request.body()
        if len(raw) > MAX_ADMIN_BODY:
            return _problem(413, "too_large", f"the body must be at most {MAX_ADMIN_BODY} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:
            return _problem(400, "bad_request", f"the body is not valid JSON: {e}")
        try:
            patch = parse_patch(body)
        except FaultsError as e:
            return _problem(400, "bad_request", str(e), problems=e.problems)
        faults.apply(patch)
        changed(request, "put", [k for k in body])
        return JSONResponse(faults.snapshot())

    @app.delete("/admin/faults")
    async def delete_faults(request: Request) -> JSONResponse:
        if (no := refused(request)) is not None:
            return no
        faults.reset()
        changed(request, "delete", [])
        return JSONResponse(faults.snapshot())
