"""Assemble the Starlette app: model routes, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.config.model import BastionConfig
from bastion.errors import AuthenticationFailed, BastionError, NotFound
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
        w = gw.writer
        ok = gw.ready and w.alive and w.accepting
        body = {"status": "ready" if ok else "not ready", "log_writer": w.alive, "log_queue": w.pending,
                "log_degraded": w.degraded, "log_lost": w.lost}
        return json_response(body, status=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        env = config.server.metrics_key_env
        if env:
            token = os.environ.get(env, "")
            got = request.headers.get("authorization", "")
            got = got[7:] if got.lower().startswith("bearer ") else ""
            if not token or not hmac.compare_digest(got.encode(), token.encode()):
                err = AuthenticationFailed(f"/metrics needs `Authorization: Bearer <token>`, the token held in ${env} "
                                           "(server.metrics_key_env)")
                return error_response(err, "openai", new_request_id())
        body = await asyncio.to_thread(gw.metrics.render)  # a scrape never stalls the requests being served
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

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
