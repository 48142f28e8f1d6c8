"""Tool calls held for approval: the client polls ``GET /v1/approvals/{id}`` with its own key (the call is
returned once a person approved it); people decide with ``/admin/approvals`` or ``bastion approvals``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bastion.errors import BastionError, InvalidRequest, NotFound
from bastion.pipeline import Gateway
from bastion.pipeline.context import new_request_id

from .http import error_response, json_response, presented_key

Handler = Callable[[Request], Awaitable[Response]]


def public_view(row: dict[str, Any]) -> dict[str, Any]:
    """What the caller sees: the tool call itself only once it is approved."""
    out = {k: row[k] for k in ("id", "status", "tool", "call_id", "reason", "request_id", "created_at",
                               "decided_at")}
    out["object"] = "bastion.approval"
    if row["status"] == "approved":
        out["tool_call"] = {"id": row["call_id"], "name": row["tool"], "arguments": row["arguments"]}
    if row.get("note"):
        out["note"] = row["note"]
    return out


def client_approval_route(gw: Gateway) -> Handler:
    async def get(request: Request) -> Response:
        try:
            key = await gw.keys.authenticate(presented_key(request))
            row = await asyncio.to_thread(gw.store.get_approval, request.path_params["approval_id"])
            if row is None or (key is not None and row["tenant"] != key.tenant):
                raise NotFound(f"no approval {request.path_params['approval_id']!r} for this key's tenant")
            return json_response(public_view(row))
        except BastionError as e:
            return error_response(e, "openai", new_request_id())
    return get


def admin_approval_routes(gw: Gateway, guarded: Callable[[Handler], Handler]) -> dict[str, Handler]:
    async def listing(request: Request) -> Response:
        q = request.query_params
        status = q.get("status", "pending")
        if status not in ("pending", "approved", "rejected", "all"):
            raise InvalidRequest("status must be pending, approved, rejected or all")
        rows = await asyncio.to_thread(gw.store.list_approvals, status=None if status == "all" else status,
                                       tenant=q.get("tenant"), limit=int(q.get("limit", "100")))
        return json_response({"approvals": rows})

    def decide(decision: str) -> Handler:
        async def run(request: Request) -> Response:
            aid = request.path_params["approval_id"]
            by = request.query_params.get("by") or "admin-api"
            note = request.query_params.get("note")
            ok = await asyncio.to_thread(gw.store.decide_approval, aid, decision, by, note)
            row = await asyncio.to_thread(gw.store.get_approval, aid)
            if row is None:
                raise NotFound(f"no approval {aid!r}")
            if not ok:
                raise BastionError(f"approval {aid!r} is already {row['status']}", status=409,
                                   code="approval_already_decided")
            gw.metrics.guard_verdicts.labels(row.get("alias") or "-", "tools", decision).inc()
            return json_response(row)
        return run

    return {"/admin/approvals": guarded(listing),
            "POST /admin/approvals/{approval_id}/approve": guarded(decide("approved")),
            "POST /admin/approvals/{approval_id}/reject": guarded(decide("rejected"))}
