"""HTTP plumbing shared by the routes: body limits, JSON parsing, key extraction, responses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from bastion.errors import (
    BastionError,
    ClientClosed,
    InvalidJSON,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)

from .limits import check_shape


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole body, within ``limit`` bytes and ``timeout_s`` seconds (a client that sends slower is a 408;
    one that hangs up while sending is a 499)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body(request, limit)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout_s:g} s (server.body_timeout_s); send it at once",
            headers={"connection": "close"},
        ) from None
    except ClientDisconnect:
        raise ClientClosed("the client closed the connection while sending the request body") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"the request body is {int(declared)} bytes; the limit is {limit} bytes (server.max_body_bytes)"
        )
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(f"send the body as JSON with 'Content-Type: application/json', not {ctype!r}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes (server.max_body_bytes)")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes, *, max_depth: int = 64, max_elements: int = 250_000) -> Any:
    """Parse a client body, within the shape limits (see ``limits.check_shape``)."""
    if not raw.strip():
        raise InvalidJSON("the request body is empty; send a JSON object")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "depth limit" in str(e) or "recursion" in str(e):
            raise InvalidJSON(f"the request body nests JSON deeper than {max_depth} levels; the limit is set "
                              "by server.max_json_depth", code="request_too_complex") from None
        raise InvalidJSON(f"the request body is not valid JSON: {e}") from None
    check_shape(value, max_depth=max_depth, max_elements=max_elements)
    return value


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return auth.strip()
    return request.headers.get("x-api-key") or request.headers.get("api-key")


def error_response(err: BastionError, dialect: str, request_id: str | None, headers: dict[str, str] | None = None) -> Response:
    body = err.to_anthropic(request_id) if dialect == "anthropic" else err.to_openai(request_id)
    h = dict(headers or {})
    h.update(err.headers)
    if request_id:
        h["x-bastion-request-id"] = request_id
        h["x-request-id" if dialect == "openai" else "request-id"] = request_id
    return Response(orjson.dumps(body), status_code=err.status, headers=h, media_type="application/json")


class SSEResponse(StreamingResponse):
    """A streaming response that always tells its producer when it is over, even if never started."""

    def __init__(self, content: Any, *, headers: dict[str, str], on_close: Callable[[], None] | None) -> None:
        headers = {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.on_close is not None:
                self.on_close()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")
