"""HTTP plumbing shared by the routes: body limits, JSON parsing, key extraction, responses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from bastion.errors import BastionError, InvalidJSON, PayloadTooLarge, UnsupportedMediaType


async def read_body(request: Request, limit: int) -> bytes:
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


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise InvalidJSON("the request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidJSON(f"the request body is not valid JSON: {e}") from None


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
