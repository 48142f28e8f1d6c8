"""Assemble the Starlette app: model routes, health, readiness and metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.config.model import BastionConfig
from bastion.errors import BastionError, NotFound
from bastion.pipeline import Gateway
from bastion.pipeline.context import new_request_id

from .admin import admin_routes
from .approvals import client_approval_route
from .http import error_response, json_response
from .routes import model_routes


def create_app(config: BastionConfig, gateway: Gateway | None = None) -> Starlette:
    gw = gateway or Gateway(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        writer_alive = gw.writer.alive
        ok = gw.ready and writer_alive
        body = {"status": "ready" if ok else "not ready", "log_writer": writer_alive, "log_queue": gw.writer.pending}
        return json_response(body, status=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(gw.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [Route(path, fn, methods=["POST"] if path != "/v1/models" else ["GET"]) for path, fn in model_routes(gw).items()]
    routes += [Route(path.split(" ")[-1], fn, methods=["POST"] if path.startswith("POST ") else ["GET"])
               for path, fn in admin_routes(gw).items()]
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/approvals/{approval_id}", client_approval_route(gw), methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        dialect = "anthropic" if request.url.path.startswith("/v1/messages") else "openai"
        if exc.status_code == 404:
            err: BastionError = NotFound(f"no route {request.method} {request.url.path}; see docs/api.md")
        else:
            err = BastionError(f"{request.method} is not allowed on {request.url.path}", status=exc.status_code,
                               code="method_not_allowed" if exc.status_code == 405 else "http_error")
        return error_response(err, dialect, new_request_id())

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.gateway = gw
    return app
