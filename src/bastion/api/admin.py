"""The admin API: spend reports and alerts, behind a bearer token named by ``server.admin_key_env``."""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from bastion.errors import AuthenticationFailed, BastionError, InvalidRequest, NotFound
from bastion.metering.reports import cost_report, parse_by, total_usd
from bastion.pipeline import Gateway
from bastion.pipeline.context import new_request_id
from bastion.timeparse import parse_since

from .approvals import admin_approval_routes
from .http import error_response, json_response


def _authorize(gw: Gateway, request: Request) -> None:
    env = gw.config.server.admin_key_env
    if not env or not os.environ.get(env):
        raise NotFound("the admin API is off: set server.admin_key_env to the name of an environment variable "
                       "holding the admin token (and set that variable)")
    got = request.headers.get("authorization", "")
    token = got[7:] if got.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), os.environ[env].encode()):
        raise AuthenticationFailed("the admin API needs `Authorization: Bearer <admin token>` (server.admin_key_env)")


def admin_routes(gw: Gateway) -> dict[str, Callable[[Request], Awaitable[Response]]]:
    def guarded(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                _authorize(gw, request)
                return await fn(request)
            except BastionError as e:
                return error_response(e, "openai", new_request_id())
            except ValueError as e:
                return error_response(InvalidRequest(str(e)), "openai", new_request_id())
        return run

    async def costs(request: Request) -> Response:
        q = request.query_params
        by = parse_by(q.get("by"))
        since = parse_since(q["since"]) if q.get("since") else None
        until = parse_since(q["until"]) if q.get("until") else None
        filters = {k: q.get(k) for k in ("tenant", "user", "session", "deployment", "key_id") if q.get(k)}
        if q.get("model"):
            filters["alias"] = q["model"]
        rows = await asyncio.to_thread(cost_report, gw.store, by=by, filters=filters, since=since, until=until)
        return json_response({"by": by, "rows": rows, "total_usd": f"{total_usd(rows):f}",
                              "prices": gw.meter.prices.version})

    async def alerts(request: Request) -> Response:
        q = request.query_params
        since = parse_since(q["since"]) if q.get("since") else None
        rows = await asyncio.to_thread(gw.store.list_alerts, since=since, kind=q.get("kind"),
                                       limit=int(q.get("limit", "100")))
        return json_response({"alerts": rows})

    async def cache(request: Request) -> Response:
        stats = await gw.cache.stats()
        return json_response(stats)

    async def cache_purge(request: Request) -> Response:
        q = request.query_params
        n = await gw.cache.purge(tenant=q.get("tenant"), alias=q.get("model"))
        gw.metrics.cache_entries.set(len(gw.cache.store._entries))
        return json_response({"purged": n, "tenant": q.get("tenant"), "model": q.get("model")})

    return {"/admin/costs": guarded(costs), "/admin/alerts": guarded(alerts), "/admin/cache": guarded(cache),
            "POST /admin/cache/purge": guarded(cache_purge), **admin_approval_routes(gw, guarded)}
